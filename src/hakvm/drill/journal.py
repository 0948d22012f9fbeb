"""A failover's components from the survivor's own record, not from the drill's 5 s poll.

The Pacemaker alert agent (docs/metrics.md) appends each event with Pacemaker's timestamp
of it: the node's loss (a `node` event, "lost"), the fencing result, each resource's start.
They are all read on the survivor's clock, so the gaps between them are exact. Each is placed
against the fault, which this machine's clock read (faults.py), through the survivor's clock
offset, measured by a `date` over SSH between two readings of this machine's clock: the
uncertainty is half that round trip, and is reported with the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hakvm.remote.events import NodeEvent, Recorded

SLACK_S = 1.0  # events this much before the fault (as placed) still count: clock jitter


@dataclass
class Components:
    """Seconds from the fault, on the survivor's clock; None where no event was recorded."""

    recorded_by: str
    uncertainty_s: float
    detected_s: float | None = None  # Pacemaker on the survivor saw the victim lost
    fenced_s: float | None = None  # the fencing of the victim succeeded
    started_s: dict[str, float] = field(default_factory=dict)  # each VM's start succeeded

    def as_dict(self) -> dict[str, Any]:
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "clock": f"{self.recorded_by}'s (Pacemaker alert timestamps)",
            "uncertainty_s": round(self.uncertainty_s, 3),
            "detected_s": r(self.detected_s),
            "fenced_s": r(self.fenced_s),
            "started_s": {vm: r(t) for vm, t in self.started_s.items()},
        }


def components(
    record: Recorded, *, fault_unix: float, victim: str, survivor: str, vms: list[str]
) -> Components:
    """The first of each event after the fault (fault_unix: this machine's clock)."""
    fault = fault_unix + record.clock.offset_s  # on the survivor's clock
    out = Components(survivor, record.clock.uncertainty_s)
    after = [
        e
        for e in record.events
        if e.recorded_by == survivor and e.t >= fault - record.clock.uncertainty_s - SLACK_S
    ]

    def first(match: Any) -> float | None:
        return next((e.t - fault for e in after if match(e)), None)

    out.detected_s = first(lambda e: _is(e, "node", victim) and e.desc == "lost")
    out.fenced_s = first(lambda e: _is(e, "fencing", victim) and e.rc == 0 and e.task != "on")
    for vm in vms:
        started = first(
            lambda e, vm=vm: _is(e, "resource", survivor)
            and e.rsc == vm
            and e.task == "start"
            and e.rc == 0
        )
        if started is not None:
            out.started_s[vm] = started
    return out


def _is(event: NodeEvent, kind: str, target: str) -> bool:
    return event.kind == kind and event.target == target
