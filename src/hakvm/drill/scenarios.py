"""The drills: each scenario fails the cluster on purpose and checks what must hold.

Each scenario injects one fault, records a timeline from Pacemaker's own state (crm_mon on
the survivor), and checks invariants:

- recovery: every VM of the failed node runs on the survivor, and QEMU answers, within the
  bound (fault injected -> VM responsive);
- fencing first: no VM of a lost node started on the survivor before a successful fencing
  of that node was recorded;
- acknowledged writes: a witness on the failed side wrote numbered records with
  O_DIRECT|O_DSYNC to a replicated device (DRBD protocol C) and reported each one as it was
  acknowledged; every reported number is read back on the survivor;
- no split-brain: once the node is back, every DRBD resource reconnects UpToDate/UpToDate;
- nothing moved: faults that redundancy must absorb (one knet link, one bond member) leave
  every VM where it was, in the same QEMU process, with no fencing.

Faults are injected with the lab's own commands (`hakvm lab kill|cut|heal|bmc-stop|...`),
or from inside the nodes (sysrq power-off, nftables cuts, a blocked BMC: see faults.py):
real nodes get those only with --yes-really.

The witness writes into the last 16 MiB of the failed node's VM disk (its DRBD device): the
lab's payload VMs are BIOS-only and never touch it. On real nodes the user must name the VM
whose disk may be overwritten there (--witness-vm), and that VM's node is the one failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from hakvm.drill import qdevice as qd
from hakvm.drill import replacement
from hakvm.drill.faults import Faults
from hakvm.drill.harness import (
    Cluster,
    DrillError,
    DrillResult,
    Say,
    check_healthy_again,
    fault_moment,
    fence_successes,
)
from hakvm.drill.timeline import (
    Degraded,
    DrbdPrimary,
    DrbdState,
    Event,
    Fault,
    Fenced,
    LinksHealed,
    LiveMigrated,
    Lost,
    MovedForSetUp,
    Responsive,
    Running,
)
from hakvm.drill.witness import finish_witness, start_witness, wait_acks
from hakvm.ops import migrate as moves
from hakvm.remote import pacemaker
from hakvm.remote.connection import RemoteError
from hakvm.remote.drbd import DrbdResource
from hakvm.spec.models import ClusterSpec, DiskMode

QUIET_WATCH_S = 90  # how long a fault that must change nothing is watched
# How often a drill reads the survivor's state while it recovers. Each crm_mon costs ~0.7 s
# of CPU on a TCG lab node (measured): polled every 2 s, the observer took a third of the
# CPU the recovery it measures needs. Timeline marks are this coarse.
POLL_S = 5

# node-crash-during-resync slows the resync it starts to this, so that it still runs when the
# plug is pulled even on fast hardware (a 1 GiB disk takes over 8 minutes).
SLOW_RESYNC_RATE = "2M"
Drill = Callable[[Cluster, Faults, float, Say], Awaitable[DrillResult]]


async def _vms_on(cluster: Cluster, victim: str) -> list[str]:
    """The VMs running on `victim` (as its peer sees it): what its failure must move."""
    placement = await cluster.placement(cluster.other(victim))
    moving = [vm for vm, nodes in placement.items() if nodes == [victim]]
    if not moving:
        raise DrillError(f"drill: no VM runs on {victim}; nothing would fail over")
    return moving


async def _crash_and_recover(  # noqa: PLR0912, PLR0915 - one poll loop and its verdicts: the story of a failover, read whole
    cluster: Cluster,
    result: DrillResult,
    *,
    bound: float,
    say: Say,
    inject: Callable[[str], Awaitable[float | None]],
    victim: str,
    heal: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Shared body of node-crash, heartbeat-partition and fence-failure."""
    survivor = cluster.other(victim)
    moving = await _vms_on(cluster, victim)
    w = await start_witness(cluster, victim, cluster.witness_on(victim, moving), say)
    await wait_acks(w)
    before = await cluster.state(survivor)
    fenced_before = fence_successes(before, victim)
    survivor_fenced_before = fence_successes(before, survivor)
    t0 = time.monotonic()

    def now() -> float:
        return time.monotonic() - t0

    say(f"fault: {result.scenario} on {victim}")
    started_unfenced: list[str] = []
    fenced_at: float | None = None
    race_lost = False  # a partition's fence race that took down the survivor instead
    try:
        t0 = fault_moment(await inject(victim), t0)
        result.timeline.mark(0.0, Fault(victim, result.scenario))
        while True:
            state = await cluster.state(survivor)
            if state is None and heal is not None:
                # The survivor does not answer: did the fence race go the other way?
                seen_by_victim = await cluster.state(victim)
                if fence_successes(seen_by_victim, survivor) - survivor_fenced_before:
                    race_lost = True
                    result.timeline.mark(now(), Fenced(survivor, by=victim, race_lost=True))
                    break
            if state is not None:
                node = state.nodes.get(victim)
                if node is not None and (not node.online or node.unclean):
                    result.timeline.mark(now(), Lost(victim, survivor))
                if fenced_at is None and fence_successes(state, victim) - fenced_before:
                    fenced_at = round(now(), 1)  # as the timeline shows it
                    result.timeline.mark(fenced_at, Fenced(victim))
                    if heal is not None:
                        await heal()
                        result.timeline.mark(now(), LinksHealed())
                for vm in moving:
                    drbd = state.resources.get(f"{vm}_drbd")
                    if fenced_at is not None and drbd is not None and survivor in drbd.promoted_on:
                        # Block mode is dual-primary: the survivor was Primary all along.
                        result.timeline.mark(now(), DrbdPrimary(vm, survivor))
                    res = state.resources.get(vm)
                    if res is not None and survivor in res.active_on:
                        if fenced_at is None and vm not in started_unfenced:
                            started_unfenced.append(vm)
                        if res.running_on == [survivor]:
                            result.timeline.mark(now(), Running(vm, survivor))
                done = all(result.timeline.at(Running(vm, survivor)) for vm in moving)
                if done:
                    break
            if now() > bound:
                break
            await asyncio.sleep(POLL_S)
    except BaseException:
        w.stop.set()  # interrupted or failed: the writer is done too
        raise
    finally:
        if heal is not None and result.timeline.at(LinksHealed()) is None:
            await heal()  # never leave the nodes partitioned, whatever happened (Ctrl-C too)
            result.timeline.mark(now(), LinksHealed())
    if race_lost:
        result.check(
            "preferred survivor won the fence race",
            False,
            f"{victim} fenced {survivor}: fence-race protection (the delay on fencing "
            f"{survivor}) was shorter than {survivor}'s own fence agent took",
        )
        await cluster.drop(survivor)
        await finish_witness(cluster, w, victim, result)  # the writer's node survived
        await check_healthy_again(cluster, result, 900, say)
        return
    for vm in moving:
        running = result.timeline.at(Running(vm, survivor)) is not None
        if running and await cluster.wait_responsive(survivor, vm, 120):
            result.timeline.mark(now(), Responsive(vm, survivor))
    responsive = [result.timeline.at(Responsive(vm, survivor)) for vm in moving]
    recovered = all(t is not None for t in responsive)
    result.recovery_s = max(t for t in responsive if t is not None) if recovered else None
    result.check(
        "recovered within bound",
        recovered and (result.recovery_s or 0) <= bound,
        f"{', '.join(moving)} responsive on {survivor} after {result.recovery_s}s "
        f"(bound {bound:.0f}s)"
        if recovered
        else f"not all of {', '.join(moving)} responsive on {survivor} within {bound:.0f}s",
    )
    result.check(
        "fenced before started",
        fenced_at is not None and not started_unfenced,
        f"{victim} fenced at {fenced_at}s; started before fencing: {started_unfenced or 'none'}",
    )
    fault_unix = time.time() - (time.monotonic() - t0)
    result.journal = await cluster.journal(survivor, fault_unix=fault_unix, victim=victim,
                                           vms=moving)  # fmt: skip
    await cluster.drop(victim)
    await finish_witness(cluster, w, survivor, result)
    await _rejoin_checks(cluster, result, victim=victim, survivor=survivor, moved=moving, say=say)


async def _rejoin_checks(
    cluster: Cluster, result: DrillResult, *, victim: str, survivor: str, moved: list[str], say: Say
) -> None:
    say(f"waiting for {victim} to rejoin and DRBD to resync")
    await check_healthy_again(cluster, result, 900, say)
    placement = await cluster.placement(survivor)
    stayed = all(placement.get(vm) == [survivor] for vm in moved)
    result.check("VMs stayed (stickiness)", stayed, f"placement after rejoin: {placement}")


async def node_crash(cluster: Cluster, faults: Faults, bound: float, say: Say) -> DrillResult:
    result = DrillResult("node-crash")
    victim = await cluster.victim()
    await _crash_and_recover(
        cluster, result, bound=bound, say=say, inject=faults.crash, victim=victim
    )
    return result


async def node_hang(cluster: Cluster, faults: Faults, bound: float, say: Say) -> DrillResult:
    """The victim hangs with its power on (the lab stops its vCPUs; a real node panics with
    kernel.panic=0). Unlike a pulled plug, fencing must power off a machine that is on: the
    agent's whole off, wait and poll path. Checked like node-crash."""
    result = DrillResult("node-hang")
    victim = await cluster.victim()
    try:
        await _crash_and_recover(
            cluster, result, bound=bound, say=say, inject=faults.hang, victim=victim
        )
    finally:
        # Fenced, the node runs anew; if not, the hung one must not stay hung.
        with contextlib.suppress(RemoteError):
            await faults.unhang(victim)
    return result


async def node_crash_during_resync(
    cluster: Cluster, faults: Faults, bound: float, say: Say
) -> DrillResult:
    """The node holding the only good copy crashes while the peer is still resyncing from it.

    The survivor's disk is Inconsistent: it must never run the VM on it (DRBD has no good
    data there, and Pacemaker must not promote it). Recovery waits for the crashed node,
    which fencing reboots; then every write it acknowledged must be on both nodes.
    """
    slowed: list[tuple[str, str]] = []  # (node, resource): resync rates the drill lowered
    try:
        return await _crash_during_resync(cluster, faults, bound, say, slowed)
    finally:
        # Runtime options only: back to the configured ones however the drill ended.
        for node, resource in slowed:
            with contextlib.suppress(RemoteError):
                await (await cluster.conn(node)).run(["drbdadm", "adjust", resource])


async def _crash_during_resync(  # noqa: PLR0915 - set-up, fault, watch and verdicts of one scenario, in order
    cluster: Cluster, faults: Faults, bound: float, say: Say, slowed: list[tuple[str, str]]
) -> DrillResult:
    result = DrillResult("node-crash-during-resync")
    victim = await cluster.victim()
    survivor = cluster.other(victim)
    vm = cluster.witness_on(victim, await _vms_on(cluster, victim))
    w = await start_witness(cluster, victim, vm, say)
    await wait_acks(w)
    fenced_before = fence_successes(await cluster.state(survivor), victim)
    survivor_conn = await cluster.conn(survivor)
    # A full resync towards the survivor (its copy declared invalid), slowed down so that
    # it still runs at the fault. The options are runtime only: `drbdadm adjust` restores
    # the configured ones.
    slowed.append((survivor, vm))  # before: a change that landed but did not answer counts
    await survivor_conn.run(
        ["drbdadm", "disk-options", "--c-plan-ahead=0", f"--resync-rate={SLOW_RESYNC_RATE}", vm],
        check=True,
    )
    await survivor_conn.run(["drbdadm", "invalidate", vm], check=True)
    at_fault: DrbdResource | None = None
    for _ in range(30):
        at_fault = await cluster.drbd(survivor, vm)
        if at_fault is not None and at_fault.connection == "SyncTarget":
            break
        await asyncio.sleep(2)
    resyncing = at_fault is not None and at_fault.connection == "SyncTarget"
    result.check(
        "resync running at the fault",
        resyncing,
        f"{survivor} {at_fault.connection} {at_fault.disk}, {at_fault.sync_percent}% done"
        if at_fault
        else f"{survivor}: no DRBD state for {vm}",
    )
    if not resyncing:
        await finish_witness(cluster, w, victim, result)
        return result
    t0 = time.monotonic()

    def now() -> float:
        return time.monotonic() - t0

    say(f"fault: pulling the plug on {victim} ({survivor} resyncing {vm} from it)")
    t0 = fault_moment(await faults.crash(victim), t0)
    result.timeline.mark(0.0, Event(f"fault injected: {victim} killed, {survivor} resyncing {vm}"))
    # The survivor's own settings govern the resync it requests: back to the configured ones.
    await survivor_conn.run(["drbdadm", "adjust", vm])
    unsafe: list[str] = []
    running_on: list[str] = []
    while now() <= bound:
        state = await cluster.state(survivor)
        drbd = await cluster.drbd(survivor, vm)
        if state is not None:
            node = state.nodes.get(victim)
            victim_up = node is not None and node.online and not node.unclean
            if node is not None and not victim_up:
                result.timeline.mark(now(), Lost(victim, survivor))
            if fence_successes(state, victim) - fenced_before:
                result.timeline.mark(now(), Fenced(victim))
            if victim_up and result.timeline.at(Fenced(victim)) is not None:
                result.timeline.mark(now(), Event(f"{victim} back in the cluster"))
            res = state.resources.get(vm)
            own_data = drbd is not None and drbd.disk == "UpToDate"
            peer_data = drbd is not None and drbd.peer_disk == "UpToDate"
            if res is not None and survivor in res.active_on and not (own_data or peer_data):
                unsafe.append(f"{now():.0f}s: {vm} active on {survivor} with {drbd}")
            if drbd is not None:
                result.timeline.mark(now(), DrbdState(survivor, drbd.connection, drbd.disk))
            # Until the victim is fenced, crm_mon may still list the VM where it ran before
            # the crash: only a placement after the fencing is a recovery.
            fenced = result.timeline.at(Fenced(victim)) is not None
            if res is not None and res.running_on and fenced:
                running_on = res.running_on
                result.timeline.mark(now(), Running(vm, running_on[0]))
                break
        await asyncio.sleep(POLL_S)
    if running_on and await cluster.wait_responsive(
        running_on[0], vm, max(0.0, bound - now()), interval=5
    ):
        result.recovery_s = round(now(), 1)
        result.timeline.mark(result.recovery_s, Responsive(vm, running_on[0]))
    result.check(
        "never ran on data it did not have",
        not unsafe,
        "; ".join(unsafe[:3]) or f"{vm} was not started on {survivor} while it was Inconsistent",
    )
    result.check(
        "recovered within bound",
        result.recovery_s is not None and result.recovery_s <= bound,
        f"{vm} responsive on {running_on} after {result.recovery_s}s (bound {bound:.0f}s)",
    )
    fenced_at = result.timeline.at(Fenced(victim))
    result.check("crashed node fenced", fenced_at is not None, f"{victim} fenced at {fenced_at}s")
    await cluster.drop(victim)
    say(f"waiting for {victim} to rejoin and the resync to finish")
    await check_healthy_again(cluster, result, 1200, say)
    # Read on the node that was resyncing: the acked records must have reached it.
    await finish_witness(cluster, w, survivor, result)
    return result


async def _place_a_vm_on(
    cluster: Cluster, node: str, result: DrillResult, say: Say, *, why: str, at: float = 0.0
) -> None:
    """A VM must run on `node`, or the fault there would move nothing and the drill would
    prove nothing. Earlier drills leave VMs on survivors: live-migrate one back."""
    placement = await cluster.placement(node)
    if any(nodes == [node] for nodes in placement.values()):
        return
    # A block-mode VM if there is one: it moves live, as a drain must move it back.
    live = {v.name for v in cluster.spec.vms if v.disk.mode is DiskMode.BLOCK}
    movable = (v for v, n in placement.items() if len(n) == 1)
    vm = cluster.witness_vm or min(movable, key=lambda v: v not in live, default=None)
    if vm is None:
        raise DrillError(f"drill: no VM is running; nothing would move from {node}")
    say(f"no VM runs on {node}, {why}: migrating {vm} there first")
    moved = await moves.migrate(cluster.spec, cluster.spec_path, vm, node, progress=say)
    result.timeline.mark(at, MovedForSetUp(vm, node, moved.kind))


async def heartbeat_partition(
    cluster: Cluster, faults: Faults, bound: float, say: Say
) -> DrillResult:
    """Every link between the nodes cut: fence-race protection must leave exactly one."""
    keep = cluster.spec.cluster.fencing.preferred_survivor if cluster.spec.cluster.fencing else None
    victim = cluster.other(keep) if keep else cluster.spec.nodes[1].name
    result = DrillResult("heartbeat-partition")
    return await _partition(cluster, faults, bound, say, result, victim=victim)


async def _partition(
    cluster: Cluster, faults: Faults, bound: float, say: Say, result: DrillResult, *, victim: str
) -> DrillResult:
    survivor = cluster.other(victim)
    await _place_a_vm_on(cluster, victim, result, say, why="which the fence race takes down")
    fenced_before = {
        n.name: fence_successes(await cluster.state(survivor), n.name) for n in cluster.spec.nodes
    }

    async def cut_all(_: str) -> None:
        await faults.partition()

    async def heal() -> None:
        await faults.heal()

    await _crash_and_recover(
        cluster, result, bound=bound, say=say, inject=cut_all, victim=victim, heal=heal
    )
    await faults.heal()
    state = await cluster.state(survivor)
    fenced = [
        n.name for n in cluster.spec.nodes if fence_successes(state, n.name) - fenced_before[n.name]
    ]
    result.check(
        "exactly one node fenced", fenced == [victim], f"fenced during the partition: {fenced}"
    )
    return result


async def fence_failure(cluster: Cluster, faults: Faults, bound: float, say: Say) -> DrillResult:
    """The crashed node's BMC is down too: nothing may start until fencing succeeds."""
    result = DrillResult("fence-failure")
    victim = await cluster.victim()
    survivor = cluster.other(victim)
    hold_s = 120.0
    background: list[asyncio.Task[None]] = []
    blocked: list[str] = []  # BMCs blocked and not back yet

    async def bring_bmc_back(node: str) -> None:
        await asyncio.sleep(hold_s)
        await faults.bmc_up(node)
        blocked.remove(node)
        result.timeline.mark(hold_s, Event(f"{node}'s BMC back"))

    async def kill_without_bmc(node: str) -> float | None:
        # Recorded before it is blocked: however the drill ends from here on, even before
        # the victim is reached, the `finally` below unblocks it.
        blocked.append(node)
        await faults.bmc_down(node)
        at = await faults.crash(node)
        background.append(asyncio.create_task(bring_bmc_back(node)))
        return at

    try:
        await _crash_and_recover(
            cluster,
            result,
            bound=bound + hold_s,
            say=say,
            inject=kill_without_bmc,
            victim=victim,
        )
        for task in background:
            await task
    finally:
        # Interrupted (Ctrl-C, a failure): the BMC comes back now, not after the hold.
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for node in list(blocked):
            await faults.bmc_up(node)
            blocked.remove(node)
    fenced_at = result.timeline.at(Fenced(victim))
    result.check(
        "waited for the BMC",
        fenced_at is not None and fenced_at >= hold_s,
        f"{victim} fenced at {fenced_at}s; BMC back at {hold_s:.0f}s; survivor {survivor} "
        "started nothing before",
    )
    return result


async def _quiet_fault(
    cluster: Cluster,
    scenario: str,
    *,
    cut: Callable[[], Awaitable[None]],
    what: str,
    faults: Faults,
    say: Say,
) -> DrillResult:
    """A fault redundancy absorbs: nothing moves, restarts or gets fenced."""
    result = DrillResult(scenario)
    first = cluster.spec.nodes[0].name
    before_place = await cluster.placement(first)
    before_pids = await cluster.qemu_pids()
    before_fence = {
        n.name: fence_successes(await cluster.state(first), n.name) for n in cluster.spec.nodes
    }
    t0 = time.monotonic()
    degraded_seen = False
    inquorate: list[str] = []
    try:
        await cut()  # in the `try`: a cut interrupted half-way (one node done) is healed too
        result.timeline.mark(0.0, Event(f"cut {what}"))
        while time.monotonic() - t0 < QUIET_WATCH_S:
            ok, problems = await cluster.healthy()
            inquorate += [n for n in cluster.inquorate if n not in inquorate]
            if not ok and not degraded_seen:
                degraded_seen = True
                result.timeline.mark(time.monotonic() - t0, Degraded(problems[0]))
            await asyncio.sleep(10)
    finally:
        await faults.heal()
    result.timeline.mark(time.monotonic() - t0, Event("healed"))
    after_place = await cluster.placement(first)
    after_pids = await cluster.qemu_pids()
    state = await cluster.state(first)
    fenced = [
        n.name for n in cluster.spec.nodes if fence_successes(state, n.name) - before_fence[n.name]
    ]
    result.check("nothing moved", after_place == before_place, f"{before_place} -> {after_place}")
    result.check(
        "nothing restarted", after_pids == before_pids, f"QEMU pids {before_pids} -> {after_pids}"
    )
    result.check("nobody fenced", not fenced, f"fenced: {fenced or 'none'}")
    result.check("quorum kept", not inquorate, f"without quorum: {inquorate or 'none'}")
    result.check(
        "status saw the fault",
        degraded_seen,
        "hakvm status reported degraded" if degraded_seen else "status stayed healthy",
    )
    waited = await cluster.wait_healthy(300, say)
    result.check("healthy after heal", waited >= 0, f"after {waited:.0f}s")
    result.recovery_s = 0.0
    return result


async def heartbeat_link_loss(
    cluster: Cluster, faults: Faults, _: float, say: Say
) -> DrillResult:
    return await _quiet_fault(
        cluster, "heartbeat-link-loss", cut=faults.cut_heartbeat, what="the heartbeat link",
        faults=faults, say=say,
    )  # fmt: skip


async def bond_member_loss(cluster: Cluster, faults: Faults, _: float, say: Say) -> DrillResult:
    return await _quiet_fault(
        cluster, "bond-member-loss", cut=faults.cut_bond_member, what="one bond member",
        faults=faults, say=say,
    )  # fmt: skip


async def vm_crash(cluster: Cluster, faults: Faults, bound: float, say: Say) -> DrillResult:
    """QEMU of one VM killed: Pacemaker's monitor finds it and restarts it in place."""
    result = DrillResult("vm-crash")
    first = cluster.spec.nodes[0].name
    placement = await cluster.placement(first)
    vm, nodes = next((v, n) for v, n in placement.items() if len(n) == 1)
    node = nodes[0]
    conn = await cluster.conn(node)
    pid = (await conn.run(["cat", f"/run/libvirt/qemu/{vm}.pid"], check=True)).stdout.strip()
    fenced_before = fence_successes(await cluster.state(first), node)
    t0 = time.monotonic()
    await conn.run(["kill", "-9", pid], check=True)
    result.timeline.mark(0.0, Event(f"QEMU of {vm} (pid {pid}) killed on {node}"))
    new_pid = pid
    while time.monotonic() - t0 < bound:
        await asyncio.sleep(3)
        state = await cluster.state(first)
        res = state.resources.get(vm) if state else None
        if res is not None and res.failed:
            result.timeline.mark(time.monotonic() - t0, Event(f"Pacemaker saw {vm} fail"))
        if state and any(f.resource == vm for f in state.failures):
            result.timeline.mark(time.monotonic() - t0, Event(f"Pacemaker saw {vm} fail"))
        got = await conn.run(["cat", f"/run/libvirt/qemu/{vm}.pid"])
        new_pid = got.stdout.strip() if got.ok else ""
        if res is not None and res.running_on == [node] and new_pid and new_pid != pid:
            result.timeline.mark(time.monotonic() - t0, Running(vm, node, again=True))
            break
    if new_pid and new_pid != pid and await cluster.responsive(node, vm):
        result.recovery_s = round(time.monotonic() - t0, 1)
        result.timeline.mark(result.recovery_s, Responsive(vm, node))
    result.check(
        "restarted in place",
        result.recovery_s is not None,
        f"{vm} on {node}, new QEMU pid {new_pid}" if result.recovery_s else "not restarted",
    )
    state = await cluster.state(first)
    result.check("nobody fenced", not (fence_successes(state, node) - fenced_before), "")
    await pacemaker.cleanup(conn, vm)
    return result


async def _wait_out_of_standby(cluster: Cluster, node: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [await cluster.state(n.name) for n in cluster.spec.nodes]
        if all(s is not None and node in s.nodes and not s.nodes[node].standby for s in states):
            return True
        await asyncio.sleep(5)
    return False


async def rolling_maintenance(
    cluster: Cluster, faults: Faults, bound: float, say: Say
) -> DrillResult:
    """Drain, reboot, undrain each node in turn: VMs only ever move live."""
    result = DrillResult("rolling-maintenance")
    t0 = time.monotonic()
    for node in [n.name for n in cluster.spec.nodes]:
        # Earlier drills may leave every VM on one node: draining the other would then move
        # nothing, and the drill would vouch for a live migration it never made.
        await _place_a_vm_on(
            cluster, node, result, say, why="which is drained next", at=time.monotonic() - t0
        )
        drained = await moves.drain(cluster.spec, cluster.spec_path, node, progress=say)
        for move in drained.moves:
            result.timeline.mark(
                time.monotonic() - t0,
                LiveMigrated(move.vm, move.target, move.downtime_ms),
            )
        result.check(
            f"{node} drained live",
            bool(drained.moves)
            and all(m.kind == "live" and m.downtime_ms is not None for m in drained.moves),
            f"{len(drained.moves)} move(s)",
        )
        conn = await cluster.conn(node)
        await conn.run(["systemctl", "reboot"])
        await cluster.drop(node)
        result.timeline.mark(time.monotonic() - t0, Event(f"{node} rebooting"))
        # First seen leaving (a clean shutdown stops Pacemaker, which takes a while), then
        # back: right after `systemctl reboot` the peer still lists the node online.
        deadline = time.monotonic() + 900
        left = back = False
        while not back and time.monotonic() < deadline:
            await asyncio.sleep(10)
            state = await cluster.state(cluster.other(node))
            online = bool(state and node in state.nodes and state.nodes[node].online)
            if not online and not left:
                left = True
                result.timeline.mark(time.monotonic() - t0, Event(f"{node} left the cluster"))
            back = online and left
        result.check(f"{node} rebooted and rejoined", back, "" if back else "not back within 900 s")
        result.timeline.mark(time.monotonic() - t0, Event(f"{node} back (standby)"))
        await moves.undrain(cluster.spec, cluster.spec_path, node)
        result.timeline.mark(time.monotonic() - t0, Event(f"{node} undrained"))
        # The next drain moves every VM onto this node: wait until both nodes see it out of
        # standby and its disks are resynced (status healthy), and Pacemaker is idle.
        active = await _wait_out_of_standby(cluster, node, 300)
        result.check(f"{node} out of standby", active, "" if active else "still in standby")
        settled = await cluster.wait_settled(900, say)
        result.timeline.mark(time.monotonic() - t0, Event(f"cluster settled ({settled:.0f}s)"))
    await check_healthy_again(cluster, result, 900, say)
    return result


async def node_replacement(
    cluster: Cluster, faults: Faults, bound: float, say: Say
) -> DrillResult:
    """A node lost for good, reinstalled and replaced while the VMs run (drill/replacement.py);
    then the new node must take every VM over: a node-crash of the survivor."""
    t0 = time.monotonic()
    result = await replacement.replace_and_check(cluster, faults, bound, say)
    if not result.passed:
        return result
    say("the replaced node must now take over: node-crash of the survivor")
    if await cluster.wait_settled(900, say) < 0:
        result.check("settled before the failover", False, "; ".join(cluster.problems[:3]))
        return result
    offset = time.monotonic() - t0
    after = await node_crash(cluster, faults, bound, say)
    for t, mark in after.timeline.marks:
        result.timeline.mark(offset + t, mark)
    for check in after.invariants:
        result.check(f"failover onto the new node: {check.name}", check.ok, check.detail)
    return result


# The quorum device's drills (drill/qdevice.py) are built on the shared bodies above.
QDEVICE_DRILLS = qd.drills(
    qd.Bodies(recover=_crash_and_recover, partition=_partition, quiet=_quiet_fault,
              place=_place_a_vm_on)
)  # fmt: skip

# The one list of drills, in the order `--all` runs them (but those in NAMED_ONLY).
DRILLS: dict[str, Drill] = {
    "node-crash": node_crash,
    "node-hang": node_hang,
    "node-crash-during-resync": node_crash_during_resync,
    "heartbeat-link-loss": heartbeat_link_loss,
    "heartbeat-partition": heartbeat_partition,
    "bond-member-loss": bond_member_loss,
    "vm-crash": vm_crash,
    "fence-failure": fence_failure,
    "rolling-maintenance": rolling_maintenance,
    **QDEVICE_DRILLS,  # run by `--all` only for a spec with a quorum device
    "node-replacement": node_replacement,
}
SCENARIOS = tuple(DRILLS)
# Run only when named: node-replacement reinstalls a lab node (and forgets the lab's snapshots).
NAMED_ONLY = ("node-replacement",)
ALL = tuple(name for name in DRILLS if name not in NAMED_ONLY)  # the order of `--all`


def scenarios_for(spec: ClusterSpec) -> list[str]:
    """`--all`: every drill in ALL; the quorum device's only for a spec that has one."""
    return [n for n in ALL if spec.quorum_device is not None or n not in QDEVICE_DRILLS]
