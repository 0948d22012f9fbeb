"""`hakvm migrate`, `drain`, `undrain`: move VMs with Pacemaker, never behind its back.

A move is `crm_resource --move` (a temporary location preference Pacemaker acts on: live
migration for block-mode VMs, whose VirtualDomain has allow-migrate and whose DRBD is
promotable on both nodes; stop/start for qcow2-on-xfs VMs), a wait until Pacemaker reports
the VM on the target, then `crm_resource --clear`: the VM then stays by stickiness, as after a
failover. Pre-flight checks first, each named in its error: target online and not in standby,
the VM's DRBD on the target Connected and UpToDate on both sides, Pacemaker's view of that
disk (no resync flag, the drbd agent's promotion score at least 'local data UpToDate': the
CIB keeps the VM off the node otherwise), the target's free memory, and (live moves) the
migration SSH path from source to target.

DRBD dual-primary: block-mode resources are Promoted on both nodes all the time (LINBIT's
live-migration recipe: Pacemaker cannot promote a peer for the length of one migration).
Safety comes from fencing, not from a short window: DRBD's `fencing resource-and-stonith`
with Pacemaker's fence handler freezes I/O and fences the peer before either side can write
alone, so two Primaries can never diverge; only one QEMU opens the device except during the
migration hand-over, where libvirt stops the source before the destination resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

from hakvm.errors import InputError, StateError
from hakvm.remote import drbd, pacemaker, probes
from hakvm.remote.connection import NodeConnection, RemoteError
from hakvm.remote.pacemaker import ClusterState
from hakvm.remote.session import Session
from hakvm.render.cib import GOOD_DATA_SCORE, promotion_score_attribute
from hakvm.render.drbd import resync_attribute
from hakvm.render.migration import libvirt_uri, migration_name
from hakvm.spec.models import ClusterSpec, DiskMode, Vm

MEMORY_MARGIN = 64 * 1024**2  # QEMU's own overhead above the guest's memory
Progress = Callable[[str], None]
Lock = AbstractAsyncContextManager[object]  # the node lock (hakvm.remote.lock)


class MoveError(StateError):
    """A move cannot start (pre-flight) or did not finish; one line naming the check."""


class UnknownNameError(InputError):
    """A VM or node name that is not in the spec."""


@dataclass
class MoveResult:
    vm: str
    source: str
    target: str
    kind: str  # "live" or "restart"
    seconds: float  # from the move request until Pacemaker reports the VM on the target
    downtime_ms: int | None = None  # libvirt's own figure for a live migration
    # libvirt's downtime less the time the switch-over took to cross from host to host
    # (downtime_net): what the figure is without a difference between the two clocks.
    downtime_net_ms: int | None = None
    outage_s: float | None = None  # restart moves: VM seen stopped until seen running

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class DrainResult:
    node: str
    moves: list[MoveResult] = field(default_factory=list)
    standby: bool = False


def _noop(_: str) -> None:
    return None


def _find_vm(spec: ClusterSpec, name: str) -> Vm:
    for vm in spec.vms:
        if vm.name == name:
            return vm
    known = ", ".join(v.name for v in spec.vms)
    raise UnknownNameError(f"vm: no VM named {name!r} in the spec (known: {known})")


async def preflight(
    conns: dict[str, NodeConnection],
    state: ClusterState,
    vm: Vm,
    target: str,
    *,
    extra_memory: int = 0,
    score_wait: float,
) -> str:
    """Raise MoveError naming the first failed check; return the VM's current node."""
    res = state.resources.get(vm.name)
    if res is None or not res.active_on:
        raise MoveError(f"preflight: {vm.name} is not running; nothing to move")
    if len(res.active_on) > 1:
        raise MoveError(f"preflight: {vm.name} is active on {res.active_on}: not moving it")
    source = res.active_on[0]
    if source == target:
        raise MoveError(f"preflight: {vm.name} already runs on {target}")
    node = state.nodes.get(target)
    if node is None or not node.online or node.unclean:
        raise MoveError(f"preflight: target {target} is not online in the cluster")
    if node.standby:
        raise MoveError(f"preflight: target {target} is in standby (hakvm undrain {target})")
    commands = [*drbd.state_commands(), ("meminfo", ["cat", "/proc/meminfo"])]
    probe = await probes.query(conns[target], commands)
    disk = probes.drbd_of(probe).get(vm.name)
    if disk is None:
        raise MoveError(f"preflight: DRBD resource {vm.name} is not up on {target}")
    if disk.connection != "Connected" or disk.disk != "UpToDate" or disk.peer_disk != "UpToDate":
        raise MoveError(
            f"preflight: DRBD {vm.name} on {target} is {disk.connection} "
            f"{disk.disk}/{disk.peer_disk}; a move needs Connected UpToDate/UpToDate"
        )
    await _wait_good_data(conns[target], target, vm.name, score_wait)
    available = _mem_available(probe.text("meminfo"))
    needed = vm.memory + MEMORY_MARGIN + extra_memory
    if available is not None and available < needed:
        raise MoveError(
            f"preflight: {target} has {available // 2**20} MiB available, "
            f"{vm.name} needs {needed // 2**20} MiB"
        )
    if vm.disk.mode is DiskMode.BLOCK:
        # The path the migration takes: libvirt's ssh tunnel, all the migration key opens.
        probe_ssh = await conns[source].run(
            ["virsh", "-c", libvirt_uri(target), "uri"], timeout=180
        )
        if not probe_ssh.ok:
            last = (probe_ssh.stderr.strip().splitlines() or ["no output"])[-1]
            raise MoveError(
                f"preflight: migration path {source} -> {migration_name(target)} failed: {last} "
                "(hakvm apply sets up its SSH trust)"
            )
    return source


async def _wait_good_data(
    conn: NodeConnection, target: str, vm: str, timeout: float, interval: float = 5
) -> None:
    """Pacemaker places the VM only where the CIB's <vm>_needs_good_data rule allows. Its
    promotion score trails DRBD by up to one monitor (a resync that has just finished),
    so give it that long; the resync flag means a resync towards the target still runs."""
    deadline = time.monotonic() + timeout
    while True:
        flag = await pacemaker.node_attribute(conn, target, resync_attribute(vm))
        score = await pacemaker.node_attribute(conn, target, promotion_score_attribute(vm))
        good = flag is None and score is not None and _score(score) >= GOOD_DATA_SCORE
        if good:
            return
        if time.monotonic() >= deadline:
            if flag is not None:
                raise MoveError(
                    f"preflight: {target} is still resyncing {vm} "
                    f"(node attribute {resync_attribute(vm)} is set)"
                )
            raise MoveError(
                f"preflight: Pacemaker would not place {vm} on {target}: the drbd agent's "
                f"promotion score there is {score or 'unset'}, below {GOOD_DATA_SCORE} "
                "(its disk is not UpToDate)"
            )
        await asyncio.sleep(interval)


def _score(value: str) -> float:
    """A Pacemaker score as a number (INFINITY spelled out, garbage as -1)."""
    lowered = value.lower().lstrip("+")
    if lowered in ("infinity", "inf"):
        return float("inf")
    if lowered in ("-infinity", "-inf"):
        return float("-inf")
    try:
        return float(lowered)
    except ValueError:
        return -1.0


def _mem_available(meminfo: str) -> int | None:
    match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    return int(match[1]) * 1024 if match else None


_DOWNTIME_RE = re.compile(r"^\s*downtime:\s+(\d+)$", re.MULTILINE)
_DOWNTIME_NET_RE = re.compile(r"^\s*downtime_net:\s+(\d+)$", re.MULTILINE)


def downtimes(event: str) -> tuple[int | None, int | None]:
    """libvirt's downtime and downtime_net (ms) from a `virsh event` job-completed text."""
    found = [_DOWNTIME_RE.search(event), _DOWNTIME_NET_RE.search(event)]
    down, net = (int(m[1]) if m else None for m in found)
    return down, net


async def _job_completed(conn: NodeConnection, domain: str, timeout: float) -> str:
    """The text of libvirt's next job-completed event for `domain` ('' if none came)."""
    argv = ["virsh", "event", "--domain", domain, "--event", "job-completed"]
    result = await conn.run([*argv, "--timeout", str(int(timeout))], timeout=timeout + 30)
    return result.stdout


async def move(
    conns: dict[str, NodeConnection],
    vm: Vm,
    target: str,
    *,
    timeout: float = 900,
    progress: Progress = _noop,
    extra_memory: int = 0,
    score_wait: float,
) -> MoveResult:
    any_conn = conns[target]
    state = await pacemaker.cluster_state(any_conn)
    source = await preflight(
        conns, state, vm, target, extra_memory=extra_memory, score_wait=score_wait
    )
    kind = "live" if vm.disk.mode is DiskMode.BLOCK else "restart"
    progress(f"{vm.name}: {kind} move {source} -> {target}")
    listener: asyncio.Task[str] | None = None
    if kind == "live":
        # libvirt reports the migration's statistics (downtime included) as a job-completed
        # event on the source; the source domain is gone afterwards, so listen from before.
        listener = asyncio.create_task(_job_completed(conns[source], vm.name, timeout))
        await asyncio.sleep(5)  # let virsh subscribe before the migration can start
    started = time.monotonic()
    await pacemaker.move(any_conn, vm.name, target)
    stopped_at: float | None = None
    outage: float | None = None
    try:
        while True:
            now = time.monotonic()
            if now - started > timeout:
                raise MoveError(f"{vm.name}: not running on {target} after {timeout:.0f}s")
            res = (await pacemaker.cluster_state(any_conn)).resources.get(vm.name)
            running = res.running_on if res else []
            # Between migrate_to and migrate_from crm_mon can list a live-migrating VM on
            # no node (seen on the lab): only libvirt's event below says which move it was.
            if res is not None and not res.active_on and stopped_at is None:
                stopped_at = now
            if running == [target]:
                if stopped_at is not None:
                    outage = now - stopped_at
                break
            # crm_mon costs seconds of CPU on a slow node: poll gently.
            await asyncio.sleep(3)
        # A live migration ends with a stop on the source after migrate_from: until that
        # transition is done crm_mon may show the VM on the target alone, then on both.
        # Let Pacemaker say when it has settled.
        await pacemaker.wait_idle(any_conn, timeout)
        settled = (await pacemaker.cluster_state(any_conn)).active_on(vm.name)
        if settled != [target]:
            raise MoveError(f"{vm.name}: after the move it runs on {settled or 'no node'}")
    finally:
        # Drop the temporary preference whatever happened: stickiness keeps the VM put.
        await pacemaker.clear(any_conn, vm.name)
    seconds = time.monotonic() - started
    downtime = downtime_net = None
    migrated = False  # libvirt reported a completed migration job
    if listener is not None:
        try:
            # Seen stopped: most likely no event will come, so do not wait long for it.
            wait = 60 if stopped_at is None else 15
            event = await asyncio.wait_for(listener, timeout=wait)
        except (TimeoutError, RemoteError):
            event = ""
        downtime, downtime_net = downtimes(event)
        # libvirt leaves downtime out when the destination's clock is behind by more than
        # it: the event itself still says the job was a completed migration.
        migrated = "job-completed" in event and "operation:" in event
    if kind == "live" and stopped_at is not None and downtime is None and not migrated:
        # Pacemaker stopped and restarted it instead (e.g. a failed migrate_to): say so.
        raise MoveError(
            f"{vm.name}: reached {target}, but by stop/start ({outage or 0:.0f}s outage), not by "
            "live migration; see the failed actions in hakvm status"
        )
    result = MoveResult(vm.name, source, target, kind, round(seconds, 1), downtime, downtime_net)
    if kind == "restart":
        result.outage_s = round(outage if outage is not None else seconds, 1)
    return result


def good_data_wait(spec: ClusterSpec) -> float:
    """How long the promotion score may trail DRBD: the agent sets it in its monitor, so just
    after a resync it can read below 1000 for one Unpromoted interval (drbd_monitor_interval_s
    + 1) plus that monitor's own run. Measured: 45 s was too short at the lab's 60 s."""
    return max(45.0, spec.cluster.timing.drbd_monitor_interval_s + 1 + 30)


def _other(spec: ClusterSpec, node: str) -> str:
    names = [n.name for n in spec.nodes]
    if node not in names:
        known = ", ".join(names)
        raise UnknownNameError(f"node: no node named {node!r} in the spec (known: {known})")
    return next(n for n in names if n != node)


async def migrate(
    spec: ClusterSpec,
    spec_path: Path,
    vm_name: str,
    to: str | None,
    progress: Progress = _noop,
    *,
    lock: Lock | None = None,
) -> MoveResult:
    """`lock`: held from the first node contact to the end (the command line's node lock;
    a drill, which already holds it, gives none)."""
    vm = _find_vm(spec, vm_name)
    if to is not None:
        _other(spec, to)  # a bad name is bad input, before any node is asked
    async with lock or contextlib.nullcontext(), Session(spec, spec_path) as session:
        conns = {c.name: c for c in await session.connect_all()}
        state = await pacemaker.cluster_state(next(iter(conns.values())))
        running = state.active_on(vm.name)
        current = running[0] if running else None
        target = to or (_other(spec, current) if current else None)
        if target is None:
            raise MoveError(f"preflight: {vm.name} is not running; nothing to move")
        _other(spec, target)  # validates the name
        return await move(conns, vm, target, progress=progress, score_wait=good_data_wait(spec))


async def drain(
    spec: ClusterSpec,
    spec_path: Path,
    node: str,
    progress: Progress = _noop,
    *,
    lock: Lock | None = None,
) -> DrainResult:
    """Move every VM off `node` (live where possible), then put it in standby."""
    target = _other(spec, node)
    result = DrainResult(node)
    async with lock or contextlib.nullcontext(), Session(spec, spec_path) as session:
        conns = {c.name: c for c in await session.connect_all()}
        state = await pacemaker.cluster_state(conns[target])
        on_node = [vm for vm in spec.vms if node in state.active_on(vm.name)]
        score_wait = good_data_wait(spec)
        # The target must hold all of them at once: check the sum up front.
        for index, vm in enumerate(on_node):
            already = sum(v.memory + MEMORY_MARGIN for v in on_node[index + 1 :])
            result.moves.append(
                await move(
                    conns,
                    vm,
                    target,
                    progress=progress,
                    extra_memory=already,
                    score_wait=score_wait,
                )
            )
        progress(f"{node}: standby on")
        await pacemaker.set_standby(conns[target], node, on=True)
        result.standby = True
        return result


async def undrain(
    spec: ClusterSpec, spec_path: Path, node: str, *, lock: Lock | None = None
) -> None:
    """Take `node` out of standby; VMs stay where they are (stickiness)."""
    _other(spec, node)
    async with lock or contextlib.nullcontext(), Session(spec, spec_path) as session:
        conns = {c.name: c for c in await session.connect_all()}
        conn = conns[_other(spec, node)]
        await pacemaker.set_standby(conn, node, on=False)
