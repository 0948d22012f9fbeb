"""Watch a failover from the survivor's point of view and record its timeline.

Every mark comes from Pacemaker's own state (`crm_mon --output-as=xml` on the survivor),
polled once a second; times are seconds since the fault was injected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from hakvm.drill.timeline import Fault, Fenced, Lost, Running, Timeline
from hakvm.remote import pacemaker
from hakvm.remote.connection import NodeConnection, RemoteError
from hakvm.remote.pacemaker import ClusterState


async def cluster_state(conn: NodeConnection) -> ClusterState | None:
    try:
        return await pacemaker.cluster_state(conn)
    except RemoteError:
        return None


async def watch_failover(
    survivor: NodeConnection,
    failed: str,
    vms: list[str],
    inject: Callable[[], Awaitable[None]],
    timeout: float = 600,
) -> Timeline:
    """Inject the fault, then record: loss detected, node fenced, each VM running on the
    survivor. Returns when every VM runs on the survivor (or raises on timeout)."""
    timeline = Timeline()
    fenced_before = {
        (e.target, e.completed) for e in ((await cluster_state(survivor)) or ClusterState()).fencing
    }
    started = time.monotonic()
    await inject()
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
