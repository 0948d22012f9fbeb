"""What happened when during a drill or the demo's failover: typed marks, seconds after the
fault, each recorded once.

Code asks the timeline with a mark (`timeline.at(Fenced("node02"))`), never by matching
text; the text of a mark is what `--json` and the tables show.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Mark:
    """One thing that happened; equal marks are the same event."""

    @property
    def text(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Event(Mark):
    """A step of a drill told as it is (nothing looks it up)."""

    what: str

    @property
    def text(self) -> str:
        return self.what


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
    node: str
    seen_by: str

    @property
    def text(self) -> str:
        return f"{self.node} lost (seen by {self.seen_by})"


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
    @property
    def text(self) -> str:
        return "links healed"


@dataclass(frozen=True)
class DrbdPrimary(Mark):
    vm: str
    node: str

    @property
    def text(self) -> str:
        return f"{self.vm} DRBD Primary on {self.node}"


@dataclass(frozen=True)
class DrbdState(Mark):
    node: str
    connection: str
    disk: str

    @property
    def text(self) -> str:
        return f"{self.node} DRBD {self.connection} {self.disk}"


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
    vm: str
    node: str

    @property
    def text(self) -> str:
        return f"{self.vm} responsive on {self.node}"


@dataclass(frozen=True)
class MovedForSetUp(Mark):
    vm: str
    node: str
    kind: str

    @property
    def text(self) -> str:
        return f"set-up: {self.vm} moved to {self.node} ({self.kind})"


@dataclass(frozen=True)
class LiveMigrated(Mark):
    vm: str
    node: str
    downtime_ms: int | None

    @property
    def text(self) -> str:
        return f"{self.vm} live-migrated to {self.node} (downtime {self.downtime_ms} ms)"


@dataclass(frozen=True)
class Degraded(Mark):
    problem: str

    @property
    def text(self) -> str:
        return f"status degraded: {self.problem}"


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
