"""`hakvm replace-node SPEC NODE`: a node reinstalled from scratch (same name, same addresses)
gets its configuration back and a full copy of every VM's disk from the survivor, while the
VMs keep running on the survivor, untouched.

In order, each step only once the one before held:

1. refusals, read-only (`refusals`): the survivor runs the cluster with quorum and every VM,
   its copy of every disk is UpToDate and waiting for its peer; the node is not in the
   cluster (nor UNCLEAN: the survivor fenced the old one) and holds nothing of it: no
   corosync configuration, no DRBD, an empty disk for the pool (`new_node_disk_problem`);
   and the spec is what the survivor runs (the survivor would get no step but the new
   node's host key for live migration). One line names what is wrong: exit 3.
2. the node's configuration: apply's phases in REPLACE_ORDER for that node only, adopting
   the cluster's secrets from the survivor (deploy/secrets.py). Its DRBD copies are created
   fresh and join as SyncTarget with the resync paused, and the direction is checked before
   any data moves (deploy/actions.join_as_sync_target); only then does its cluster stack
   start. Corosync's wait_for_all keeps the new node from acting (or fencing anyone) until
   it has seen the survivor; the survivor fenced the old node before the VMs moved, so the
   one that joins is not fenced again.
3. in the cluster: its failcounts and fence history cleared, the resync resumed and watched
   (percent and ETA from /proc/drbd), DRBD's fencing constraints lifted if its handler could
   not, `hakvm status` healthy, and the VMs' operation history unchanged on the survivor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakvm.deploy import actions, engine, guards
from hakvm.deploy import phases as ph
from hakvm.deploy.steps import Call, Run, Step, Write
from hakvm.errors import FailedError, StateError
from hakvm.ops.status import assess, collect
from hakvm.remote import drbd, pacemaker
from hakvm.remote.connection import Remote
from hakvm.remote.facts import NodeFacts
from hakvm.remote.pacemaker import ClusterState, parse_crm_mon
from hakvm.remote.session import Session
from hakvm.render import agents, migration
from hakvm.render.base import MANAGED_HEADER
from hakvm.render.cib import drbd_clone_id, fs_id
from hakvm.spec.models import ClusterSpec, DiskMode, Node, OsFamily

Say = Callable[[str], None]
Sleep = Callable[[float], Awaitable[None]]
Healthy = Callable[[], Awaitable[tuple[bool, list[str]]]]
JOINED = ("SyncTarget", "PausedSyncT", "Connected")
SERVING = ("SyncSource", "PausedSyncS", "Connected")
POLL_S = 5.0
SAY_EVERY_S = 15.0
IDLE_WAIT_S = 600.0  # crm_resource --wait: the new node's probes, before the resync
# The new node gets everything its resources need (domain XML, libvirtd, the fence devices'
# passwords) before its Pacemaker starts and probes them, and joins the survivor's DRBD
# before its cluster stack starts; with a quorum device, a copy of the survivor's qdevice
# certificates, and its corosync-qdevice voting before Pacemaker starts. The CIB and the
# VMs are the survivor's: not touched.
# monitoring last: without it the new node had no alert agent (Pacemaker logged "Could not
# send alert: Not installed" on it) and no metrics until the next apply (lab, 2026-12-02).
REPLACE_ORDER = (
    "packages", "network", "hosts", "firewall", "libvirt", "fencing", "storage",
    "replication", "qdevice", "corosync", "quorum", "pacemaker", "monitoring",
)  # fmt: skip
REPLACE_PHASES: tuple[tuple[str, ph.Phase], ...] = tuple(
    (name, dict(ph.PHASES)[name]) for name in REPLACE_ORDER
)


class ReplaceRefused(StateError):
    """The cluster or the node is not in a state where a replacement is safe (exit 3)."""


class ReplaceFailed(FailedError):
    """A step of the replacement failed (exit 1); the survivor's data is untouched."""


@dataclass
class ReplaceReport:
    node: str
    survivor: str
    host_key: str = ""
    planned: list[Step] = field(default_factory=list)
    applied: engine.RunReport | None = None
    timeline: list[tuple[float, str]] = field(default_factory=list)
    resync_s: dict[str, float] = field(default_factory=dict)
    untouched: bool | None = None
    problems: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def mark(self, text: str, now: float | None = None) -> None:
        at = (time.monotonic() if now is None else now) - self.started
        self.timeline.append((round(at, 1), text))

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "survivor": self.survivor,
            "host_key": self.host_key,
            "planned": [s.as_dict() for s in self.planned],
            "timeline": [{"t": t, "event": e} for t, e in self.timeline],
            "resync_s": self.resync_s,
            "vms_untouched": self.untouched,
            "problems": self.problems,
        }


# --- 1. refusals (pure) ------------------------------------------------------------------------


def new_node_disk_problem(facts: NodeFacts, node: Node) -> str | None:
    """Why the new node's storage is not empty (None when it is): an existing volume group
    holding volumes, or apply's own disk guard refusing `storage.create_from`."""
    st = node.storage
    if st.volume_group in facts.volume_groups:
        held = sorted(lv for vg, lv in facts.logical_volumes if vg == st.volume_group
                      and lv != st.thin_pool)  # fmt: skip
        if held:
            return f"volume group {st.volume_group} already holds {', '.join(held)}"
        return None
    if st.create_from is None:
        return f"volume group {st.volume_group} does not exist and storage.create_from is unset"
    try:
        guards.wipe_target(node, facts)
    except guards.PlanError as exc:  # the new node's disk must be empty: no expect_signature
        return str(exc).removeprefix(f"{node.name}: ").split(": refusing to wipe it")[0]
    return None


def joined(spec: ClusterSpec, new: NodeFacts, survivor: NodeFacts) -> bool:
    """A replacement in progress: every VM's copy on the new node already joined the
    survivor's (an interrupted replace-node, run again)."""
    def ok(vm: str) -> bool:
        n, s = new.drbd.get(vm), survivor.drbd.get(vm)
        return (
            n is not None and s is not None and n.connection in JOINED
            and n.disk in ("Inconsistent", "UpToDate")
            and s.connection in SERVING and s.disk == "UpToDate"
        )  # fmt: skip

    return bool(spec.vms) and all(ok(vm.name) for vm in spec.vms)


def _survivor_problems(
    spec: ClusterSpec, node: str, survivor: str, facts: NodeFacts, resuming: bool
) -> list[str]:
    try:
        state: ClusterState | None = parse_crm_mon(facts.crm_mon) if facts.crm_mon else None
    except ValueError:
        state = None
    if state is None:
        return [f"{survivor}: Pacemaker does not answer there; the survivor must run the cluster"]
    out = []
    if not state.quorate:
        out.append(f"{survivor} has no quorum")
    seen = state.nodes.get(node)
    if seen is not None and seen.unclean:
        out.append(
            f"{node} is UNCLEAN: {survivor} has not fenced it yet; wait for the fencing to "
            f"succeed, or once it is surely off: stonith_admin --confirm {node}"
        )
    elif seen is not None and seen.online and not resuming:
        out.append(
            f"{node} is online in the cluster: replace-node is for a node reinstalled from "
            "scratch (hakvm apply converges one that was not)"
        )
    for vm in spec.vms:
        where = state.resources[vm.name].running_on if vm.name in state.resources else []
        if vm.autostart and where != [survivor]:
            out.append(
                f"{vm.name} is not running on {survivor} (running on: "
                f"{', '.join(where) or 'nowhere'}): every VM must run on the survivor"
            )
        res = facts.drbd.get(vm.name)
        if res is None:
            out.append(f"{survivor}: DRBD {vm.name} is not up there")
        elif res.disk != "UpToDate":
            out.append(f"{survivor}: DRBD {vm.name} is {res.disk}: no whole copy to sync from")
        elif res.connection == "StandAlone":
            out.append(
                f"{survivor}: DRBD {vm.name} is StandAlone: let it wait for its peer first "
                f"(drbdadm connect {vm.name})"
            )
        elif not resuming and res.connection != "WFConnection":
            out.append(f"{survivor}: DRBD {vm.name} is {res.connection}: its peer is still there")
    return out


def _new_node_problems(spec: ClusterSpec, node: str, facts: NodeFacts) -> list[str]:
    out = []
    wanted = "debian" if spec.cluster.os is OsFamily.DEBIAN12 else None
    if wanted and facts.os_id != wanted:
        out.append(f"{node} runs {facts.os_id or 'an unknown OS'}, the spec says {wanted}")
    conf = facts.files.get("/etc/corosync/corosync.conf")
    if conf is not None and conf.content.startswith(MANAGED_HEADER.encode()):
        out.append(
            f"{node} still holds the cluster's corosync configuration: it was not reinstalled "
            "(hakvm apply converges a node that was not)"
        )
    running = [s for s in ("corosync", "pacemaker") if facts.services_active.get(s)]
    if running:
        out.append(f"{node} runs {' and '.join(running)} already: not a fresh node")
    if facts.drbd:
        out.append(f"{node} has DRBD resources up ({', '.join(sorted(facts.drbd))})")
    disk = new_node_disk_problem(facts, spec.node(node))
    if disk:
        out.append(f"{node}: {disk}: the new node's disk must be empty")
    return out


def refusals(spec: ClusterSpec, node: str, facts: Mapping[str, NodeFacts]) -> list[str]:
    """Everything that makes replacing `node` unsafe now ([] when it may go ahead)."""
    if spec.cluster.os is not OsFamily.DEBIAN12:
        # The join and the resync are read from DRBD 8.4's /proc/drbd (remote/drbd.resource).
        return ["replace-node supports Debian 12 (DRBD 8.4) only, for now"]
    survivor = next(n.name for n in spec.nodes if n.name != node)
    resuming = joined(spec, facts[node], facts[survivor])
    out = _survivor_problems(spec, node, survivor, facts[survivor], resuming)
    if not resuming:
        out += _new_node_problems(spec, node, facts[node])
    return out


# What replace-node may change on the survivor, by phase: the new host key in its
# live-migration known_hosts, and the carried resource-agents fix of a survivor deployed
# before it (render/agents.py: diverted and written, no restart).
SURVIVOR_PATHS = {"libvirt": migration.KNOWN_HOSTS_PATH, "pacemaker": agents.LIBRARY}


def keep(step: Step, node: str) -> bool:
    """The steps replace-node runs: the new node's, and on the survivor only those whose
    every action is on its phase's SURVIVOR_PATHS file."""
    if step.node == node:
        return True
    allowed = SURVIVOR_PATHS.get(step.phase)
    return allowed is not None and all(_file_of(a) == allowed for a in step.actions)


def _file_of(action: object) -> str | None:
    """The one file a write or the diversion script acts on (None: anything else)."""
    if isinstance(action, Write):
        return action.path
    if isinstance(action, Run) and action.argv[:3] == ("sh", "-c", agents.DIVERT_SCRIPT):
        return action.argv[-1]
    return None


def drift(steps: Sequence[Step], node: str) -> list[str]:
    """Planned steps replace-node would not run, which mean the spec is not what the cluster
    runs: a CIB change, a VM to start, anything on the survivor."""
    out = []
    for step in steps:
        wait = step.phase == "pacemaker" and all(isinstance(a, Call) for a in step.actions)
        if step.phase in ("cib", "vms") or not (keep(step, node) or wait):
            out.append(f"{step.node}: {step.phase}: {step.title}")
    return out


def plan(env: ph.PlanEnv, node: str) -> tuple[list[Step], list[str]]:
    """(the steps replace-node runs, in its order; what stops it) from one set of facts."""
    steps: list[Step] = []
    problems: list[str] = []
    for name, phase in ph.PHASES:
        try:
            steps += phase(env)
        except ph.PlanError as exc:
            problems.append(f"{name}: {exc}")
    survivor = next(n.name for n in env.nodes if n.name != node)
    problems += [
        f"the spec is not what {survivor} runs ({d}): use the spec the cluster was deployed "
        "with (replace-node changes nothing but the new node)"
        for d in drift(steps, node)
    ]
    order = {name: i for i, name in enumerate(REPLACE_ORDER)}
    mine = [s for s in steps if s.phase in order and keep(s, node)]
    return sorted(mine, key=lambda s: order[s.phase]), problems


# --- 3. in the cluster -------------------------------------------------------------------------


def _eta(seconds: int | None) -> str:
    if seconds is None:
        return "ETA unknown"
    return f"ETA {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


async def watch_resync(
    vms: list[str],
    report: ReplaceReport,
    survivor: Remote,
    new: Remote,
    say: Say,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    timeout: float = 86400.0,
) -> None:
    """Until each of `vms`' copies is UpToDate on both nodes, saying how far each is (and
    its ETA, DRBD's own). The survivor's copy must stay UpToDate throughout: if it does not,
    the new node disconnects and this raises."""
    pending = list(vms)
    started, said = clock(), -SAY_EVERY_S
    while pending:
        line = []
        for vm in list(pending):
            mine, theirs = await drbd.resource(new, vm), await drbd.resource(survivor, vm)
            if theirs is None or (
                theirs.disk != "UpToDate" or theirs.connection in actions.SYNC_TARGET
            ):
                await new.run(["drbdadm", "disconnect", vm], timeout=60)
                raise ReplaceFailed(
                    f"DRBD {vm}: the survivor's copy is {theirs.disk if theirs else 'gone'}"
                    f" ({theirs.connection if theirs else '-'}): {new.name} disconnected"
                )
            if mine is None or mine.connection in ("StandAlone", "WFConnection"):
                raise ReplaceFailed(
                    f"DRBD {vm}: {new.name} lost its peer during the resync "
                    f"({mine.connection if mine else 'down'}); run replace-node again"
                )
            if mine.disk == "UpToDate" and mine.peer_disk == "UpToDate":
                pending.remove(vm)
                report.resync_s[vm] = round(clock() - started, 1)
                report.mark(f"{vm}: resync done ({report.resync_s[vm]}s)")
            else:
                line.append(f"{vm} {mine.sync_percent or 0:.1f}% ({_eta(mine.sync_eta_s)})")
        if line and clock() - said >= SAY_EVERY_S:
            say("resync from " + f"{survivor.name}: " + ", ".join(line))
            said = clock()
        if pending and clock() - started > timeout:
            raise ReplaceFailed(f"resync not done after {timeout:.0f}s: {', '.join(pending)}")
        if pending:
            await sleep(POLL_S)


def watched(spec: ClusterSpec) -> list[str]:
    """The resources whose operation history must not change: each VM (and its filesystem)."""
    out = [vm.name for vm in spec.vms]
    out += [fs_id(vm.name) for vm in spec.vms if vm.disk.mode is DiskMode.QCOW2_ON_XFS]
    return out


async def finish(  # noqa: PLR0917 - the replacement's state, passed on whole
    spec: ClusterSpec,
    report: ReplaceReport,
    survivor: Remote,
    new: Remote,
    say: Say,
    before: dict[tuple[str, str], str],
    healthy: Healthy,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    healthy_timeout: float = 900.0,
) -> None:
    """Step 3: the configured node in the cluster, its copies resynced, the VMs' operation
    history compared, the cluster healthy."""
    names = [n.name for n in spec.nodes]
    await actions.wait_cluster(survivor, names, timeout=600, sleep=sleep, clock=clock)
    report.mark(f"{new.name} online in the cluster", clock())
    await pacemaker.cleanup(survivor, on=new.name)
    await pacemaker.clear_fence_history(survivor, new.name)
    # The new node's probes first (a dozen agent runs): the resync's I/O waits for them.
    if await pacemaker.wait_idle(survivor, IDLE_WAIT_S):
        report.mark("cluster idle (the new node probed)", clock())
    else:
        report.mark(f"cluster not idle after {IDLE_WAIT_S:.0f}s: resync resumed anyway", clock())
    # One VM's resync at a time: each VM is redundant again as soon as its own copy is
    # whole, and two resyncs never fight over the same disks. Side by side on the lab
    # (2026-12-02, drill node-replacement) they starved both nodes' Pacemaker: pacemakerd
    # killed its own unresponsive CIB manager on the survivor, which was then fenced while
    # the new node was still Inconsistent.
    for i, vm in enumerate(spec.vms):
        await new.run(["drbdadm", "resume-sync", vm.name], timeout=60)
        report.mark(f"{vm.name}: resync from {survivor.name} resumed", clock())
        try:
            await watch_resync([vm.name], report, survivor, new, say, sleep=sleep, clock=clock)
        except FailedError as exc:  # a RemoteError or ReplaceFailed: the ones after stay paused
            paused = ", ".join(v.name for v in spec.vms[i + 1 :])
            if not paused:
                raise
            raise ReplaceFailed(
                f"{exc}; still paused on {new.name}: {paused} (replace-node again resumes them)"
            ) from None
    clones = [drbd_clone_id(vm.name) for vm in spec.vms]
    if spec.vms and await pacemaker.remove_fence_constraints(survivor, clones):
        report.mark("DRBD fencing constraints lifted (both copies UpToDate)", clock())
    # Read before any cleanup below: a cleanup re-probes a resource and rewrites its history.
    after = await pacemaker.operation_history(survivor, watched(spec))
    changed = [
        f"{rid} on {where}" for (where, rid), call in sorted(before.items())
        if where == survivor.name and after.get((where, rid)) != call
    ]  # fmt: skip
    report.untouched = not changed
    if changed:
        report.problems.append(f"stopped, started or moved meanwhile: {', '.join(changed)}")
    await _wait_healthy(report, survivor, new.name, healthy, sleep, clock, healthy_timeout)


async def _wait_healthy(  # noqa: PLR0917 - finish's own state, passed on
    report: ReplaceReport,
    survivor: Remote,
    node: str,
    healthy: Healthy,
    sleep: Sleep,
    clock: Callable[[], float],
    timeout: float,
) -> None:
    """Until `hakvm status` says healthy. Failed actions alone (the old node's, or the
    survivor's from when it was lost) are cleaned up once on the new node, then once
    everywhere, as an admin would after reading them."""
    deadline = clock() + timeout
    cleanups: list[str | None] = [node, None]
    while True:
        ok, problems = await healthy()
        if ok:
            report.mark("cluster healthy", clock())
            return
        if clock() > deadline:
            report.problems.append(f"not healthy after {timeout:.0f}s: {'; '.join(problems[:3])}")
            return
        if cleanups and problems and all("failed action" in p for p in problems):
            where = cleanups.pop(0)
            await pacemaker.cleanup(survivor, on=where)
            said = f"failed actions cleaned up ({where or 'every node'}): {problems[0]}"
            report.mark(said, clock())
        await sleep(POLL_S)


# --- the whole ---------------------------------------------------------------------------------


async def replace_node(
    spec: ClusterSpec,
    spec_path: Path,
    node: str,
    say: Say,
    *,
    progress: engine.Progress | None = None,
    run: bool = True,
) -> ReplaceReport:
    """Replace `node` (or, with run=False, only check and plan it)."""
    session = Session(spec, spec_path)
    survivor = session.other(node)
    report = ReplaceReport(node, survivor)
    async with engine.Deployment(spec, spec_path) as dep:
        facts, builder = await dep.gather()
        problems = refusals(spec, node, facts)
        report.planned, plan_problems = plan(builder.env(facts, node), node)
        problems += plan_problems
        if problems:
            more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:3])})" if (
                len(problems) > 1) else ""  # fmt: skip
            raise ReplaceRefused(f"replace-node: {problems[0]}{more}")
        if not run:
            return report
        before = await pacemaker.operation_history(dep.conns[survivor], watched(spec))
    report.mark(f"checked: {survivor} runs every VM on UpToDate data, {node} is empty")
    report.applied = await engine.apply(
        spec, spec_path, progress or (lambda *_: None), phases=REPLACE_PHASES,
        keep=lambda step: keep(step, node), replacing=node,
    )  # fmt: skip
    report.mark(f"{node} configured; its DRBD copies joined {survivor}'s as SyncTarget")

    async def healthy() -> tuple[bool, list[str]]:
        status = assess(spec, await collect(spec, spec_path))
        return status.exit_code == 0, status.problems

    async with session:
        await finish(
            spec, report, await session.conn(survivor), await session.conn(node), say, before,
            healthy,
        )  # fmt: skip
    return report
