"""The demo's failover (`hakvm demo`): the steps a user could type, strung together, and a
watch of the failover from the survivor's point of view. The CLI shows them.

Every timeline mark comes from Pacemaker's own state (`crm_mon --output-as=xml` on the
survivor), polled every 2 s; times are seconds since the fault, as the lab read it right
after the kill.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from hakvm.drill.harness import fault_moment
from hakvm.drill.timeline import Event, Fault, Fenced, Lost, Running, Timeline
from hakvm.remote import pacemaker
from hakvm.remote.connection import NodeConnection, RemoteError
from hakvm.remote.pacemaker import ClusterState

HEALTHY_WAIT_S = 600.0
REJOIN_WAIT_S = 600.0


def run_hakvm(*args: str, quiet: bool = False) -> int:
    """Run a hakvm subcommand as its own process (what the user would type)."""
    argv = [sys.executable, "-m", "hakvm.cli", *args]
    return subprocess.run(argv, capture_output=quiet, check=False).returncode


def wait_healthy(spec_path: Path, timeout: float = HEALTHY_WAIT_S) -> float | None:
    """Seconds until `hakvm status` exits 0 (healthy), or None after timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if run_hakvm("status", str(spec_path), quiet=True) == 0:
            return time.monotonic() - started
        time.sleep(10)
    return None


async def placement(conn: NodeConnection, vms: list[str]) -> dict[str, list[str]]:
    """VM -> the nodes it is active on, as `conn`'s node sees it (none when it cannot say)."""
    state = await cluster_state(conn)
    if state is None:
        return {vm: [] for vm in vms}
    return {vm: state.active_on(vm) for vm in vms}


async def cluster_state(conn: NodeConnection) -> ClusterState | None:
    try:
        return await pacemaker.cluster_state(conn)
    except RemoteError:
        return None


async def watch_failover(
    survivor: NodeConnection,
    failed: str,
    vms: list[str],
    inject: Callable[[], Awaitable[float | None]],
    timeout: float = 600,
) -> Timeline:
    """Inject the fault, then record: loss detected, node fenced, each VM running on the
    survivor. Returns when every VM runs on the survivor (or raises on timeout)."""
    timeline = Timeline()
    fenced_before = {
        (e.target, e.completed) for e in ((await cluster_state(survivor)) or ClusterState()).fencing
    }
    before = time.monotonic()
    started = fault_moment(await inject(), before)
    timeline.mark(0.0, Fault(failed))
    while True:
        now = time.monotonic() - started
        state = await cluster_state(survivor)
        if state is not None:
            node = state.nodes.get(failed)
            if node is not None and (not node.online or node.unclean):
                timeline.mark(now, Lost(failed, survivor.name))
            for event in state.fencing:
                if (
                    event.target == failed
                    and event.status == "success"
                    and (event.target, event.completed) not in fenced_before
                ):
                    timeline.mark(now, Fenced(failed, by=event.delegate or survivor.name))
            done = True
            for vm in vms:
                res = state.resources.get(vm)
                if res is not None and res.running_on == [survivor.name]:
                    timeline.mark(now, Running(vm, survivor.name))
                else:
                    done = False
            if done:
                return timeline
        if now > timeout:
            raise RemoteError(
                f"failover of {', '.join(vms)} to {survivor.name} not complete after "
                f"{timeout:.0f}s; timeline so far: {timeline.as_dict()}"
            )
        await asyncio.sleep(2)  # each crm_mon costs CPU on the survivor


async def wait_rejoined(survivor: NodeConnection, victim: str, timeline: Timeline) -> None:
    """Until `survivor` sees `victim` online again (fencing rebooted it); marks when."""
    started = time.monotonic()
    while time.monotonic() - started < REJOIN_WAIT_S:
        state = await cluster_state(survivor)
        if state and victim in state.nodes and state.nodes[victim].online:
            rejoined = time.monotonic() - started + timeline.marks[-1][0]
            timeline.mark(rejoined, Event(f"{victim} rejoined"))
            return
        await asyncio.sleep(3)
    raise RemoteError(f"{victim} did not rejoin within {REJOIN_WAIT_S:.0f}s")


def recovery_s(timeline: Timeline) -> float | None:
    """Fault to every VM running on the survivor."""
    running = [t for t, mark in timeline.marks if isinstance(mark, Running)]
    return max(running) if running else None
