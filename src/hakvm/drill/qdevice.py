"""The quorum device's drills, and what they read (docs/qdevice.md, docs/drills.md).

scenarios.py has those built on its shared bodies (qnetd-down, partition-with-qdevice,
node-crash-with-qdevice, isolated-node); this module holds qnetd-down-then-crash, the one
whose outcome is no recovery at all (until the crashed node is back: qnetd's return is not
enough, wait_for_all), and the helpers they share.

With a quorum device a split is decided by qnetd's vote: the half that gets it has 2 of 3
votes, keeps quorum and fences the other; the other half has 1 and, with
no-quorum-policy=stop, stops its VMs and cannot fence. No fencing delay is configured.
The price: qnetd down plus a node down leaves the survivor 1 of 3, and it stops its VMs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from hakvm.drill.faults import Faults
from hakvm.drill.harness import (
    Cluster,
    DrillError,
    DrillResult,
    Say,
    fault_moment,
    fence_successes,
)
from hakvm.drill.timeline import Event, Fault, Fenced, QuorumLost, Running, VmsStopped
from hakvm.ops.status import HELD_BY_WAIT_FOR_ALL
from hakvm.remote import pacemaker
from hakvm.remote.connection import RemoteError
from hakvm.remote.pacemaker import ClusterState
from hakvm.remote.quorum import (
    QUORUMTOOL,
    QuorumView,
    fence_delays,
    no_quorum_stops_command,
    parse_no_quorum_stops,
    parse_quorumtool,
    ran_without_quorum,
)
from hakvm.spec.derive import tie_breaker_node
from hakvm.spec.models import ClusterSpec, QuorumDevice

POLL_S = 5  # as scenarios.POLL_S: crm_mon is seconds of CPU on a TCG node
VOTE_GONE_S = 120.0  # qdevice notices a lost qnetd within its heartbeat (8 s) and timeouts


Drill = Callable[[Cluster, Faults, float, Say], Awaitable[DrillResult]]
Action = Callable[[], Awaitable[None]]


class Recover(Protocol):
    """scenarios.py's node failure body: fault, watch, verdicts, witness, rejoin."""

    async def __call__(
        self,
        cluster: Cluster,
        result: DrillResult,
        *,
        bound: float,
        say: Say,
        inject: Callable[[str], Awaitable[float | None]],
        victim: str,
        heal: Action | None = None,
    ) -> None: ...


class Partition(Protocol):
    """scenarios.py's every-link-cut body, `victim` the half that must lose."""

    async def __call__(
        self,
        cluster: Cluster,
        faults: Faults,
        bound: float,
        say: Say,
        result: DrillResult,
        *,
        victim: str,
    ) -> DrillResult: ...


class Quiet(Protocol):
    """scenarios.py's body of a fault that must change nothing."""

    async def __call__(
        self, cluster: Cluster, scenario: str, *, cut: Action, what: str, faults: Faults, say: Say
    ) -> DrillResult: ...


class Place(Protocol):
    """scenarios.py's set-up that puts a VM on a node first (a fault must move something)."""

    async def __call__(
        self, cluster: Cluster, node: str, result: DrillResult, say: Say, *, why: str,
        at: float = 0.0,
    ) -> None: ...  # fmt: skip


@dataclass(frozen=True)
class Bodies:
    """The shared drill bodies of scenarios.py (private there), handed to these drills."""

    recover: Recover
    partition: Partition
    quiet: Quiet
    place: Place


def drills(bodies: Bodies) -> dict[str, Drill]:
    """The quorum device's drills, in the order `--all` runs them (with a device only)."""

    async def qnetd_down(cluster: Cluster, faults: Faults, _: float, say: Say) -> DrillResult:
        """qnetd stopped: 2 of 3 votes remain, nothing moves, status says degraded."""
        require_qdevice(cluster.spec, "qnetd-down")
        return await bodies.quiet(
            cluster, "qnetd-down", cut=faults.qnetd_down,
            what="qnetd (the quorum device's server)", faults=faults, say=say,
        )  # fmt: skip

    async def partition(cluster: Cluster, faults: Faults, bound: float, say: Say) -> DrillResult:
        return await partition_with_qdevice(bodies, cluster, faults, bound, say)

    async def crash(cluster: Cluster, faults: Faults, bound: float, say: Say) -> DrillResult:
        return await node_crash_with_qdevice(bodies, cluster, faults, bound, say)

    async def isolated(cluster: Cluster, faults: Faults, bound: float, say: Say) -> DrillResult:
        return await isolated_node(bodies, cluster, faults, bound, say)

    async def then_crash(cluster: Cluster, faults: Faults, bound: float, say: Say) -> DrillResult:
        return await qnetd_down_then_crash(bodies, cluster, faults, bound, say)

    return {
        "qnetd-down": qnetd_down,
        "partition-with-qdevice": partition,
        "node-crash-with-qdevice": crash,
        "isolated-node": isolated,
        "qnetd-down-then-crash": then_crash,
    }


async def partition_with_qdevice(
    bodies: Bodies, cluster: Cluster, faults: Faults, bound: float, say: Say
) -> DrillResult:
    """Every heartbeat link cut, qnetd up: its vote goes to one half (the tie-breaker's), the
    other half loses quorum and cannot fence; no delay anywhere, no race."""
    spec = cluster.spec
    require_qdevice(spec, "partition-with-qdevice")
    survivor = tie_breaker_node(spec)
    victim = cluster.other(survivor)
    delays = await configured_delays(cluster, survivor)
    pids = await qemu_pids_on(cluster, survivor)
    attempts = fence_attempts(await cluster.state(survivor), survivor)
    result = DrillResult("partition-with-qdevice")
    await bodies.partition(cluster, faults, bound, say, result, victim=victim)
    check_no_delay(result, delays, victim, spec.cluster.timing.stonith_timeout_s)
    after = await qemu_pids_on(cluster, survivor)
    kept = {vm: after.get(vm) for vm in pids}
    result.check("the winning half's VMs kept running", kept == pids, f"{pids} -> {kept}")
    tried = fence_attempts(await cluster.state(survivor), survivor) - attempts
    result.check("the losing half fenced nobody", not tried, f"attempts on {survivor}: {tried}")
    return result


async def node_crash_with_qdevice(
    bodies: Bodies, cluster: Cluster, faults: Faults, bound: float, say: Say
) -> DrillResult:
    """The first node crashes (the one a static delay protects, so its fencing waited): with
    a quorum device the survivor has 2 of 3 votes and fences it at once."""
    spec = cluster.spec
    require_qdevice(spec, "node-crash-with-qdevice")
    result = DrillResult("node-crash-with-qdevice")
    victim = spec.nodes[0].name
    await bodies.place(cluster, victim, result, say, why="whose crash this drill is")
    delays = await configured_delays(cluster, cluster.other(victim))
    await bodies.recover(cluster, result, bound=bound, say=say, inject=faults.crash, victim=victim)
    check_no_delay(result, delays, victim, spec.cluster.timing.stonith_timeout_s)
    return result


async def isolated_node(
    bodies: Bodies, cluster: Cluster, faults: Faults, bound: float, say: Say
) -> DrillResult:
    """The node an equal split would keep (the tie-breaker's) cut off from its peer and from
    qnetd: it loses quorum and stops its VMs; the other half gets the vote, fences it and
    runs its VMs."""
    require_qdevice(cluster.spec, "isolated-node")
    result = DrillResult("isolated-node")
    victim = tie_breaker_node(cluster.spec)
    other = cluster.other(victim)
    await bodies.place(cluster, victim, result, say, why="which loses quorum")
    seen = await cluster.state(other)
    before = {n.name: fence_successes(seen, n.name) for n in cluster.spec.nodes}
    mine = vms_on(seen, victim, [vm.name for vm in cluster.spec.vms])
    stop = asyncio.Event()
    watch: list[asyncio.Task[None]] = []
    injected: list[float] = []

    live: list[str] = []  # its scheduler's log, as read while it ran

    async def isolate(node: str) -> None:
        started = time.monotonic()
        # A minute's margin: the node's clock against this machine's (the lab sets it at boot).
        injected.append(time.time() - 60)
        await faults.isolate(node)
        watch.append(asyncio.create_task(
            watch_quorum_loss(cluster, node, result, started, stop, stops=(injected[0], live))
        ))  # fmt: skip

    try:
        await bodies.recover(
            cluster, result, bound=bound, say=say, inject=isolate, victim=victim, heal=faults.heal
        )
    finally:
        stop.set()
        await asyncio.gather(*watch, return_exceptions=True)
        await faults.heal()
    lost = result.timeline.at(QuorumLost(victim))
    result.check("the isolated node lost quorum", lost is not None, f"{victim} at {lost}s")
    since = injected[0] if injected else None
    await check_stopping(cluster, result, victim, mine, since, live=live)
    seen = await cluster.state(other)
    fenced = [n.name for n in cluster.spec.nodes if fence_successes(seen, n.name) - before[n.name]]
    result.check("exactly one node fenced", fenced == [victim], f"fenced: {fenced}")
    return result


def vms_on(state: ClusterState | None, node: str, vms: list[str]) -> list[str]:
    """The VMs among `vms` that `state` shows active on `node`."""
    return [vm for vm in vms if state is not None and node in state.active_on(vm)]


async def check_stopping(
    cluster: Cluster,
    result: DrillResult,
    node: str,
    vms: list[str],
    since: float | None,
    *,
    live: list[str],
) -> None:
    """`node`, without quorum, stopped its VMs, or had begun to when the other half fenced
    it: its own view showed none running, or its scheduler logged a stop of each one "due to
    no quorum" (on the lab the other half fenced it 34 s after it lost quorum, 10 s into
    stops that take minutes under TCG: 2026-12-02), as read while it ran (`live`) or from its
    journal after it rejoined; or, under no-quorum-policy=stop, it was fenced before any stop
    was logged."""
    name = "the isolated node stopped its VMs, or was stopping them when fenced"
    stopped = result.timeline.at(VmsStopped(node))
    if stopped is not None:
        result.check(name, True, f"{node}: none running at {stopped}s")
        return
    if since is None or not vms:
        result.check(name, False, f"{node}: no fault injected or no VM on it ({vms})")
        return
    try:
        answer = await (await cluster.conn(node)).run(no_quorum_stops_command(since), timeout=120)
    except RemoteError as exc:
        await cluster.drop(node)
        result.check(name, False, f"{node}: its journal could not be read: {exc}")
        return
    log = "\n".join([*live, answer.stdout])
    logged = parse_no_quorum_stops(log)
    missing = [vm for vm in vms if vm not in logged]
    # Fenced before any stop was logged: its decision cannot be seen (a TCG node's power cut
    # lost it, 13-14 s after its quorum loss in two make test runs of 2026-12-05), and the fence
    # stopped its VMs. A transition logged without a VM's stop still fails.
    fenced = result.timeline.at(Fenced(node))
    if not logged and fenced is not None and await _no_quorum_policy(cluster, node) == "stop":
        lost = result.timeline.at(QuorumLost(node))
        after = f"{fenced - lost:.1f}s after it lost quorum" if lost is not None else "fenced"
        seen = ("its scheduler seen running without quorum" if ran_without_quorum(log)
                else "no decision of its scheduler read")  # fmt: skip
        result.check(name, True, f"{node} was fenced {after}, before it logged a stop, under "
                     f"no-quorum-policy=stop ({seen}): the fence stopped "
                     f"{', '.join(missing)}")  # fmt: skip
        return
    detail = (
        f"{node} was fenced while stopping {', '.join(vms)} (its scheduler: stop due to no quorum)"
        if not missing
        else f"{node}: no stop of {', '.join(missing)} for lack of quorum in its journal"
    )
    result.check(name, not missing, detail)


async def _no_quorum_policy(cluster: Cluster, node: str) -> str:
    """The cluster's no-quorum-policy as the other node's crm_mon shows it ("" unread)."""
    state = await cluster.state(cluster.other(node))
    return state.no_quorum_policy if state is not None else ""


def require_qdevice(spec: ClusterSpec, scenario: str) -> QuorumDevice:
    if spec.quorum_device is None:
        raise DrillError(
            f"drill {scenario}: the spec has no quorum_device (e.g. examples/lab-qdevice.yaml)"
        )
    return spec.quorum_device


async def configured_delays(cluster: Cluster, node: str) -> list[str]:
    """The fencing delays the live CIB configures (a quorum device needs none)."""
    return fence_delays(await pacemaker.live_cib(await cluster.conn(node)))


async def quorum_view(cluster: Cluster, node: str) -> QuorumView | None:
    try:
        answer = await (await cluster.conn(node)).run(QUORUMTOOL, timeout=60)
    except RemoteError:
        await cluster.drop(node)
        return None
    return parse_quorumtool(answer.stdout)


async def qemu_pids_on(cluster: Cluster, node: str) -> dict[str, str]:
    """VM -> QEMU pid of the VMs running on `node` (a restart changes the pid)."""
    return {
        vm: where.split(":", 1)[1]
        for vm, where in (await cluster.qemu_pids()).items()
        if where.startswith(f"{node}:")
    }


def fence_attempts(state: ClusterState | None, target: str) -> set[str]:
    """Every fencing of `target` in the history, whatever its outcome."""
    return {e.completed for e in state.fencing if e.target == target} if state else set()


def check_no_delay(result: DrillResult, delays: list[str], victim: str, timeout_s: int) -> None:
    """A quorum device needs no fencing delay: none configured, and the victim fenced in the
    fence agent's first attempt (within stonith-timeout of the fault). The survivor's own
    record of the fencing is used when the drill read it: the 5 s crm_mon poll is up to 5 s
    late (a lab run of 2026-12-02 failed at 151.2 s by the poll, 138.9 s by the record)."""
    result.check("no fence delay configured", not delays, "; ".join(delays) or "none in the CIB")
    recorded = (result.journal or {}).get("fenced_s")
    fenced = recorded if recorded is not None else result.timeline.at(Fenced(victim))
    how = "the survivor's record" if recorded is not None else "crm_mon, polled every 5 s"
    result.check(
        "fenced without a delay",
        fenced is not None and fenced <= timeout_s,
        f"{victim} fenced {fenced}s after the fault ({how}; stonith-timeout {timeout_s}s)",
    )


async def watch_quorum_loss(
    cluster: Cluster,
    node: str,
    result: DrillResult,
    started: float,
    stop: asyncio.Event,
    *,
    stops: tuple[float, list[str]] | None = None,
) -> None:
    """Poll `node`'s own view until it is gone (fenced) or `stop`: when it loses quorum,
    and when none of the spec's VMs is active on it any more. With `stops` (since when,
    and a list to fill), also its scheduler's log while it still runs."""
    vms = [vm.name for vm in cluster.spec.vms]
    while not stop.is_set():
        state = await cluster.state(node)
        if state is None and result.timeline.at(QuorumLost(node)) is not None:
            return  # gone (fenced), after losing quorum
        now = time.monotonic() - started
        if state is not None and not state.quorate:
            result.timeline.mark(now, QuorumLost(node))
            if not vms_on(state, node, vms):
                result.timeline.mark(now, VmsStopped(node))
                return
            if stops is not None:
                await _read_no_quorum_stops(cluster, node, result, now, stops)
        try:
            await asyncio.wait_for(stop.wait(), POLL_S)
        except TimeoutError:
            continue


async def _read_no_quorum_stops(
    cluster: Cluster, node: str, result: DrillResult, now: float, stops: tuple[float, list[str]]
) -> None:
    """The node's scheduler decisions read live: the other half fences it seconds later,
    and a power cut loses what journald had not synced yet (it syncs every 5 min; the
    decisions were gone from node01's journal after such a fencing in make test,
    2026-12-04)."""
    since, live = stops
    try:
        answer = await (await cluster.conn(node)).run(no_quorum_stops_command(since), timeout=30)
    except RemoteError:
        return  # being fenced: the journal is read again after it rejoins
    before = "\n".join(live)
    live.append(answer.stdout)
    if ran_without_quorum(answer.stdout) and not ran_without_quorum(before):
        result.timeline.mark(now, Event(f"{node}'s scheduler: running without quorum"))
    if new := parse_no_quorum_stops(answer.stdout) - parse_no_quorum_stops(before):
        names = ", ".join(sorted(new))
        result.timeline.mark(now, Event(f"{node}'s scheduler: stop {names} due to no quorum"))


async def _until_device_votes(cluster: Cluster, node: str, voting: bool) -> QuorumView | None:
    """`node`'s quorum view once the device's vote is cast (`voting`) or gone, None if that
    does not happen within VOTE_GONE_S."""
    deadline = time.monotonic() + VOTE_GONE_S
    while time.monotonic() < deadline:
        view = await quorum_view(cluster, node)
        if view is not None and view.device_voting == voting:
            return view
        await asyncio.sleep(POLL_S)
    return None


def _first_running(result: DrillResult, vm: str) -> float | None:
    """When the timeline first has `vm` running, on any node."""
    times = [t for t, m in result.timeline.marks if isinstance(m, Running) and m.vm == vm]
    return min(times, default=None)


async def _until_not_voting(cluster: Cluster, node: str, result: DrillResult, t0: float) -> bool:
    view = await _until_device_votes(cluster, node, voting=False)
    if view is None:
        return False
    result.timeline.mark(time.monotonic() - t0, Event("the quorum device stopped voting"))
    result.check(
        "quorum kept without qnetd",
        view.quorate,
        f"{node}: {view.total_votes} vote(s), quorum {view.quorum}, quorate {view.quorate}",
    )
    return True


async def qnetd_down_then_crash(  # noqa: PLR0915 - set-up, two faults, the watch and the recovery of one story, in order
    bodies: Bodies, cluster: Cluster, faults: Faults, bound: float, say: Say
) -> DrillResult:
    """qnetd stopped, then a node crashes: the survivor has 1 of 3 votes, loses quorum and
    stops its VMs (no-quorum-policy=stop); it fences nobody and starts nothing. qnetd's
    return is not enough: votequorum re-arms wait_for_all (kept with the device) when quorum
    is lost, so the survivor stays blocked until every node has been seen again (lab run of
    2026-12-02: 2 of 3 votes, "Activity blocked"). The crashed node is powered on, as its
    admin would; once it has rejoined every VM runs again."""
    require_qdevice(cluster.spec, "qnetd-down-then-crash")
    result = DrillResult("qnetd-down-then-crash")
    victim = await cluster.victim()
    survivor = cluster.other(victim)
    # A VM on each: the survivor's must stop, the victim's must not start (a lab run with
    # both on the victim checked neither, 2026-12-02).
    await bodies.place(cluster, survivor, result, say, why="whose VMs must stop without quorum")
    placement = await cluster.placement(survivor)
    kept = [vm for vm, nodes in placement.items() if nodes == [survivor]]
    before = await cluster.state(survivor)
    attempts = {n.name: fence_attempts(before, n.name) for n in cluster.spec.nodes}
    t0 = time.monotonic()

    def now() -> float:
        return time.monotonic() - t0

    say("fault: qnetd stopped")
    await faults.qnetd_down()
    result.timeline.mark(0.0, Event("qnetd stopped"))
    started: list[str] = []
    try:
        if not await _until_not_voting(cluster, survivor, result, t0):
            raise DrillError(f"drill: the quorum device still voted {VOTE_GONE_S:.0f}s later")
        say(f"fault: {victim} crashes while qnetd is down")
        sent = time.monotonic()
        crashed = fault_moment(await faults.crash(victim), sent) - t0
        result.timeline.mark(crashed, Fault(victim, "node-crash"))
        deadline = now() + bound
        while now() < deadline:
            state = await cluster.state(survivor)
            if state is not None:
                if not state.quorate:
                    result.timeline.mark(now(), QuorumLost(survivor))
                active = vms_on(state, survivor, [v.name for v in cluster.spec.vms])
                started += [v for v in active if v not in kept and v not in started]
                if not state.quorate and not active:
                    result.timeline.mark(now(), VmsStopped(survivor))
                    break
            await asyncio.sleep(POLL_S)
        # Watched a little longer: without quorum nothing may be fenced or started.
        await asyncio.sleep(2 * POLL_S)
        during = await cluster.state(survivor)
    finally:
        await faults.heal()  # qnetd back
    result.timeline.mark(now(), Event("qnetd started"))
    lost = result.timeline.at(QuorumLost(survivor))
    result.check("the survivor lost quorum", lost is not None, f"{survivor} at {lost}s")
    stopped = result.timeline.at(VmsStopped(survivor))
    result.check(
        "the survivor stopped its VMs",
        stopped is not None,
        f"{', '.join(kept) or 'no VM'} stopped on {survivor} at {stopped}s (no-quorum-policy=stop)",
    )
    # qnetd back, the crashed node still off: the device votes again, quorum stays blocked.
    view = await _until_device_votes(cluster, survivor, voting=True)
    result.check(
        "still blocked once qnetd was back (wait_for_all)",
        view is not None and view.held_by_wait_for_all,
        f"{survivor}: device voting {view.device_voting}, {view.total_votes} of "
        f"{view.expected_votes} votes, quorate {view.quorate}, flags {sorted(view.flags)}"
        if view is not None
        else f"{survivor}: the quorum device did not vote again within {VOTE_GONE_S:.0f}s",
    )
    # What the admin sees then: `hakvm status` names the hold and both ways out.
    report = await cluster.report()
    named = [p for p in report.problems if HELD_BY_WAIT_FOR_ALL in p]
    result.check(
        "hakvm status names the wait_for_all hold",
        report.health == "critical" and bool(named),
        named[0] if named else f"{report.health}: {'; '.join(report.problems[:3])}",
    )
    during = await cluster.state(survivor)
    fenced = [n for n, seen in attempts.items() if fence_attempts(during, n) - seen]
    detail = f"fencing attempts: {fenced or 'none'}"
    result.check("nobody fenced without quorum", not fenced, detail)
    result.check("nothing started without quorum", not started, f"started: {started or 'none'}")
    say(f"powering {victim} on, as its admin would: quorum needs every node seen again")
    await faults.power_on(victim)
    powered = now()
    result.timeline.mark(powered, Event(f"{victim} powered on"))
    every = [vm.name for vm in cluster.spec.vms if vm.autostart]
    # Twice the bound: the node boots, rejoins, is fenced (it was lost unclean) and boots
    # again, DRBD reconnects; on the lab the last VM ran 306 s after the power-on and later.
    while now() < powered + 2 * bound:
        state = await cluster.state(survivor)
        where = {vm: state.running_on_members(vm) for vm in every} if state else {}
        for vm, nodes in where.items():
            for node in nodes:
                result.timeline.mark(now(), Running(vm, node))
        if state is not None and state.quorate and all(where.get(vm) for vm in every):
            break
        await asyncio.sleep(POLL_S)
    back = [_first_running(result, vm) for vm in every]
    whole = all(t is not None for t in back)
    result.recovery_s = max(t for t in back if t is not None) if whole else None
    result.check(
        f"recovered once {victim} was back",
        result.recovery_s is not None,
        f"every VM running {result.recovery_s}s after qnetd stopped "
        f"({victim} powered on at {powered:.1f}s)",
    )
    await cluster.drop(victim)
    waited = await cluster.wait_healthy(900, say)
    result.check("healthy again", waited >= 0, "; ".join(cluster.problems[:3]) or "healthy")
    return result
