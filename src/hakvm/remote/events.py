"""The events the nodes record as they happen, for `hakvm serve`'s timeline: the lines the
Pacemaker alert agent appends to each node's events file (read with the status batch, the
last EVENTS_TAIL of them), and the timestamps Pacemaker writes in crm_mon's XML.

Each line is one JSON object: `t` (Unix seconds, a float), `node` (the node that recorded
it), `kind` (fencing, node, resource or attribute) and Pacemaker's CRM_alert_* values:
`target` (the node the event is about), `task`, `rc`, `status`, `desc`, `rsc`, and for
resource events `target_rc` and `interval_ms`. Parsers are pure; a line that is not such an
object (cut by a rotation, say) is skipped.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from hakvm.agent.layout import EVENTS_PATH  # the alert agent's file (docs/metrics.md)
from hakvm.remote.connection import Remote

EVENTS_TAIL = 400  # lines read per node and refresh: a few days of a quiet cluster
MAX_LINE = 8192  # characters; a longer line is not the agent's
# Bytes read per node and refresh: the agent's lines are about 250 bytes, and a file without
# newlines (not the agent's) would otherwise be read whole every time.
EVENTS_TAIL_BYTES = 1 << 20


def events_command(path: str = EVENTS_PATH, tail: int = EVENTS_TAIL) -> tuple[str, list[str]]:
    """The batch entry: the last `tail` lines of the rotated file and the current one, from
    their last EVENTS_TAIL_BYTES ('' on a node that has none yet; a line cut there is not
    JSON and is skipped)."""
    script = 'cat -- "$1.1" "$1" 2>/dev/null | tail -c "$3" | tail -n "$2"'
    return ("events", ["sh", "-c", script, "sh", path, str(tail), str(EVENTS_TAIL_BYTES)])


@dataclass(frozen=True)
class NodeEvent:
    t: float
    recorded_by: str
    kind: str
    target: str | None = None
    task: str | None = None
    rc: int | None = None
    status: int | None = None
    target_rc: int | None = None
    interval_ms: int | None = None
    desc: str | None = None
    rsc: str | None = None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value):
        return int(value)
    return None


# Characters XML 1.0 forbids (the timeline is SVG) and that a terminal would act on.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Seconds since the epoch that a clock can write and a date can show (up to 2242).
_LATEST_T = float(2**33)


def _str(value: Any) -> str | None:
    """A node's text as the page and the SVG can carry it: lone surrogates (a non-UTF-8 exit
    reason, escaped by the agent's JSON) and control characters replaced."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:1024].encode("utf-8", "replace").decode("utf-8")
    return _CONTROL_RE.sub("\ufffd", text)


def _time(value: Any) -> float | None:
    """Unix seconds, or None for what no clock writes (a bool, NaN, infinity, before 1970 or
    after 2242): a date outside that would stop the page that shows it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    # Compared before float(): float() of a 400-digit integer raises.
    return float(value) if 0 <= value < _LATEST_T else None


def parse_events(text: str) -> list[NodeEvent]:
    """Every well-formed event of an events file's lines, in file order."""
    out: list[NodeEvent] = []
    for line in text.splitlines():
        if not line.strip() or len(line) > MAX_LINE:
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        t, kind, node = _time(data.get("t")), _str(data.get("kind")), _str(data.get("node"))
        if t is None or kind is None or node is None:
            continue
        out.append(
            NodeEvent(
                t=t, recorded_by=node, kind=kind, target=_str(data.get("target")),
                task=_str(data.get("task")), rc=_int(data.get("rc")),
                status=_int(data.get("status")), target_rc=_int(data.get("target_rc")),
                interval_ms=_int(data.get("interval_ms")), desc=_str(data.get("desc")),
                rsc=_str(data.get("rsc")),
            )
        )  # fmt: skip
    return out


_ISO_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d+)?\s*(Z|UTC|[+-]\d{2}:?\d{2})?$"
)


def parse_time(text: str) -> float | None:
    """Unix seconds of a time as crm_mon writes it: "2026-11-26 06:10:00Z" (with an optional
    fraction and offset; fence history) or "Thu Nov 26 05:34:42 2026" (ctime, taken as UTC,
    as the lab's nodes run). None when it is neither."""
    text = text.strip()
    if match := _ISO_RE.match(text):
        zone = match[4] or "Z"
        offset = "+00:00" if zone in ("Z", "UTC") else zone
        if ":" not in offset:
            offset = f"{offset[:3]}:{offset[3:]}"
        stamp = f"{match[1]}T{match[2]}{match[3] or ''}{offset}"
        try:
            return datetime.datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            return None
    try:
        parsed = datetime.datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None
    return parsed.replace(tzinfo=datetime.UTC).timestamp()


@dataclass(frozen=True)
class ClockOffset:
    offset_s: float  # node clock minus local clock
    uncertainty_s: float  # half the round trip of the read: it happened inside it


def clock_offset_of(answer: str, sent: float, received: float) -> ClockOffset | None:
    """Where a node's clock stood: its `date +%s.%N` answer, read between this machine's
    readings `sent` and `received` (None: not a time)."""
    try:
        remote = float(answer.strip())
    except ValueError:
        return None
    if not math.isfinite(remote):
        return None
    return ClockOffset(remote - (sent + received) / 2, (received - sent) / 2)


@dataclass(frozen=True)
class Recorded:
    """A node's events and where its clock stood against this machine's at the read."""

    events: list[NodeEvent]
    clock: ClockOffset


async def recorded(node: Remote, tail: int = EVENTS_TAIL) -> Recorded:
    """The node's events file (its last `tail` lines) and its clock offset, measured by a
    `date` of its own between two readings of this machine's clock."""
    sent = time.time()
    answer = await node.run(["date", "+%s.%N"], check=True, timeout=60)
    clock = clock_offset_of(answer.stdout, sent, time.time())
    if clock is None:
        raise ValueError(f"{node.name}: date answered {answer.stdout.strip()[:40]!r}")
    _, argv = events_command(tail=tail)
    text = (await node.run(argv, timeout=60)).stdout
    return Recorded(parse_events(text), clock)
