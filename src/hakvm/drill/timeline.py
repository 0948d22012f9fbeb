"""What happened when during a drill or the demo's failover: typed marks, seconds after the
fault, each recorded once.

Code asks the timeline with a mark (`timeline.at(Fenced("node02"))`), never by matching
text; the text of a mark is what `--json` and the tables show.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar


@dataclass(frozen=True)
class Mark:
    """One thing that happened; equal marks are the same event. Its text is its template
    filled with its fields."""

    template: ClassVar[str] = ""

    @property
    def text(self) -> str:
        return self.template.format(**{f.name: getattr(self, f.name) for f in fields(self)})

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Event(Mark):
    """A step of a drill told as it is (nothing looks it up)."""

    template = "{what}"
    what: str


@dataclass(frozen=True)
class Fault(Mark):
    node: str
    scenario: str = ""

    @property
    def text(self) -> str:
        how = f" ({self.scenario})" if self.scenario else ""
        return f"fault injected{how} on {self.node}"


@dataclass(frozen=True)
class Lost(Mark):
    template = "{node} lost (seen by {seen_by})"
    node: str
    seen_by: str


@dataclass(frozen=True)
class Fenced(Mark):
    node: str
    by: str = ""  # the fencing node, when the mark names it
    race_lost: bool = False  # a partition's fence race the preferred survivor lost

    @property
    def text(self) -> str:
        by = f" by {self.by}" if self.by else ""
        return f"{self.node} fenced{by}{' (race lost)' if self.race_lost else ''}"


@dataclass(frozen=True)
class LinksHealed(Mark):
    template = "links healed"


@dataclass(frozen=True)
class DrbdPrimary(Mark):
    template = "{vm} DRBD Primary on {node}"
    vm: str
    node: str


@dataclass(frozen=True)
class DrbdState(Mark):
    template = "{node} DRBD {connection} {disk}"
    node: str
    connection: str
    disk: str


@dataclass(frozen=True)
class Running(Mark):
    vm: str
    node: str
    again: bool = False  # restarted in place

    @property
    def text(self) -> str:
        return f"{self.vm} running {'again ' if self.again else ''}on {self.node}"


@dataclass(frozen=True)
class Responsive(Mark):
    template = "{vm} responsive on {node}"
    vm: str
    node: str


@dataclass(frozen=True)
class MovedForSetUp(Mark):
    template = "set-up: {vm} moved to {node} ({kind})"
    vm: str
    node: str
    kind: str


@dataclass(frozen=True)
class LiveMigrated(Mark):
    template = "{vm} live-migrated to {node} (downtime {downtime_ms} ms)"
    vm: str
    node: str
    downtime_ms: int | None


@dataclass(frozen=True)
class QuorumLost(Mark):
    template = "{node} lost quorum (seen by itself)"
    node: str


@dataclass(frozen=True)
class VmsStopped(Mark):
    template = "{node} stopped its VMs"
    node: str


@dataclass(frozen=True)
class Degraded(Mark):
    template = "status degraded: {problem}"
    problem: str


@dataclass
class Timeline:
    marks: list[tuple[float, Mark]] = field(default_factory=list)

    def mark(self, t: float, what: Mark) -> None:
        if not any(m == what for _, m in self.marks):
            self.marks.append((round(t, 1), what))

    def at(self, what: Mark | str) -> float | None:
        """When `what` happened (a mark, or its text); None if it did not."""
        return next((t for t, m in self.marks if what in (m, m.text)), None)

    def as_dict(self) -> list[dict[str, object]]:
        return [{"t": t, "event": m.text} for t, m in self.marks]
