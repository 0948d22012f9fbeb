"""Plan and apply: gather facts from both nodes in parallel, compute steps per phase, run them.

`plan` and `apply` share this code path (as pyinfra's dry-run does): plan computes every
phase from one set of facts and prints the steps; apply runs a phase, re-reads facts when
anything changed, and computes the next phase from what the nodes now are. Every step checks
before it acts, so an interrupted apply converges when re-run.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hakvm.agent.layout import WEBHOOK_URL_PATH
from hakvm.deploy import cib_merge
from hakvm.deploy import phases as ph
from hakvm.deploy.guards import RunOptions
from hakvm.deploy.secrets import (
    AUTHKEY_PATH,
    DRBD_MASTER_PATH,
    BmcPassword,
    ClusterSecrets,
    masked_paths,
    read_bmc_passwords,
    resolve_secrets,
    secret_paths,
)
from hakvm.deploy.steps import Call, Run, Step, Write
from hakvm.errors import FailedError, StateError
from hakvm.remote import qnetd
from hakvm.remote.connection import NodeConnection, RemoteError
from hakvm.remote.facts import FileFact, NodeFacts, gather_facts
from hakvm.remote.pacemaker import simulate
from hakvm.remote.quorum import pem_body
from hakvm.remote.session import Session
from hakvm.render import migration
from hakvm.render.base import RenderContext, Rendered, Secrets
from hakvm.render.cib import password_file_path
from hakvm.render.drbd import resource_path
from hakvm.render.tree import render_all
from hakvm.spec.derive import derive
from hakvm.spec.models import ClusterSpec

_MINOR_RE = re.compile(rb"/dev/drbd(\d+)")


class ApplyError(FailedError):
    """A step failed; the message names node, phase and step."""


class RefusedError(StateError):
    """A phase refused what the nodes hold (guards.py): the message names node and phase."""


# Phases whose refusals (a foreign cluster, a disk in use, an LV that is not hakvm's) are
# checked on the first facts, before any phase runs: a refused apply changes nothing.
GUARDED = ("storage", "corosync")


@dataclass
class PhaseReport:
    name: str
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what it found in place (no change)


@dataclass
class RunReport:
    phases: list[PhaseReport] = field(default_factory=list)
    seconds: float = 0.0
    secrets: list[str] = field(default_factory=list)  # plan: each secret's copies, no bytes

    @property
    def changes(self) -> int:
        return sum(len(p.steps) for p in self.phases)

    def as_dict(self) -> dict[str, object]:
        return {
            "changes": self.changes,
            "seconds": round(self.seconds, 2),
            **({"secrets": self.secrets} if self.secrets else {}),
            "phases": [
                {
                    "phase": p.name,
                    "seconds": round(p.seconds, 2),
                    "steps": [s.as_dict() for s in p.steps],
                    "notes": p.notes,
                }
                for p in self.phases
            ],
        }


Progress = Callable[[str, str, Step | None, str], None]  # (phase, node, step, event)


def _quiet(phase: str, node: str, step: Step | None, event: str) -> None:
    return None


def _managed_paths(spec: ClusterSpec, rendered: Rendered, node: str) -> list[str]:
    paths = {f.path for f in rendered.get(node, [])}
    paths |= {"/etc/hosts", "/etc/corosync/corosync.conf", AUTHKEY_PATH, DRBD_MASTER_PATH}
    paths |= {password_file_path(n.name) for n in spec.nodes}
    paths |= {resource_path(vm.name) for vm in spec.vms}
    paths.add(WEBHOOK_URL_PATH)  # not rendered: apply copies it from the spec's file
    paths |= {
        migration.KEY_PATH, migration.KNOWN_HOSTS_PATH, migration.SSH_CONFIG_PATH,
        migration.AUTHORIZED_KEYS_PATH, migration.HOST_KEY_PATH,
    }  # fmt: skip
    return sorted(paths)


def existing_minors(spec: ClusterSpec, facts: Mapping[str, NodeFacts]) -> dict[str, int]:
    """Minors of DRBD resources already configured on the nodes: never renumbered."""
    found: dict[str, int] = {}
    for node_facts in facts.values():
        for vm in spec.vms:
            fact = node_facts.files.get(resource_path(vm.name))
            if fact is not None and (m := _MINOR_RE.search(fact.content)):
                found.setdefault(vm.name, int(m.group(1)))
    return found


class Deployment:
    """One spec against its two nodes: connections, facts, rendering with the secrets.

    Secret files on the nodes are compared by hash (deploy/secrets.py); only with
    `adopt_secrets` (apply) is a node's copy read, a missing one generated and the local
    state directory written."""

    def __init__(
        self,
        spec: ClusterSpec,
        spec_path: Path,
        options: RunOptions | None = None,
        *,
        adopt_secrets: bool = False,
    ) -> None:
        self.spec = spec
        # One stamp per run: where a replaced cluster's CIB is moved (guards.moved_dir).
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.options = dataclasses.replace(options or RunOptions(), stamp=stamp)
        self.session = Session(spec, spec_path)
        self.spec_dir = self.session.spec_dir
        self.conns: dict[str, NodeConnection] = {}
        self.secrets: ClusterSecrets | None = None
        self.adopt_secrets = adopt_secrets

    async def __aenter__(self) -> Deployment:
        self.conns = {c.name: c for c in await self.session.connect_all()}
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def gather(self) -> tuple[dict[str, NodeFacts], PlanEnvBuilder]:
        draft = render_all(RenderContext(self.spec, derive(self.spec), Secrets.redacted()))
        minors_guess = {d.minor: name for name, d in derive(self.spec).vms.items()}
        qdevice = self.spec.quorum_device is not None
        hashed, masked = secret_paths(self.spec), masked_paths(self.spec)
        results = await asyncio.gather(
            *(
                gather_facts(
                    conn,
                    set(_managed_paths(self.spec, draft, name)) - {*hashed, *masked},
                    minors_guess,
                    hashed,
                    masked,
                    qdevice=qdevice,
                )
                for name, conn in self.conns.items()
            )
        )
        facts = {f.name: f for f in results}
        qnetd_ca = await self.qnetd_ca() if qdevice else None
        if self.secrets is None:
            read = self._read_secret if self.adopt_secrets else None
            self.secrets = await resolve_secrets(self.spec.cluster.name, facts, read)
        derived = derive(self.spec, existing_minors(self.spec, facts))
        ctx = RenderContext(self.spec, derived, self.secrets.for_render)
        passwords = read_bmc_passwords(self.spec, self.spec_dir)
        builder = PlanEnvBuilder(
            ctx, render_all(ctx), self.secrets, self.spec_dir, passwords, self.options
        )
        builder.qnetd_ca = qnetd_ca
        return facts, builder

    async def qnetd_ca(self) -> str | None:
        """The qnetd host's CA (base64; "" when it has none yet); None when it could not be
        read: the nodes' certificates are then only compared with each other."""
        try:
            host, ca = await self.session.qnetd()
            text = await qnetd.read_ca(host, ca)
        except RemoteError:
            return None
        return pem_body(text) if text else ""

    async def _read_secret(self, node: str, path: str) -> bytes:
        """A node's copy of a secret, for apply to adopt (base64: any byte survives)."""
        result = await self.conns[node].run(["base64", "-w0", "--", path], check=True)
        return base64.b64decode(result.stdout)


@dataclass
class PlanEnvBuilder:
    ctx: RenderContext
    rendered: Rendered
    secrets: ClusterSecrets
    spec_dir: Path
    bmc_passwords: dict[str, BmcPassword]
    options: RunOptions = field(default_factory=RunOptions)
    qnetd_ca: str | None = None

    def env(self, facts: dict[str, NodeFacts], replacing: str | None = None) -> ph.PlanEnv:
        return ph.PlanEnv(
            self.ctx, self.rendered, facts, self.secrets, self.spec_dir, self.bmc_passwords,
            self.options, replacing=replacing, qnetd_ca=self.qnetd_ca,
        )  # fmt: skip


async def plan(spec: ClusterSpec, spec_path: Path, options: RunOptions | None = None) -> RunReport:
    started = time.monotonic()
    report = RunReport()
    async with Deployment(spec, spec_path, options) as dep:
        facts, builder = await dep.gather()
        report.secrets = [state.line() for state in builder.secrets.states]
        env = builder.env(facts)
        preflight(env)
        for name, phase in ph.PHASES:
            t0 = time.monotonic()
            noted = len(env.notes)
            steps = _compute(name, phase, env)
            if name == "cib" and steps:
                steps = await _with_prediction(steps, env, dep.conns)
            seconds = time.monotonic() - t0
            report.phases.append(PhaseReport(name, steps, seconds, env.notes[noted:]))
    report.seconds = time.monotonic() - started
    return report


async def _with_prediction(
    steps: list[Step], env: ph.PlanEnv, conns: Mapping[str, NodeConnection]
) -> list[Step]:
    """Attach what Pacemaker would do with the patched CIB (restarts above all)."""
    found = ph.live_cib(env)
    if found is None:
        return steps  # no cluster yet: nothing runs that could be disrupted
    node, live = found
    actions = await simulate(conns[node], cib_merge.desired_cib(live, ph.rendered_cib(env)))
    predicted = ("(crm_simulate failed: no prediction)",) if actions is None else tuple(actions)
    return [dataclasses.replace(step, predicted=predicted) for step in steps]


def _compute(name: str, phase: ph.Phase, env: ph.PlanEnv) -> list[Step]:
    try:
        return phase(env)
    except ph.PlanError as exc:
        raise ApplyError(f"{name}: {exc}") from None


def preflight(env: ph.PlanEnv) -> None:
    """Every refusal the guarded phases would make, before anything runs (exit 3)."""
    for name, phase in ph.PHASES:
        if name in GUARDED:
            try:
                phase(env)
            except ph.PlanError as exc:
                raise RefusedError(f"{name}: {exc}") from None


async def _run_action(conn: NodeConnection, session: Session, action: Run | Write | Call) -> None:
    if isinstance(action, Run):
        await conn.run(
            list(action.argv),
            stdin=action.stdin,
            env=dict(action.env),
            check=True,
            timeout=action.timeout,
        )
    elif isinstance(action, Write):
        await conn.write_file(action.path, action.content, action.mode, action.owner, action.group)
    else:
        await action.func(session)


async def _run_node_steps(
    node: str, steps: Sequence[Step], session: Session, progress: Progress
) -> None:
    conn = session.connected(node)
    for step in steps:
        progress(step.phase, node, step, "start")
        try:
            for action in step.actions:
                await _run_action(conn, session, action)
        except RemoteError as exc:
            progress(step.phase, node, step, "failed")
            raise ApplyError(f"{node}: {step.phase}: {step.title}: {exc}") from None
        progress(step.phase, node, step, "done")


async def apply(
    spec: ClusterSpec,
    spec_path: Path,
    progress: Progress = _quiet,
    stop_after: str | None = None,
    options: RunOptions | None = None,
    *,
    phases: Sequence[tuple[str, ph.Phase]] = ph.PHASES,
    keep: Callable[[Step], bool] | None = None,
    replacing: str | None = None,
) -> RunReport:
    """Run every phase; both nodes in parallel within a phase. `hakvm replace-node` gives
    its own phase order, the node being replaced, and which steps to run (`keep`)."""
    started = time.monotonic()
    report = RunReport()
    async with Deployment(spec, spec_path, options, adopt_secrets=True) as dep:
        facts, builder = await dep.gather()
        preflight(builder.env(facts))
        dirty = False
        for name, phase in phases:
            t0 = time.monotonic()
            if dirty:
                facts, builder = await dep.gather()
                dirty = False
            env = builder.env(facts, replacing)
            steps = [s for s in _compute(name, phase, env) if keep is None or keep(s)]
            progress(name, "", None, f"{len(steps)} step(s)")
            by_node: dict[str, list[Step]] = {}
            for step in steps:
                by_node.setdefault(step.node, []).append(step)
            results = await asyncio.gather(
                *(_run_node_steps(n, s, dep.session, progress) for n, s in by_node.items()),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            report.phases.append(PhaseReport(name, steps, time.monotonic() - t0, env.notes))
            if steps:
                progress(name, "", None, f"done in {time.monotonic() - t0:.1f}s")
            if errors:
                first = errors[0]
                if isinstance(first, ApplyError):
                    raise first
                raise ApplyError(f"{name}: {first}") from first
            # A phase that only wrote files changed nothing else we read: record the writes
            # instead of a full re-gather (each gather costs seconds on a slow node).
            if all(isinstance(a, Write) for step in steps for a in step.actions):
                for step in steps:
                    for action in step.actions:
                        assert isinstance(action, Write)
                        facts[step.node].files[action.path] = FileFact(
                            action.content, action.mode
                        )
            else:
                dirty = True
            if stop_after == name:
                break
    report.seconds = time.monotonic() - started
    return report
