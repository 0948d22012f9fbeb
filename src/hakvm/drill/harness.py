"""The drills' harness: their session (Cluster: connections on demand, and what a drill
reads from the cluster), results and invariants."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakvm import __version__
from hakvm.agent.layout import DRILLS_DIR
from hakvm.drill import journal
from hakvm.drill.timeline import Timeline
from hakvm.errors import StateError
from hakvm.ops.status import StatusReport, assess, collect
from hakvm.remote import drbd, events, pacemaker
from hakvm.remote.connection import RemoteError
from hakvm.remote.drbd import DrbdResource
from hakvm.remote.pacemaker import ClusterState, PacemakerError
from hakvm.remote.session import Session
from hakvm.spec.models import ClusterSpec, FenceAction

Say = Callable[[str], None]
# How long the journal is read again for VM starts the alert agent has not written yet. Each
# alert is a Python process on the node, and a failover fires dozens at once: on the loaded
# TCG lab (node-crash-with-qdevice, 2026-12-02) vm-a's start, 348 s after the fault by its
# own timestamp, was still not in the file 60 s after the drill saw the VM answer (374 s).
JOURNAL_WAIT_S = 180.0


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
    # The failover's components from the survivor's own events (drill/journal.py).
    journal: dict[str, Any] | None = None

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
            "journal": self.journal,
        }


def fault_moment(at: float | None, otherwise: float) -> float:
    """The fault's moment on time.monotonic()'s clock: from `at`, the injector's own reading
    (Unix time on this machine, taken right at the fault: not before a command started),
    else `otherwise`."""
    return otherwise if at is None else time.monotonic() - (time.time() - at)


def result_record(result: DrillResult, finished: float) -> bytes:
    """The file the nodes keep of a scenario's last drill (the agent exports it as
    hakvm_drill_*; docs/metrics.md): JSON, one object."""
    return json.dumps({
        "format": 1,
        "scenario": result.scenario,
        "passed": result.passed,
        "recovery_s": result.recovery_s,
        "finished": round(finished, 3),
        "failed_invariants": [i.name for i in result.invariants if not i.ok],
        "hakvm_version": __version__,
    }, indent=2).encode() + b"\n"  # fmt: skip


# --- reading the cluster -------------------------------------------------------------------


class Cluster(Session):
    """The drill's session: connections made on demand (a loaded survivor gets 30 s to
    answer), a crashed node's connection simply dropped; and what the drill reads."""

    def __init__(
        self,
        spec: ClusterSpec,
        spec_path: Path,
        witness_vm: str | None = None,
        victim: str | None = None,
    ) -> None:
        super().__init__(spec, spec_path, connect_timeout=30)
        self.chosen_victim = victim  # --victim: the node a node failure takes down
        # Real nodes: the one VM whose disk the witness may overwrite (its last 16 MiB),
        # named by the user; it decides which node fails. The lab: any VM (BIOS-only).
        self.witness_vm = witness_vm
        self.problems: list[str] = []  # what the last wait_healthy saw
        self.only_failures: list[str] = []  # failed actions, when they were all it saw
        self.inquorate: list[str] = []  # nodes whose own partition had no quorum, last seen

    async def record(self, result: DrillResult) -> list[str]:
        """Leave the result on every node (DRILLS_DIR/<scenario>.json, replaced whole); the
        nodes that could not take it (the drill itself is not failed for that)."""
        data, missed = result_record(result, time.time()), []
        for name in [n.name for n in self.spec.nodes]:
            try:
                conn = await self.conn(name)
                await conn.write_file(f"{DRILLS_DIR}/{result.scenario}.json", data, 0o644)
            except RemoteError:
                await self.drop(name)
                missed.append(name)
        return missed

    async def state(self, name: str) -> ClusterState | None:
        try:
            return await pacemaker.cluster_state(await self.conn(name))
        except PacemakerError:
            return None  # it answered: ask again later on the same connection
        except RemoteError:
            await self.drop(name)
            return None

    async def report(self) -> StatusReport:
        """What `hakvm status` says now (a session of its own: a node that is off answers as
        unreachable)."""
        return assess(self.spec, await collect(self.spec, self.spec_path))

    async def healthy(self) -> tuple[bool, list[str]]:
        report = await self.report()
        self.inquorate = [n.name for n in report.nodes if n.quorate is False]
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

    async def power_on_fenced(self, say: Say) -> list[str]:
        """With fencing.action off a fenced node stays off: power each node an answering
        node sees offline back on through its fence device, as its admin would."""
        if self.spec.cluster.fencing.action is not FenceAction.OFF:
            return []
        names = [n.name for n in self.spec.nodes]
        for name in names:
            state = await self.state(name)
            if state is None or name not in state.nodes or not state.nodes[name].online:
                continue
            # Offline and clean: fenced (an unclean node is still waiting for its fencing).
            off = [
                n for n in names
                if n in state.nodes and not state.nodes[n].online and not state.nodes[n].unclean
            ]  # fmt: skip
            powered = []
            for target in off:
                say(f"fencing.action is off: powering {target} on (stonith_admin --unfence)")
                timeout_s = self.spec.cluster.timing.stonith_timeout_s
                try:
                    await pacemaker.power_on(await self.conn(name), target, timeout_s)
                    powered.append(target)
                except RemoteError as exc:
                    say(f"could not power {target} on: {exc}")
            return powered
        return []

    async def journal(
        self, survivor: str, *, fault_unix: float, victim: str, vms: list[str]
    ) -> dict[str, Any] | None:
        """The failover's components as the survivor recorded them (None: it did not
        answer); read once the failover is over, again for a while until every VM's start
        is there: the alert agent writes it seconds after the start on a loaded node (lab,
        2026-12-02: read at once, both starts were missing)."""
        deadline, found = time.monotonic() + JOURNAL_WAIT_S, None
        while True:
            try:
                record = await events.recorded(await self.conn(survivor), tail=2000)
            except (RemoteError, ValueError):  # keep what an earlier read found
                return found.as_dict() if found is not None else None
            found = journal.components(
                record, fault_unix=fault_unix, victim=victim, survivor=survivor, vms=vms
            )
            if set(vms) <= set(found.started_s) or time.monotonic() > deadline:
                return found.as_dict()
            await asyncio.sleep(3)

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
        return state.placement(vm.name for vm in self.spec.vms)

    async def victim(self) -> str:
        """The node to fail: the one named (--victim), else the witness VM's, else the one
        running the most VMs."""
        if self.chosen_victim is not None:
            return self.chosen_victim
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


async def check_healthy_again(
    cluster: Cluster, result: DrillResult, timeout: float, say: Say
) -> None:
    # Healthy once is the invariant: a later SSH timeout on a loaded node would not undo it.
    powered = await cluster.power_on_fenced(say)
    cleared: list[str] = []
    waited = await cluster.wait_healthy(timeout, say, cleared)
    detail = (
        f"healthy {waited:.0f}s after recovery" if waited >= 0 else "; ".join(cluster.problems[:4])
    )
    if cleared:
        detail += f" (failed actions recorded and cleaned up: {'; '.join(cleared)})"
    if powered:
        detail += f" ({', '.join(powered)} powered on first: fencing.action off)"
    result.check("no split-brain, back to healthy", waited >= 0, detail)


def fence_successes(state: ClusterState | None, target: str) -> set[str]:
    if state is None:
        return set()
    return {
        e.completed
        for e in state.fencing
        if e.target == target and e.status == "success" and e.action != pacemaker.POWER_ON
    }


def busiest(placement: dict[str, list[str]], spec: ClusterSpec) -> str:
    """The node running the most VMs; on a tie, the one fencing would not keep."""
    counts = {n.name: 0 for n in spec.nodes}
    for nodes in placement.values():
        for n in nodes:
            counts[n] = counts.get(n, 0) + 1
    keep = spec.cluster.fencing.preferred_survivor if spec.cluster.fencing else None
    return max(counts, key=lambda n: (counts[n], n != keep))
