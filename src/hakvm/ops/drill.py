"""`hakvm drill`: fail the cluster on purpose and check what must hold.

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
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakvm.errors import StateError
from hakvm.ops import witness as wit
from hakvm.ops.failover import Timeline
from hakvm.ops.faults import FaultError, Faults, LabFaults, NodeFaults, lab_of
from hakvm.ops.status import assess, collect
from hakvm.remote import drbd, pacemaker
from hakvm.remote.connection import RemoteError
from hakvm.remote.drbd import DrbdResource
from hakvm.remote.pacemaker import ClusterState, PacemakerError
from hakvm.remote.session import Session
from hakvm.spec.models import ClusterSpec, DiskMode

SCENARIOS = (
    "node-crash",
    "node-crash-during-resync",
    "heartbeat-link-loss",
    "heartbeat-partition",
    "bond-member-loss",
    "vm-crash",
    "fence-failure",
    "rolling-maintenance",
)
WITNESS_SLOTS = 4096  # 16 MiB of 4 KiB records
WITNESS_RATE = 20  # records per second: plenty of numbers, little load on a slow node
QUIET_WATCH_S = 90  # how long a fault that must change nothing is watched
# How often a drill reads the survivor's state while it recovers. Each crm_mon costs ~0.7 s
# of CPU on a TCG lab node (measured): polled every 2 s, the observer took a third of the
# CPU the recovery it measures needs. Timeline marks are this coarse.
POLL_S = 5

# node-crash-during-resync slows the resync it starts to this, so that it still runs when the
# plug is pulled even on fast hardware (a 1 GiB disk takes over 8 minutes).
SLOW_RESYNC_RATE = "2M"
Say = Callable[[str], None]


class DrillError(StateError):
    """The drill could not run (not a lab, cluster not healthy first): exit 3."""


@dataclass
class Invariant:
    name: str
    ok: bool
    detail: str


@dataclass
class DrillResult:
    scenario: str
    timeline: Timeline = field(default_factory=Timeline)
    invariants: list[Invariant] = field(default_factory=list)
    recovery_s: float | None = None
    witness: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(i.ok for i in self.invariants)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.invariants.append(Invariant(name, ok, detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "passed": self.passed,
            "recovery_s": self.recovery_s,
            "timeline": self.timeline.as_dict(),
            "invariants": [i.__dict__ for i in self.invariants],
            "witness": self.witness,
        }


# --- reading the cluster -------------------------------------------------------------------


class Cluster(Session):
    """The drill's session: connections made on demand (a loaded survivor gets 30 s to
    answer), a crashed node's connection simply dropped; and what the drill reads."""

    def __init__(self, spec: ClusterSpec, spec_path: Path, witness_vm: str | None = None) -> None:
        super().__init__(spec, spec_path, connect_timeout=30)
        # Real nodes: the one VM whose disk the witness may overwrite (its last 16 MiB),
        # named by the user; it decides which node fails. The lab: any VM (BIOS-only).
        self.witness_vm = witness_vm
        self.problems: list[str] = []  # what the last wait_healthy saw
        self.only_failures: list[str] = []  # failed actions, when they were all it saw

    async def state(self, name: str) -> ClusterState | None:
        try:
            return await pacemaker.cluster_state(await self.conn(name))
        except PacemakerError:
            return None  # it answered: ask again later on the same connection
        except RemoteError:
            await self.drop(name)
            return None

    async def healthy(self) -> tuple[bool, list[str]]:
        report = assess(self.spec, await collect(self.spec, self.spec_path))
        # Degraded by failed actions alone (every VM running, every node and link up).
        self.only_failures = (
            report.failed_actions if report.exit_code == 1 and len(report.problems) == 1 else []
        )
        return report.exit_code == 0, report.problems

    async def wait_healthy(
        self, timeout: float, say: Say, cleared: list[str] | None = None
    ) -> float:
        """Seconds until `hakvm status` said healthy; -1 (and self.problems) if it never did.

        With `cleared`: failed actions that are all that stands between the cluster and
        healthy (a monitor that timed out on an overloaded node, whose resource Pacemaker has
        since recovered) are added to it and cleaned up, once each, as an admin would after
        reading them; the caller reports them."""
        started = time.monotonic()
        self.problems = []
        while time.monotonic() - started < timeout:
            ok, self.problems = await self.healthy()
            if ok:
                return time.monotonic() - started
            fresh = [f for f in self.only_failures if f not in (cleared or [])]
            if cleared is not None and fresh:
                say(f"cleaning up {len(fresh)} failed action(s): {'; '.join(fresh)}")
                cleared += fresh
                await self.cleanup()
            await asyncio.sleep(10)
        say(f"still not healthy after {timeout:.0f}s: {'; '.join(self.problems[:3])}")
        return -1.0

    async def cleanup(self) -> None:
        """`crm_resource --cleanup`: forget failed actions; Pacemaker re-probes."""
        for name in [n.name for n in self.spec.nodes]:
            try:
                await pacemaker.cleanup(await self.conn(name))
                return
            except RemoteError:
                await self.drop(name)

    async def wait_idle(self, timeout: float) -> bool:
        """True once Pacemaker has no action pending or running (`crm_resource --wait`):
        "healthy" says nothing about a move still in flight after the previous drill."""
        for name in [n.name for n in self.spec.nodes]:
            try:
                return await pacemaker.wait_idle(await self.conn(name), timeout)
            except RemoteError:
                await self.drop(name)
        return False

    async def wait_settled(self, timeout: float, say: Say) -> float:
        """Seconds until the cluster was both idle and healthy; -1 if it never was."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            left = timeout - (time.monotonic() - started)
            if not await self.wait_idle(max(30.0, left)):
                self.problems = [f"Pacemaker still had actions pending after {timeout:.0f}s"]
                break
            ok, self.problems = await self.healthy()
            if ok:
                # Healthy right after idle: nothing started meanwhile (or it is finished).
                if await self.wait_idle(60):
                    return time.monotonic() - started
                continue
            await asyncio.sleep(10)
        say(f"still not settled after {timeout:.0f}s: {'; '.join(self.problems[:3])}")
        return -1.0

    async def placement(self, name: str) -> dict[str, list[str]]:
        state = await self.state(name)
        if state is None:
            return {}
        return {
            vm.name: (state.resources[vm.name].running_on if vm.name in state.resources else [])
            for vm in self.spec.vms
        }

    async def victim(self) -> str:
        """The node to fail: the witness VM's, else the one running the most VMs."""
        placement = await self.placement(self.spec.nodes[0].name)
        if self.witness_vm is None:
            return busiest(placement, self.spec)
        where = placement.get(self.witness_vm, [])
        if len(where) != 1:
            raise DrillError(f"drill: the witness VM {self.witness_vm} is not running ({where})")
        return where[0]

    def witness_on(self, victim: str, moving: list[str]) -> str:
        if self.witness_vm is None:
            return moving[0]
        if self.witness_vm not in moving:
            raise DrillError(
                f"drill: the witness VM {self.witness_vm} does not run on {victim}, the node "
                f"this scenario fails: migrate it there first"
            )
        return self.witness_vm

    async def qemu_pids(self) -> dict[str, str]:
        """VM -> 'node:pid' of its QEMU (a restart changes it)."""
        out: dict[str, str] = {}
        for node in self.spec.nodes:
            conn = await self.conn(node.name)
            for vm in self.spec.vms:
                res = await conn.run(["cat", f"/run/libvirt/qemu/{vm.name}.pid"])
                if res.ok and res.stdout.strip():
                    out[vm.name] = f"{node.name}:{res.stdout.strip()}"
        return out

    async def drbd(self, node: str, vm: str) -> DrbdResource | None:
        """The VM's DRBD resource as `node` sees it (None: node unreachable or resource down)."""
        try:
            return await drbd.resource(await self.conn(node), vm)
        except RemoteError:
            await self.drop(node)
            return None

    async def responsive(self, node: str, vm: str) -> bool:
        """QEMU answers its monitor and reports the guest running (False: node unreachable)."""
        try:
            res = await (await self.conn(node)).run(
                ["virsh", "qemu-monitor-command", vm, "--hmp", "info status"], timeout=60
            )
        except RemoteError:
            await self.drop(node)
            return False
        return res.ok and "running" in res.stdout

    async def wait_responsive(
        self, node: str, vm: str, timeout: float, interval: float = 3
    ) -> bool:
        """Poll `responsive` until it holds (True) or `timeout` has passed (False)."""
        deadline = time.monotonic() + timeout
        while not await self.responsive(node, vm):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval)
        return True


def faults_for(
    spec: ClusterSpec, cluster: Cluster, lab_dir: Path, *, inject: str, yes_really: bool
) -> Faults:
    """The lab's commands when the spec is that lab (unless inject="nodes"), else faults
    injected from inside the nodes, which a real cluster gets only with --yes-really."""
    lab = lab_of(spec, lab_dir)
    if isinstance(lab, LabFaults) and inject in ("auto", "lab"):
        return lab
    if inject == "lab":
        raise DrillError(f"drill: --inject lab: {lab}")
    if not yes_really:
        why = "--inject nodes" if isinstance(lab, LabFaults) else f"not the lab ({lab})"
        raise DrillError(
            f"drill: {why}: faults would be injected on the nodes themselves (power-off by "
            "sysrq, nftables cuts, a BMC blocked): add --yes-really"
        )
    try:
        return NodeFaults(spec, cluster)
    except FaultError as exc:
        raise DrillError(f"drill: {exc}") from None


def fence_successes(state: ClusterState | None, target: str) -> set[str]:
    if state is None:
        return set()
    return {e.completed for e in state.fencing if e.target == target and e.status == "success"}


# --- the witness ---------------------------------------------------------------------------


@dataclass
class Witness:
    node: str
    vm: str
    device: str
    offset: int
    run_id: int
    stop: asyncio.Event
    task: asyncio.Task[list[int]]


async def start_witness(cluster: Cluster, node: str, vm: str, say: Say) -> Witness:
    conn = await cluster.conn(node)
    minor = (await conn.run(["drbdadm", "sh-minor", vm], check=True)).stdout.strip()
    device = f"/dev/drbd{minor}"
    size = int((await conn.run(["blockdev", "--getsize64", device], check=True)).stdout)
    offset = wit.region(size, WITNESS_SLOTS)
    run_id = secrets.randbits(63)
    stop = asyncio.Event()
    task = asyncio.create_task(
        wit.run_witness(conn, device, offset, WITNESS_SLOTS, run_id, WITNESS_RATE, stop, 3600)
    )
    say(f"witness writing to {device} ({vm}) on {node}")
    return Witness(node, vm, device, offset, run_id, stop, task)


async def finish_witness(cluster: Cluster, w: Witness, reader: str, result: DrillResult) -> None:
    """Stop the writer (if it still runs), read the region on `reader`, check every ack."""
    w.stop.set()
    try:
        acked = await asyncio.wait_for(w.task, timeout=120)
    except (TimeoutError, RemoteError) as exc:
        result.check("acknowledged writes", False, f"witness lost: {exc}")
        return
    conn = await cluster.conn(reader)
    found = await wit.read_witness(conn, w.device, w.offset, WITNESS_SLOTS, w.run_id)
    verdict = wit.verify(acked, found, WITNESS_SLOTS)
    result.witness = {
        "writer": w.node,
        "reader": reader,
        "device": w.device,
        "acked": len(acked),
        "last_acked": max(acked) if acked else None,
        "lost": list(verdict.lost),
    }
    detail = (
        f"{len(acked)} acknowledged on {w.node}, all read back on {reader}"
        if verdict.ok
        else f"{len(verdict.lost)} acknowledged record(s) missing on {reader}: "
        f"{list(verdict.lost)[:10]}"
    )
    result.check("acknowledged writes", verdict.ok and len(acked) > 0, detail)


async def wait_acks(w: Witness, seconds: float = 15) -> None:
    """Let the witness get going before the fault; a witness that already ended failed."""
    await asyncio.sleep(seconds)
    if w.task.done():
        try:
            acked = w.task.result()
        except RemoteError as exc:  # WitnessError: the writer failed by itself
            raise DrillError(f"drill: the witness on {w.node} failed: {exc}") from None
        raise DrillError(f"drill: the witness on {w.node} stopped early ({len(acked)} acks)")


# --- scenarios -----------------------------------------------------------------------------


def busiest(placement: dict[str, list[str]], spec: ClusterSpec) -> str:
    """The node running the most VMs; on a tie, the one fencing would not keep."""
    counts = {n.name: 0 for n in spec.nodes}
    for nodes in placement.values():
        for n in nodes:
            counts[n] = counts.get(n, 0) + 1
    keep = spec.cluster.fencing.preferred_survivor if spec.cluster.fencing else None
    return max(counts, key=lambda n: (counts[n], n != keep))


async def _vms_on(cluster: Cluster, victim: str) -> list[str]:
    """The VMs running on `victim` (as its peer sees it): what its failure must move."""
    placement = await cluster.placement(cluster.other(victim))
    moving = [vm for vm, nodes in placement.items() if nodes == [victim]]
    if not moving:
        raise DrillError(f"drill: no VM runs on {victim}; nothing would fail over")
    return moving


async def _crash_and_recover(
    cluster: Cluster,
    result: DrillResult,
    *,
    bound: float,
    say: Say,
    inject: Callable[[str], Awaitable[None]],
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
    await inject(victim)
    result.timeline.mark(0.0, f"fault injected ({result.scenario}) on {victim}")
    started_unfenced: list[str] = []
    fenced_at: float | None = None
    race_lost = False  # a partition's fence race that took down the survivor instead
    while True:
        state = await cluster.state(survivor)
        if state is None and heal is not None:
            # The survivor does not answer: did the fence race go the other way?
            seen_by_victim = await cluster.state(victim)
            if fence_successes(seen_by_victim, survivor) - survivor_fenced_before:
                race_lost = True
                result.timeline.mark(now(), f"{survivor} fenced by {victim} (race lost)")
                break
        if state is not None:
            node = state.nodes.get(victim)
            if node is not None and (not node.online or node.unclean):
                result.timeline.mark(now(), f"{victim} lost (seen by {survivor})")
            if fenced_at is None and fence_successes(state, victim) - fenced_before:
                fenced_at = now()
                result.timeline.mark(fenced_at, f"{victim} fenced")
                if heal is not None:
                    await heal()
                    result.timeline.mark(now(), "links healed")
            for vm in moving:
                drbd = state.resources.get(f"{vm}_drbd")
                if fenced_at is not None and drbd is not None and survivor in drbd.promoted_on:
                    # Block mode is dual-primary: the survivor was Primary all along.
                    result.timeline.mark(now(), f"{vm} DRBD Primary on {survivor}")
                res = state.resources.get(vm)
                if res is not None and survivor in res.active_on:
                    if fenced_at is None and vm not in started_unfenced:
                        started_unfenced.append(vm)
                    if res.running_on == [survivor]:
                        result.timeline.mark(now(), f"{vm} running on {survivor}")
            done = all(result.timeline.at(f"{vm} running on {survivor}") for vm in moving)
            if done:
                break
        if now() > bound:
            break
        await asyncio.sleep(POLL_S)
    if heal is not None and result.timeline.at("links healed") is None:
        await heal()  # never leave the nodes partitioned, whatever happened
        result.timeline.mark(now(), "links healed")
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
        running = result.timeline.at(f"{vm} running on {survivor}") is not None
        if running and await cluster.wait_responsive(survivor, vm, 120):
            result.timeline.mark(now(), f"{vm} responsive on {survivor}")
    responsive = [result.timeline.at(f"{vm} responsive on {survivor}") for vm in moving]
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
    await cluster.drop(victim)
    await finish_witness(cluster, w, survivor, result)
    await _rejoin_checks(cluster, result, victim=victim, survivor=survivor, moved=moving, say=say)


async def check_healthy_again(
    cluster: Cluster, result: DrillResult, timeout: float, say: Say
) -> None:
    # Healthy once is the invariant: a later SSH timeout on a loaded node would not undo it.
    cleared: list[str] = []
    waited = await cluster.wait_healthy(timeout, say, cleared)
    detail = (
        f"healthy {waited:.0f}s after recovery" if waited >= 0 else "; ".join(cluster.problems[:4])
    )
    if cleared:
        detail += f" (failed actions recorded and cleaned up: {'; '.join(cleared)})"
    result.check("no split-brain, back to healthy", waited >= 0, detail)


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

    async def kill(node: str) -> None:
        await faults.crash(node)

    await _crash_and_recover(cluster, result, bound=bound, say=say, inject=kill, victim=victim)
    return result


async def node_crash_during_resync(
    cluster: Cluster, faults: Faults, bound: float, say: Say
) -> DrillResult:
    """The node holding the only good copy crashes while the peer is still resyncing from it.

    The survivor's disk is Inconsistent: it must never run the VM on it (DRBD has no good
    data there, and Pacemaker must not promote it). Recovery waits for the crashed node,
    which fencing reboots; then every write it acknowledged must be on both nodes.
    """
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
        await survivor_conn.run(["drbdadm", "adjust", vm])
        await finish_witness(cluster, w, victim, result)
        return result
    t0 = time.monotonic()

    def now() -> float:
        return time.monotonic() - t0

    say(f"fault: pulling the plug on {victim} ({survivor} resyncing {vm} from it)")
    await faults.crash(victim)
    result.timeline.mark(0.0, f"fault injected: {victim} killed, {survivor} resyncing {vm}")
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
                result.timeline.mark(now(), f"{victim} lost (seen by {survivor})")
            if fence_successes(state, victim) - fenced_before:
                result.timeline.mark(now(), f"{victim} fenced")
            if victim_up and result.timeline.at(f"{victim} fenced") is not None:
                result.timeline.mark(now(), f"{victim} back in the cluster")
            res = state.resources.get(vm)
            own_data = drbd is not None and drbd.disk == "UpToDate"
            peer_data = drbd is not None and drbd.peer_disk == "UpToDate"
            if res is not None and survivor in res.active_on and not (own_data or peer_data):
                unsafe.append(f"{now():.0f}s: {vm} active on {survivor} with {drbd}")
            if drbd is not None:
                result.timeline.mark(now(), f"{survivor} DRBD {drbd.connection} {drbd.disk}")
            # Until the victim is fenced, crm_mon may still list the VM where it ran before
            # the crash: only a placement after the fencing is a recovery.
            fenced = result.timeline.at(f"{victim} fenced") is not None
            if res is not None and res.running_on and fenced:
                running_on = res.running_on
                result.timeline.mark(now(), f"{vm} running on {running_on[0]}")
                break
        await asyncio.sleep(POLL_S)
    if running_on and await cluster.wait_responsive(
        running_on[0], vm, max(0.0, bound - now()), interval=5
    ):
        result.recovery_s = round(now(), 1)
        result.timeline.mark(result.recovery_s, f"{vm} responsive on {running_on[0]}")
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
    fenced_at = result.timeline.at(f"{victim} fenced")
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
    from hakvm.ops.migrate import migrate

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
    moved = await migrate(cluster.spec, cluster.spec_path, vm, node, progress=say)
    result.timeline.mark(at, f"set-up: {vm} moved to {node} ({moved.kind})")


async def heartbeat_partition(
    cluster: Cluster, faults: Faults, bound: float, say: Say
) -> DrillResult:
    """Every link between the nodes cut: fence-race protection must leave exactly one."""
    result = DrillResult("heartbeat-partition")
    keep = cluster.spec.cluster.fencing.preferred_survivor if cluster.spec.cluster.fencing else None
    victim = cluster.other(keep) if keep else cluster.spec.nodes[1].name
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

    async def bring_bmc_back(node: str) -> None:
        await asyncio.sleep(hold_s)
        await faults.bmc_up(node)
        result.timeline.mark(hold_s, f"{node}'s BMC back")

    async def kill_without_bmc(node: str) -> None:
        await faults.bmc_down(node)
        await faults.crash(node)
        background.append(asyncio.create_task(bring_bmc_back(node)))

    try:
        await _crash_and_recover(
            cluster,
            result,
            bound=bound + hold_s,
            say=say,
            inject=kill_without_bmc,
            victim=victim,
        )
    finally:
        for task in background:
            await task
    fenced_at = next((t for t, what in result.timeline.marks if what == f"{victim} fenced"), None)
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
    await cut()
    result.timeline.mark(0.0, f"cut {what}")
    degraded_seen = False
    try:
        while time.monotonic() - t0 < QUIET_WATCH_S:
            ok, problems = await cluster.healthy()
            if not ok and not degraded_seen:
                degraded_seen = True
                result.timeline.mark(time.monotonic() - t0, f"status degraded: {problems[0]}")
            await asyncio.sleep(10)
    finally:
        await faults.heal()
    result.timeline.mark(time.monotonic() - t0, "healed")
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
    result.timeline.mark(0.0, f"QEMU of {vm} (pid {pid}) killed on {node}")
    new_pid = pid
    while time.monotonic() - t0 < bound:
        await asyncio.sleep(3)
        state = await cluster.state(first)
        res = state.resources.get(vm) if state else None
        if res is not None and res.failed:
            result.timeline.mark(time.monotonic() - t0, f"Pacemaker saw {vm} fail")
        if state and any(f.resource == vm for f in state.failures):
            result.timeline.mark(time.monotonic() - t0, f"Pacemaker saw {vm} fail")
        got = await conn.run(["cat", f"/run/libvirt/qemu/{vm}.pid"])
        new_pid = got.stdout.strip() if got.ok else ""
        if res is not None and res.running_on == [node] and new_pid and new_pid != pid:
            result.timeline.mark(time.monotonic() - t0, f"{vm} running again on {node}")
            break
    if new_pid and new_pid != pid and await cluster.responsive(node, vm):
        result.recovery_s = round(time.monotonic() - t0, 1)
        result.timeline.mark(result.recovery_s, f"{vm} responsive on {node}")
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
    from hakvm.ops.migrate import drain, undrain

    result = DrillResult("rolling-maintenance")
    t0 = time.monotonic()
    for node in [n.name for n in cluster.spec.nodes]:
        # Earlier drills may leave every VM on one node: draining the other would then move
        # nothing, and the drill would vouch for a live migration it never made.
        await _place_a_vm_on(
            cluster, node, result, say, why="which is drained next", at=time.monotonic() - t0
        )
        drained = await drain(cluster.spec, cluster.spec_path, node, progress=say)
        for move in drained.moves:
            result.timeline.mark(
                time.monotonic() - t0,
                f"{move.vm} live-migrated to {move.target} (downtime {move.downtime_ms} ms)",
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
        result.timeline.mark(time.monotonic() - t0, f"{node} rebooting")
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
                result.timeline.mark(time.monotonic() - t0, f"{node} left the cluster")
            back = online and left
        result.check(f"{node} rebooted and rejoined", back, "" if back else "not back within 900 s")
        result.timeline.mark(time.monotonic() - t0, f"{node} back (standby)")
        await undrain(cluster.spec, cluster.spec_path, node)
        result.timeline.mark(time.monotonic() - t0, f"{node} undrained")
        # The next drain moves every VM onto this node: wait until both nodes see it out of
        # standby and its disks are resynced (status healthy), and Pacemaker is idle.
        active = await _wait_out_of_standby(cluster, node, 300)
        result.check(f"{node} out of standby", active, "" if active else "still in standby")
        settled = await cluster.wait_settled(900, say)
        result.timeline.mark(time.monotonic() - t0, f"cluster settled ({settled:.0f}s)")
    await check_healthy_again(cluster, result, 900, say)
    return result


DRILLS: dict[str, Callable[[Cluster, Faults, float, Say], Awaitable[DrillResult]]] = {
    "node-crash": node_crash,
    "heartbeat-link-loss": heartbeat_link_loss,
    "heartbeat-partition": heartbeat_partition,
    "bond-member-loss": bond_member_loss,
    "vm-crash": vm_crash,
    "fence-failure": fence_failure,
    "rolling-maintenance": rolling_maintenance,
    "node-crash-during-resync": node_crash_during_resync,
}


async def run_drills(
    spec: ClusterSpec,
    spec_path: Path,
    scenarios: list[str],
    *,
    lab_dir: Path,
    bound: float,
    say: Say,
    inject: str = "auto",
    yes_really: bool = False,
    witness_vm: str | None = None,
) -> list[DrillResult]:
    cluster = Cluster(spec, spec_path, witness_vm)
    faults = faults_for(spec, cluster, lab_dir, inject=inject, yes_really=yes_really)
    if faults.kind == "nodes" and witness_vm is None and not isinstance(
        lab_of(spec, lab_dir), LabFaults
    ):
        raise DrillError(
            "drill: on real nodes name the VM whose disk the witness may overwrite (its last "
            "16 MiB): --witness-vm NAME"
        )
    if witness_vm is not None and witness_vm not in {vm.name for vm in spec.vms}:
        raise DrillError(f"drill: --witness-vm {witness_vm}: no such VM in the spec")
    results = []
    try:
        for name in scenarios:
            # Healthy and idle: a VM still moving after the previous drill would be read
            # as this drill's doing (or hide it).
            say("waiting for the cluster to be healthy and idle before the drill")
            if await cluster.wait_settled(900, say) < 0:
                raise DrillError(
                    f"drill {name}: cluster not healthy and idle: "
                    f"{'; '.join(cluster.problems[:3])}"
                )
            say(f"drill {name}")
            results.append(await DRILLS[name](cluster, faults, bound, say))
    finally:
        await cluster.close()
    return results
