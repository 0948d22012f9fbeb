"""The Prometheus text exposition format (0.0.4), as node_exporter's textfile collector reads
it: `# HELP` and `# TYPE` once per family, then its samples; no timestamps (the collector
skips a whole file that has one); label values escaped; +Inf, -Inf and NaN spelled as the
format does."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
KINDS = ("gauge", "counter", "untyped")

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric family: its samples keep the order they were added in."""

    name: str
    help: str
    kind: str = "gauge"
    samples: dict[Labels, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name) or self.name.startswith("__"):
            raise ValueError(f"bad metric name {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"bad metric type {self.kind!r}")

    def add(self, value: float, labels: Mapping[str, str] | None = None) -> None:
        """One sample; the same label set twice keeps the first (node_exporter would drop
        the second anyway)."""
        key = tuple((k, str(v)) for k, v in (labels or {}).items())
        for name, _ in key:
            if not LABEL_RE.match(name) or name.startswith("__"):
                raise ValueError(f"{self.name}: bad label name {name!r}")
        self.samples.setdefault(key, float(value))


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def render(families: Iterable[Family]) -> str:
    """Every family with at least one sample, in the order given; one family per name."""
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        if not family.samples:
            continue
        if family.name in seen:
            raise ValueError(f"metric family {family.name} rendered twice")
        seen.add(family.name)
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples.items():
            text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            lines.append(f"{family.name}{{{text}}} {format_value(value)}" if text
                         else f"{family.name} {format_value(value)}")  # fmt: skip
    return "".join(line + "\n" for line in lines)
