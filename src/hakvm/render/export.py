"""The CIB as pcs and crmsh command scripts, for admins who manage clusters with those tools.

Both are generated from the same model as cib.xml (`hakvm.render.cib.model`), so they create
exactly the same properties, defaults, fence devices, resources and constraints, with the same
ids. Neither holds a password (fence devices read theirs through `password_script`) nor
authenticates hosts (`pcs host auth` is the admin's business). Each script takes an optional
CIB file argument: with it, it edits that file offline and pushes nothing (`pcs -f`,
crmsh via CIB_file); without it, it changes the live cluster in one step (pcs: one
`cib-push` of an edited copy; crmsh: one `commit`).
"""

from __future__ import annotations

import re
import shlex

from hakvm.render.base import CLUSTER, RenderContext, Rendered, RenderedFile
from hakvm.render.cib import (
    ALERT_TIMEOUT,
    ClusterModel,
    Colocation,
    Constraint,
    Expression,
    Op,
    Order,
    Pairs,
    Primitive,
    Promotable,
    RuleLocation,
    model,
)

RENDERER = "export"
PCS_PATH = "pcs.sh"
CRMSH_PATH = "crmsh.sh"

_SAFE = re.compile(r"[A-Za-z0-9_.:/@%+=,-]*")  # whole values only: fullmatch


def _header(ctx: RenderContext, tool: str) -> list[str]:
    return [
        "#!/bin/bash",
        f"# Managed by hakvm: the cluster '{ctx.spec.cluster.name}' configuration as {tool}",
        "# commands (the same as hakvm's cib.xml). Usage: $0 [CIB_FILE]: with a file, edit it",
        "# offline; without, change the live cluster. Creates no node entries, authenticates",
        "# no host and holds no password (fence devices use password_script).",
        "set -euo pipefail",
        "",
    ]


# --- pcs ------------------------------------------------------------------------------------


def _printable(value: str) -> str:
    """Spec validation refuses control characters; a value that has one anyway (a line
    break ends crmsh's here-document) is never written into a script."""
    if not value.isprintable():
        raise ValueError(f"refusing to export the unprintable value {value!r}")
    return value


def _kv(pairs: Pairs) -> str:
    return " ".join(shlex.quote(f"{k}={_printable(v)}") for k, v in pairs)


def _pcs_ops(ops: tuple[Op, ...]) -> str:
    parts = []
    for op in ops:
        pairs: list[tuple[str, str]] = [("interval", op.interval), ("timeout", op.timeout)]
        if op.role:
            pairs.append(("role", op.role))
        parts.append(f"{op.name} {_kv(tuple(pairs))}")
    return "op " + " ".join(parts) if parts else ""


def _pcs_primitive(prim: Primitive) -> str:
    if prim.cls == "stonith":
        cmd = f'pcs -f "$CIB" stonith create {prim.id} {prim.type}'
    else:
        cmd = f'pcs -f "$CIB" resource create {prim.id} {prim.agent} --no-default-ops'
    for part in (
        _kv(prim.params),
        f"meta {_kv(prim.meta)}" if prim.meta else "",
        _pcs_ops(prim.ops),
    ):
        if part:
            cmd += f" \\\n    {part}"
    return cmd


def _rule_words(expressions: tuple[Expression, ...], op: str, typed: str) -> str:
    """A rule's expressions in the shared pcs/crmsh grammar ('defined X or X lt 10');
    `typed` spells a typed comparison: '{attr} {op} {type} {value}' (pcs) or
    '{attr} {type}:{op} {value}' (crmsh)."""
    words = []
    for e in expressions:
        if e.value is None:
            words.append(f"{e.operation} {e.attribute}")
        else:
            kind = e.type or "string"
            words.append(typed.format(attr=e.attribute, op=e.operation, type=kind, value=e.value))
    return f" {op} ".join(words)


def _pcs_constraint(con: Constraint) -> str:
    if isinstance(con, Colocation):
        role = f"{con.with_role} " if con.with_role else ""
        return (
            f'pcs -f "$CIB" constraint colocation add {con.rsc} with {role}{con.with_rsc} '
            f"{con.score} id={con.id}"
        )
    if isinstance(con, Order):
        return (
            f'pcs -f "$CIB" constraint order {con.first_action} {con.first} then '
            f"{con.then_action} {con.then} kind={con.kind} id={con.id}"
        )
    if isinstance(con, RuleLocation):
        rule = _rule_words(con.expressions, con.boolean_op, "{attr} {op} {type} {value}")
        return (
            f'pcs -f "$CIB" constraint location {con.rsc} rule constraint-id={con.id} '
            f"score={con.score} {rule}"
        )
    # '--' so pcs does not read a negative score as an option.
    return f'pcs -f "$CIB" constraint location add {con.id} {con.rsc} {con.node} -- {con.score}'


def pcs_script(ctx: RenderContext) -> str:
    m: ClusterModel = model(ctx)
    lines = _header(ctx, "pcs (0.10/0.11)")
    lines += [
        'if [ $# -ge 1 ]; then CIB="$1"; PUSH=0',
        'else CIB=$(mktemp); trap \'rm -f "$CIB"\' EXIT; pcs cluster cib > "$CIB"; PUSH=1',
        "fi",
        "",
        "# Cluster properties and defaults",
        f'pcs -f "$CIB" property set {_kv(m.properties)}',
        f'pcs -f "$CIB" resource defaults update {_kv(m.rsc_defaults)}',
        f'pcs -f "$CIB" resource op defaults update {_kv(m.op_defaults)}',
        "",
        "# Fence devices: one per node, never run by the node it fences",
    ]
    lines += [_pcs_primitive(p) for p in m.fence_devices]
    lines.append("")
    lines.append("# Resources")
    for res in m.resources:
        if isinstance(res, Promotable):
            lines.append(_pcs_primitive(res.primitive))
            meta = tuple((k, v) for k, v in res.meta if k != "promotable")
            lines.append(
                f'pcs -f "$CIB" resource promotable {res.primitive.id} {res.id} {_kv(meta)}'
            )
        else:
            lines.append(_pcs_primitive(res))
    lines.append("")
    lines.append("# Constraints")
    lines += [_pcs_constraint(c) for c in m.constraints]
    if m.alerts:
        lines += ["", "# Alerts: hakvm's agent records every cluster event on each node"]
    for alert in m.alerts:
        lines.append(
            f'pcs -f "$CIB" alert create id={alert.id} path={shlex.quote(alert.path)}'
            f" meta timeout={ALERT_TIMEOUT}"
        )
        lines += [
            f'pcs -f "$CIB" alert recipient add {alert.id} id={rid} value={shlex.quote(value)}'
            for rid, value in alert.recipients
        ]
    lines += [
        "",
        'if [ "$PUSH" = 1 ]; then pcs cluster cib-push "$CIB" --config; fi',
        "",
    ]
    return "\n".join(lines)


# --- crmsh ----------------------------------------------------------------------------------


def _crm_value(value: str) -> str:
    """crmsh splits each configure line with shlex (POSIX): a shell-quoted word is read back
    as exactly `value`, whatever quotes, backslashes, spaces or `$` it holds."""
    # fullmatch: `^...$` with match() also took "admin\n" (`$` matches before a final
    # newline), which then broke the line unquoted (hypothesis found it, 2026-12-02).
    return value if _SAFE.fullmatch(value) else shlex.quote(_printable(value))


def _crm_kv(pairs: Pairs) -> str:
    return " ".join(f"{k}={_crm_value(v)}" for k, v in pairs)


def _crm_score(score: str) -> str:
    return {"INFINITY": "inf", "-INFINITY": "-inf"}.get(score, score)


def _crm_primitive(prim: Primitive) -> str:
    parts = [f"primitive {prim.id} {prim.agent}"]
    if prim.params:
        parts.append(f"params {_crm_kv(prim.params)}")
    if prim.meta:
        parts.append(f"meta {_crm_kv(prim.meta)}")
    for op in prim.ops:
        pairs: list[tuple[str, str]] = [("interval", op.interval), ("timeout", op.timeout)]
        if op.role:
            pairs.append(("role", op.role))
        parts.append(f"op {op.name} {_crm_kv(tuple(pairs))}")
    return " \\\n    ".join(parts)


def _crm_constraint(con: Constraint) -> str:
    if isinstance(con, Colocation):
        role = f":{con.with_role}" if con.with_role else ""
        return f"colocation {con.id} {_crm_score(con.score)}: {con.rsc} {con.with_rsc}{role}"
    if isinstance(con, Order):
        return (
            f"order {con.id} {con.kind}: {con.first}:{con.first_action} "
            f"{con.then}:{con.then_action}"
        )
    if isinstance(con, RuleLocation):
        rule = _rule_words(con.expressions, con.boolean_op, "{attr} {type}:{op} {value}")
        return f"location {con.id} {con.rsc} rule {_crm_score(con.score)}: {rule}"
    return f"location {con.id} {con.rsc} {_crm_score(con.score)}: {con.node}"


def crmsh_script(ctx: RenderContext) -> str:
    m = model(ctx)
    body = [
        f"property cib-bootstrap-options: {_crm_kv(m.properties)}",
        f"rsc_defaults rsc-options: {_crm_kv(m.rsc_defaults)}",
        f"op_defaults op-options: {_crm_kv(m.op_defaults)}",
    ]
    body += [_crm_primitive(p) for p in m.fence_devices]
    for res in m.resources:
        if isinstance(res, Promotable):
            body.append(_crm_primitive(res.primitive))
            body.append(f"clone {res.id} {res.primitive.id} \\\n    meta {_crm_kv(res.meta)}")
        else:
            body.append(_crm_primitive(res))
    body += [_crm_constraint(c) for c in m.constraints]
    for alert in m.alerts:
        recipients = " ".join(f"to {_crm_value(value)}" for _, value in alert.recipients)
        body.append(
            f"alert {alert.id} {_crm_value(alert.path)} meta timeout={ALERT_TIMEOUT} {recipients}"
        )
    lines = _header(ctx, "crmsh (4.x)")
    lines += [
        "WAIT=(-w)  # live: wait for the cluster to finish the transition",
        'if [ $# -ge 1 ]; then export CIB_file="$1"; WAIT=(); fi',
        "# One transaction: nothing reaches the cluster before 'commit'.",
        "crm \"${WAIT[@]}\" configure <<'EOF'",
        *body,
        "commit",
        "EOF",
        "",
    ]
    return "\n".join(lines)


def render(ctx: RenderContext) -> Rendered:
    return {
        CLUSTER: [
            RenderedFile(PCS_PATH, pcs_script(ctx), mode=0o755, renderer=RENDERER),
            RenderedFile(CRMSH_PATH, crmsh_script(ctx), mode=0o755, renderer=RENDERER),
        ]
    }
