"""The node-replacement drill: a node lost for good, rebuilt, and replaced while the VMs run.

On the lab only: it reinstalls a node (`hakvm lab reimage`). The victim is the node fencing
would not keep (not the preferred survivor):

1. its BMC held down, it is killed (a dead board) and its disks are replaced with fresh ones
   from the node image (a new SSH host key, nothing of the cluster); its BMC back, the
   survivor fences it (powering the reinstalled machine on) and runs every VM;
2. with the witness writing on the survivor (O_DIRECT|O_DSYNC records on a VM's DRBD
   device), `replace-node` brings the node back: no VM may stop (the same QEMU processes,
   Pacemaker's operation history unchanged), every acknowledged write must be read back on
   the new node, every VM's copy UpToDate on both nodes; the timeline has the resync's time;
3. then (scenarios.node_replacement) a node-crash of the survivor must fail every VM over
   onto the new node.
"""

from __future__ import annotations

import asyncio
import time

from hakvm.drill.faults import Faults, LabFaults
from hakvm.drill.harness import Cluster, DrillError, DrillResult, Say, fence_successes
from hakvm.drill.timeline import Event, Fault, Fenced, Running
from hakvm.drill.witness import finish_witness, start_witness, wait_acks
from hakvm.errors import HakvmError
from hakvm.ops import replace
from hakvm.remote import hostkeys
from hakvm.spec.models import DiskMode
from hakvm.spec.paths import resolve

POLL_S = 5
PROMOTED_WAIT_S = 180.0  # the lab's DRBD monitor runs every 60 s


async def _wait_primary(cluster: Cluster, node: str, vm: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        copy = await cluster.drbd(node, vm)
        if copy is not None and copy.role == "Primary":
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_S)


async def _lose_and_reinstall(cluster: Cluster, faults: LabFaults, victim: str) -> None:
    """Step 1's faults: the BMC held down while the node dies and gets new disks."""
    await faults.bmc_down(victim)
    await faults.crash(victim)
    await cluster.drop(victim)
    await faults.run("reimage", victim)
    await faults.bmc_up(victim)


async def _wait_failover(
    cluster: Cluster, result: DrillResult, victim: str, bound: float, t0: float
) -> bool:
    """Until the survivor fenced the victim and runs every VM; True if it did in time."""
    survivor = cluster.other(victim)
    fenced_before = fence_successes(await cluster.state(survivor), victim)
    vms = [vm.name for vm in cluster.spec.vms if vm.autostart]
    while time.monotonic() - t0 <= bound:
        state = await cluster.state(survivor)
        now = time.monotonic() - t0
        if state is not None:
            if fence_successes(state, victim) - fenced_before:
                result.timeline.mark(now, Fenced(victim))
            for vm in vms:
                res = state.resources.get(vm)
                if res is not None and res.running_on == [survivor]:
                    result.timeline.mark(now, Running(vm, survivor))
            ran = [result.timeline.at(Running(vm, survivor)) for vm in vms]
            if result.timeline.at(Fenced(victim)) is not None and None not in ran:
                result.recovery_s = max([t for t in ran if t is not None], default=0.0)
                return True
        await asyncio.sleep(POLL_S)
    return False


def _witness_vm(cluster: Cluster, placement: dict[str, list[str]], survivor: str) -> str:
    """The VM whose disk the witness writes to: the one named, else one on the survivor (a
    block-mode one: nothing of the lab's payload VMs lives in its last 16 MiB)."""
    if cluster.witness_vm is not None:
        return cluster.witness_vm
    on = [vm for vm in cluster.spec.vms if placement.get(vm.name) == [survivor]]
    on.sort(key=lambda vm: vm.disk.mode is not DiskMode.BLOCK)
    return on[0].name if on else ""


async def replace_and_check(
    cluster: Cluster, faults: Faults, bound: float, say: Say
) -> DrillResult:
    if not isinstance(faults, LabFaults):
        raise DrillError(
            "drill node-replacement: only on the lab (it reinstalls a node: hakvm lab reimage)"
        )
    spec = cluster.spec
    survivor = spec.cluster.fencing.preferred_survivor or spec.nodes[0].name
    victim = cluster.other(survivor)
    result = DrillResult("node-replacement")
    t0 = time.monotonic()

    def now() -> float:
        return time.monotonic() - t0

    say(f"fault: {victim} dies (BMC held down meanwhile) and gets fresh disks")
    await _lose_and_reinstall(cluster, faults, victim)
    result.timeline.mark(0.0, Fault(victim, "node-replacement"))
    result.timeline.mark(now(), Event(f"{victim}: new disks, OS reinstalled (new SSH host key)"))
    recovered = await _wait_failover(cluster, result, victim, bound, t0)
    result.check(
        "survivor fenced it and runs every VM",
        recovered,
        f"every VM running on {survivor} after {result.recovery_s}s" if recovered
        else f"not within {bound:.0f}s",
    )  # fmt: skip
    if not recovered:
        return result
    await faults.run("start", victim, "--wait")  # the fence powered it on: wait for its SSH
    result.timeline.mark(now(), Event(f"{victim} up, reinstalled"))
    ssh = cluster.node(victim).ssh
    known = resolve(cluster.spec_dir, ssh.known_hosts) if ssh.known_hosts else None
    found = await hostkeys.check(ssh, known) if known else None
    result.check(
        "new host key confirmed",
        found is not None and found.state == "trusted",
        f"{victim} presents {found.fingerprint}, {found.state} in {known}" if found
        else "the spec names no known_hosts file",
    )  # fmt: skip
    if found is None or found.state != "trusted":
        return result
    vm = _witness_vm(cluster, await cluster.placement(survivor), survivor)
    if not vm:
        raise DrillError(f"drill node-replacement: no VM runs on {survivor} for the witness")
    w = await start_witness(cluster, survivor, vm, say)
    await wait_acks(w)
    pids = await cluster.qemu_pids()
    started = now()
    result.timeline.mark(started, Event(f"replace-node {victim} (witness writing on {survivor})"))
    try:
        report = await replace.replace_node(spec, cluster.spec_path, victim, say)
    except HakvmError as exc:
        result.check("replace-node", False, str(exc))
        await finish_witness(cluster, w, survivor, result)
        return result
    for t, event in report.timeline:
        result.timeline.mark(started + t, Event(f"replace-node: {event}"))
    took = ", ".join(f"{name} {s}s" for name, s in report.resync_s.items())
    result.check("replace-node", not report.problems,
                 "; ".join(report.problems) or f"resync from {survivor}: {took}")  # fmt: skip
    # Read back on the new copy: block mode promotes it once UpToDate (a monitor later).
    promoted = await _wait_primary(cluster, victim, w.vm, PROMOTED_WAIT_S)
    await finish_witness(cluster, w, victim if promoted else survivor, result)
    after = await cluster.qemu_pids()
    result.check(
        "no VM stopped",
        after == pids and report.untouched is True,
        f"QEMU {pids} -> {after}; Pacemaker's operation history "
        f"{'unchanged' if report.untouched else 'changed'}",
    )
    copies = {
        f"{vm.name}@{node.name}": await cluster.drbd(node.name, vm.name)
        for vm in spec.vms
        for node in spec.nodes
    }
    whole = {k: f"{d.disk}/{d.peer_disk}" if d else "down" for k, d in copies.items()}
    result.check(
        "every copy UpToDate on both nodes",
        all(v == "UpToDate/UpToDate" for v in whole.values()),
        ", ".join(f"{k} {v}" for k, v in whole.items()),
    )
    return result
