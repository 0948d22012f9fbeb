"""What `hakvm serve` shows, gathered on one session kept open: `hakvm status`'s report, each
node's BMC as Pacemaker's fence device for it sees it, and a timeline of what happened.

The timeline merges four sources, most trusted first:
- Pacemaker's fence history (crm_mon, of the node whose view the report uses);
- the events the nodes' alert agent recorded as they happened (remote/events.py), read in
  the same batch as the status probes: fencing, nodes lost and back, failed operations, and
  the failovers and migrations their VM starts and migrations tell;
- what the server itself saw change between two refreshes (`Observer`): health, node
  states, where each VM runs (so a failover shows even where no agent records events);
- the drills run from this machine (ops/drills.py).
A fencing, failover, migration or failure another source already told (same kind and
subject, within CROSS_SOURCE_S) is dropped; node and health changes are facets of their own
(the agent's "node02 lost", the server's "node02 unreachable over SSH") and all kept.
Everything but `poll` is pure: unit tests replay recorded answers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from hakvm.ops.drills import DrillRecord
from hakvm.ops.status import StatusReport, assess, gather, pick_view
from hakvm.remote.events import NodeEvent, events_command, parse_events, parse_time
from hakvm.remote.pacemaker import POWER_ON, ClusterState
from hakvm.remote.probes import NodeAnswer
from hakvm.remote.session import Session
from hakvm.render.cib import fence_id
from hakvm.spec.models import ClusterSpec

EventKind = Literal["fencing", "node", "failover", "migration", "failed", "drill", "health"]
Source = Literal["fence-history", "events", "observed", "drill"]
SOURCES: tuple[Source, ...] = ("fence-history", "events", "observed", "drill")  # most trusted first
CLUSTER_LANE = "cluster"
CROSS_SOURCE_S = 120.0  # the same event told by two sources: at most this far apart
TOLD_ONCE: tuple[EventKind, ...] = ("fencing", "failover", "migration", "failed")
SAME_SOURCE_S = 10.0  # the same event recorded by both nodes' agents
OBSERVED_KEEP = 500
# A refresh waits this long for a node (a loaded emulated node answers in seconds; a dead
# one would otherwise hold every refresh for the status batch's two minutes).
CONNECT_S = 15.0
BATCH_S = 30.0
VM_STARTS = ("start", "migrate_from")


class TimelineEvent(BaseModel):
    t: float = Field(description="Unix seconds")
    lane: str = Field(description="the node it happened on or to; 'cluster' for the rest")
    kind: EventKind
    subject: str = Field(description="the node, VM or scenario it is about")
    text: str
    source: Source


class BmcView(BaseModel):
    node: str
    address: str | None = Field(description="the spec's BMC address:port (none: no BMC)")
    fence_device: str
    state: Literal["monitored", "failed", "stopped", "unknown"] = Field(
        description="its fence device as Pacemaker last saw it (monitored: started, no failure)"
    )
    running_on: list[str] = []


class ClusterView(BaseModel):
    report: StatusReport
    bmcs: list[BmcView]
    timeline: list[TimelineEvent] = Field(description="oldest first")
    refreshed: float = Field(description="Unix seconds of the answers shown")
    every_s: float = Field(description="seconds between refreshes")
    error: str | None = Field(None, description="why the last refresh failed, if it did")


# --- BMCs --------------------------------------------------------------------------------------


def bmc_views(spec: ClusterSpec, state: ClusterState | None) -> list[BmcView]:
    out = []
    for node in spec.nodes:
        device = fence_id(node.name)
        address = f"{node.bmc.address}:{node.bmc.port}" if node.bmc else None
        res = state.resources.get(device) if state else None
        if state is None:
            bmc_state: Literal["monitored", "failed", "stopped", "unknown"] = "unknown"
        elif res is not None and res.failed:
            bmc_state = "failed"
        elif res is not None and res.active_on:
            bmc_state = "monitored"
        else:
            bmc_state = "stopped"
        running = list(res.active_on) if res else []
        out.append(BmcView(node=node.name, address=address, fence_device=device,
                           state=bmc_state, running_on=running))  # fmt: skip
    return out


# --- the sources -------------------------------------------------------------------------------


def fence_history(state: ClusterState | None) -> list[TimelineEvent]:
    out = []
    for e in state.fencing if state else []:
        t = parse_time(e.completed)
        if t is None:
            continue
        ok = e.status == "success"
        by = f" by {e.delegate}" if e.delegate else ""
        text = (
            f"{e.target} fenced ({e.action}){by}"
            if ok
            else f"fencing ({e.action}) of {e.target}{by}: {e.status}"
        )
        kind: EventKind = "fencing" if ok else "failed"
        if e.action == POWER_ON and ok:  # unfencing: a node fenced off powered on again
            text, kind = f"{e.target} powered on through its fence device{by}", "node"
        out.append(TimelineEvent(t=t, lane=e.target, kind=kind,
                                 subject=e.target, text=text, source="fence-history"))  # fmt: skip
    return out


def _failed(e: NodeEvent) -> bool:
    if e.status not in (None, 0):
        return True
    if e.rc is None:
        return False
    return e.rc != e.target_rc if e.target_rc is not None else e.rc not in (0, 7)


@dataclass
class _Placement:
    """Where each VM last started, and when each node was last lost (for failovers)."""

    on: dict[str, tuple[str, float]] = field(default_factory=dict)  # vm -> node, since
    lost: dict[str, float] = field(default_factory=dict)  # node -> last seen lost

    def moved(self, vm: str, node: str, t: float) -> tuple[str, bool] | None:
        """(the node it left, whether that node was lost meanwhile) when `vm` now runs on
        another node than before; None when it did not move (or where it ran is unknown)."""
        before = self.on.get(vm)
        self.on[vm] = (node, t)
        if before is None or before[0] == node:
            return None
        return before[0], self.lost.get(before[0], float("-inf")) >= before[1]


def _event(e: NodeEvent, kind: EventKind, subject: str, text: str) -> TimelineEvent:
    return TimelineEvent(t=e.t, lane=e.target or e.recorded_by, kind=kind, subject=subject,
                         text=text, source="events")  # fmt: skip


def recorded_events(spec: ClusterSpec, events: Iterable[NodeEvent]) -> list[TimelineEvent]:
    """The alert agent's events as the timeline tells them."""
    vms = {vm.name for vm in spec.vms}
    placement = _Placement()
    out: list[TimelineEvent] = []
    for e in sorted(events, key=lambda e: e.t):
        target = e.target or e.recorded_by
        if e.kind == "fencing" and e.task == POWER_ON:  # unfencing: it comes back
            ok = e.rc in (None, 0) and not _failed(e)
            text = f"{target} powered on through its fence device" if ok else (
                f"powering {target} on failed: {e.desc or e.rc}")  # fmt: skip
            out.append(_event(e, "node" if ok else "failed", target, text))
        elif e.kind == "fencing":
            ok = e.rc in (None, 0) and not _failed(e)
            text = f"{target} fenced ({e.task or 'reboot'})" if ok else (
                f"fencing of {target} failed: {e.desc or e.rc}")  # fmt: skip
            out.append(_event(e, "fencing" if ok else "failed", target, text))
            placement.lost[target] = e.t
        elif e.kind == "node":
            out.append(_event(e, "node", target, f"{target} {e.desc or 'changed'}"))
            if e.desc == "lost":
                placement.lost[target] = e.t
        elif e.kind == "resource" and e.rsc:
            if _failed(e):
                what = f"{e.rsc} {e.task or 'operation'} on {target} failed: {e.desc or e.rc}"
                out.append(_event(e, "failed", e.rsc, what))
            elif e.rsc in vms and e.task in VM_STARTS:
                move = placement.moved(e.rsc, target, e.t)
                if e.task == "migrate_from":
                    out.append(_event(e, "migration", e.rsc, f"{e.rsc} live-migrated to {target}"))
                elif move is not None:
                    source, lost = move
                    kind: EventKind = "failover" if lost else "migration"
                    how = "failed over" if lost else "moved (stop/start)"
                    out.append(_event(e, kind, e.rsc, f"{e.rsc} {how}: {source} -> {target}"))
    return out


def drill_events(records: Iterable[DrillRecord]) -> list[TimelineEvent]:
    out = []
    for r in records:
        verdict = "PASSED" if r.passed else "FAILED"
        rec = f", recovery {r.recovery_s:.1f}s" if r.recovery_s is not None else ""
        out.append(TimelineEvent(t=r.finished, lane=CLUSTER_LANE, kind="drill",
                                 subject=r.scenario, text=f"drill {r.scenario}: {verdict}{rec}",
                                 source="drill"))  # fmt: skip
    return out


@dataclass
class Observer:
    """What the server saw change from one refresh to the next (kept in memory)."""

    events: deque[TimelineEvent] = field(default_factory=lambda: deque(maxlen=OBSERVED_KEEP))
    last: StatusReport | None = None
    placement: _Placement = field(default_factory=_Placement)

    def add(self, t: float, lane: str, kind: EventKind, subject: str, text: str) -> None:
        self.events.append(TimelineEvent(t=t, lane=lane, kind=kind, subject=subject, text=text,
                                         source="observed"))  # fmt: skip

    def observe(self, report: StatusReport, now: float) -> None:
        last, self.last = self.last, report
        if last is not None and last.health != report.health:
            why = f": {report.problems[0]}" if report.problems else " again"
            self.add(now, CLUSTER_LANE, "health", "health", f"{report.health}{why}")
        before = {n.name: n for n in last.nodes} if last else {}
        for node in report.nodes:
            was = before.get(node.name)
            if node.state not in ("online", "standby", "maintenance") or not node.reachable:
                self.placement.lost[node.name] = now
            if was is None:
                continue
            if node.state not in (was.state, "unknown"):
                self.add(now, node.name, "node", node.name, f"{node.name} {node.state}"
                         f" (was {was.state})")  # fmt: skip
            if was.reachable != node.reachable:
                how = "reachable again" if node.reachable else "unreachable over SSH"
                self.add(now, node.name, "node", node.name, f"{node.name} {how}")
        if report.seen_from is None:
            return  # no view of Pacemaker: where VMs run is unknown, not changed
        for vm in report.vms:
            if len(vm.running_on) != 1:
                if vm.state == "failed" and (not last or _vm_state(last, vm.name) != "failed"):
                    self.add(now, CLUSTER_LANE, "failed", vm.name, f"{vm.name} failed")
                continue
            where = vm.running_on[0]
            move = self.placement.moved(vm.name, where, now)
            if move is not None:
                source, lost = move
                how = "failed over" if lost else "moved"
                self.add(now, where, "failover" if lost else "migration", vm.name,
                         f"{vm.name} {how}: {source} -> {where}")  # fmt: skip


def _vm_state(report: StatusReport, vm: str) -> str:
    return next((v.state for v in report.vms if v.name == vm), "unknown")


def merge(events: Iterable[TimelineEvent]) -> list[TimelineEvent]:
    """Oldest first, each event once: one another (more trusted) source told is dropped, and
    so is one both nodes' agents recorded."""
    rank = {s: i for i, s in enumerate(SOURCES)}
    kept: dict[tuple[str, str], list[TimelineEvent]] = {}
    for e in sorted(events, key=lambda e: (rank[e.source], e.t)):
        same = kept.setdefault((e.kind, e.subject), [])
        if any(
            (k.source != e.source and e.kind in TOLD_ONCE and abs(k.t - e.t) <= CROSS_SOURCE_S)
            or (k.source == e.source != "observed" and k.text == e.text
                and abs(k.t - e.t) <= SAME_SOURCE_S)
            for k in same
        ):  # fmt: skip
            continue
        same.append(e)
    return sorted((e for group in kept.values() for e in group), key=lambda e: e.t)


# --- the view ----------------------------------------------------------------------------------


def assemble(
    spec: ClusterSpec,
    answers: Mapping[str, NodeAnswer],
    observer: Observer,
    drills: Iterable[DrillRecord],
    *,
    now: float,
    every: float,
) -> ClusterView:
    """The view of one refresh (the observer takes note of it)."""
    report = assess(spec, answers)
    _, state = pick_view(answers)
    observer.observe(report, now)
    recorded = [e for a in answers.values() for e in parse_events(a.text("events"))]
    timeline = merge([*fence_history(state), *recorded_events(spec, recorded),
                      *observer.events, *drill_events(drills)])  # fmt: skip
    return ClusterView(report=report, bmcs=bmc_views(spec, state), timeline=timeline,
                       refreshed=now, every_s=every)  # fmt: skip


async def poll(
    spec: ClusterSpec,
    spec_path: Path,
    every: float,
    publish: Callable[[ClusterView], None],
    drills: Callable[[], list[DrillRecord]],
) -> None:
    """Refresh the view every `every` seconds on one session (a node's connection is made
    again once it was lost), until cancelled. A refresh that fails for any other reason
    keeps the last view, with the error."""
    observer = Observer()
    last: ClusterView | None = None
    seen_from: str | None = None
    async with Session(spec, spec_path, connect_timeout=CONNECT_S) as session:
        while True:
            try:
                answers = await gather(session, seen_from, [events_command()], BATCH_S)
                last = assemble(spec, answers, observer, drills(), now=time.time(), every=every)
                seen_from = last.report.seen_from
            except Exception as exc:  # the view must outlive any refresh's failure
                if last is None:
                    last = assemble(spec, {}, observer, [], now=time.time(), every=every)
                last = last.model_copy(update={"error": f"{type(exc).__name__}: {exc}"})
            publish(last)
            await asyncio.sleep(every)
