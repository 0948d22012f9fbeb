"""Hostile spec values never become commands in the pcs and crmsh exports.

Each hostile BMC user or address goes the way a user's spec goes: a YAML file, `validate`,
then `export pcs|crmsh`. Either validate refuses it, naming the field (C0/C1 controls other
than tab and line breaks stop the loader at the first such field), or the script passes
`bash -n` and, run with only stub `pcs` and `crm` on PATH (bash scripts that record their
argv and standard input), makes exactly the calls it makes for a plain value: the same
argv, and the same crmsh words (split as crmsh splits its input: continuation lines joined,
then shlex), the hostile value arriving as one intact `ip=`/`username=` word. Nothing else
runs: no output, no new file, exit 0.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hakvm.render.base import RenderContext, Secrets
from hakvm.render.export import crmsh_script, pcs_script
from hakvm.spec.derive import derive
from hakvm.spec.models import ClusterSpec
from hakvm.spec.validate import validate_file
from tests.render.examples import example_data

STUB = """#!/bin/bash
# Records one call: its name, argc, argv and (crm) standard input, NUL-separated.
printf '%s\\0' CALL "${0##*/}" "$#" "$@" >> "$STUB_LOG"
if [ "${0##*/}" = crm ]; then
    IFS= read -r -d '' input || true
    printf '%s\\0' "$input" >> "$STUB_LOG"
fi
"""

PLAIN = {"user": "hakvm", "address": "10.0.2.2"}  # what examples/lab.yaml has on both nodes

PAYLOADS = [
    "fence\nEOF\necho pwned > pwned\n",
    "x\nEOF\n$(echo pwned > pwned)",
    "10.0.2.2 -o lanplus",
    "10.0.2.2\nEOF\necho pwned > pwned",
    "a'b",
    'a"b',
    "a\\",
    "$(echo pwned > pwned)",
    "`echo pwned > pwned`",
    "a;echo pwned > pwned",
    "-P",
    "fe\u202ence",
    "bmc.example.net",
    "fe80::1",
    "a" * 17,
]
HOSTILE = st.one_of(
    st.sampled_from(PAYLOADS),
    st.text(
        alphabet=st.one_of(
            st.sampled_from("aZ09.-_@+:/ \t\n\r'\"\\$`;&|<>(){}*?!#~=,%EOF\x00\x07\x1b\u2028"),
            st.characters(codec="utf-8"),
        ),
        min_size=1,
        max_size=20,
    ),
)


def _calls(log: bytes) -> list[tuple[str, ...]]:
    """The recorded calls; crm's standard input as crmsh reads it (one word list)."""
    fields = log.decode().split("\0")[:-1]
    calls: list[tuple[str, ...]] = []
    i = 0
    while i < len(fields):
        assert fields[i] == "CALL", fields
        name, argc = fields[i + 1], int(fields[i + 2])
        argv = tuple(fields[i + 3 : i + 3 + argc])
        i += 3 + argc
        if name == "crm":
            argv += tuple(w for line in _crmsh_lines(fields[i]) for w in (*shlex.split(line), ";"))
            i += 1
        calls.append((name, *argv))
    return calls


def _crmsh_lines(text: str) -> list[str]:
    """crmsh's utils.lines2cli: strip, join lines ending in a backslash, drop empty ones."""
    out, cum = [], []
    for raw in text.split("\n"):
        line = raw.strip()
        cum.append(line.rstrip("\\"))
        if not line.endswith("\\"):
            out.append("".join(cum).strip())
            cum = []
    return [line for line in out if line and not line.startswith("#")]


def _run(script: str, work: Path) -> list[tuple[str, ...]]:
    stubs = work / "bin"
    stubs.mkdir(exist_ok=True)
    for tool in ("pcs", "crm"):
        (stubs / tool).write_text(STUB)
        (stubs / tool).chmod(0o755)
    path = work / "export.sh"
    path.write_text(script)
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
    log = work / "calls"
    log.write_bytes(b"")
    before = sorted(p.name for p in work.iterdir())
    env = {"PATH": str(stubs), "STUB_LOG": str(log)}
    res = subprocess.run(
        ["/bin/bash", str(path), "cib.xml"],
        capture_output=True,
        cwd=work,
        env=env,
        check=False,
        timeout=60,
    )
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")
    assert sorted(p.name for p in work.iterdir()) == before  # no file appeared
    return _calls(log.read_bytes())


def _export(data: dict[str, Any], work: Path) -> RenderContext | list[str]:
    """validate as `hakvm validate` does (a YAML file beside the example's secrets)."""
    spec = work / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, allow_unicode=True))
    report = validate_file(spec)
    if not report.ok or report.spec is None or report.derived is None:
        return [p.format("spec.yaml") for p in report.errors]
    return RenderContext(report.spec, report.derived, Secrets.redacted())


def _with(field: str, value: str) -> dict[str, Any]:
    data = example_data("lab")
    for node in data["nodes"]:
        node["bmc"][field] = value
    return data


def _baseline(field: str, value: str, work: Path) -> dict[str, list[tuple[str, ...]]]:
    """The calls for the plain value, with its `ip=`/`username=` word made `value`."""
    ctx = _export(_with(field, PLAIN[field]), work)
    assert isinstance(ctx, RenderContext)
    key = {"user": "username", "address": "ip"}[field]
    plain, hostile = f"{key}={PLAIN[field]}", f"{key}={value}"
    out = {}
    for tool, script in (("pcs", pcs_script(ctx)), ("crm", crmsh_script(ctx))):
        calls = _run(script, work)
        assert sum(w == plain for c in calls for w in c) == 2  # one fence device per node
        out[tool] = [tuple(hostile if w == plain else w for w in c) for c in calls]
    return out


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(field=st.sampled_from(["user", "address"]), value=HOSTILE)
@example(field="user", value=PAYLOADS[0])
@example(field="address", value=PAYLOADS[2])
def test_hostile_bmc_values_are_refused_or_passed_intact(field: str, value: str) -> None:
    with tempfile.TemporaryDirectory(prefix="hakvm-export-") as tmp:
        work = Path(tmp)
        ctx = _export(_with(field, value), work)
        if isinstance(ctx, list) and len(ctx) == 1 and "a control character" in ctx[0]:
            assert f"nodes[0].bmc.{field}: " in ctx[0], ctx  # the loader stops at the first
            return
        if isinstance(ctx, list):  # refused: one line per node's field, naming it
            assert any(f"nodes[0].bmc.{field}:" in line for line in ctx), ctx
            assert any(f"nodes[1].bmc.{field}:" in line for line in ctx), ctx
            return
        expected = _baseline(field, value, work)
        assert _run(pcs_script(ctx), work) == expected["pcs"]
        assert _run(crmsh_script(ctx), work) == expected["crm"]


def _bypassing_validation(field: str, value: str) -> RenderContext:
    """The lab spec with `value` put in after validation: the exporters' own quoting."""
    spec = ClusterSpec.model_validate(example_data("lab"))
    nodes = []
    for node in spec.nodes:
        assert node.bmc is not None
        nodes.append(node.model_copy(update={"bmc": node.bmc.model_copy(update={field: value})}))
    spec = spec.model_copy(update={"nodes": nodes})
    return RenderContext(spec, derive(spec), Secrets.redacted())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(["user", "address"]), value=HOSTILE)
@example(field="user", value="a'b\"c\\ $(echo pwned > pwned) `x` ;&|")
@example(field="user", value="fence\nEOF\necho pwned > pwned\n")
@example(field="address", value="ends in a backslash\\")
@example(field="user", value="admin\n")  # a safe word and one final newline (hypothesis)
def test_the_exports_quote_whatever_reaches_them(field: str, value: str) -> None:
    ctx = _bypassing_validation(field, value)
    if not value.isprintable():
        for export in (pcs_script, crmsh_script):
            with pytest.raises(ValueError, match="unprintable"):
                export(ctx)
        return
    with tempfile.TemporaryDirectory(prefix="hakvm-export-") as tmp:
        work = Path(tmp)
        expected = _baseline(field, value, work)
        assert _run(pcs_script(ctx), work) == expected["pcs"]
        assert _run(crmsh_script(ctx), work) == expected["crm"]
