"""The timeline as a picture, drawn on the server: a time axis (UTC), one lane per node and one
for the cluster, a marker per event (its shape and colour by kind), each with a hover title.

Markers are `<g class="event event-KIND">` elements (the browser test counts them); the legend
uses `legend-item` so that it never counts as an event.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape

from hakvm.ops.view import CLUSTER_LANE, ClusterView, TimelineEvent

WIDTH = 960
LEFT = 96  # lane labels
RIGHT = 16
TOP = 16
LANE_H = 44
AXIS_H = 28
LEGEND_H = 26
MARKER_W = 14  # closer than this, two markers of a lane overlap
ROWS = (0, -1, 1)  # the rows of a lane, as offsets from its middle
ROW_H = 13
WINDOWS = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
DEFAULT_WINDOW = "1h"
TICKS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600, 86400)

# kind -> (colour, SVG shape around 0,0)
SHAPES = {
    "fencing": ("#c0262d", '<path d="M-7,-7 L7,7 M-7,7 L7,-7" stroke="#c0262d" '
                'stroke-width="3.5" fill="none"/>'),
    "node": ("#5f6b7a", '<circle r="6" fill="#5f6b7a"/>'),
    "failover": ("#e07b00", '<path d="M0,-8 L8,6 L-8,6 Z" fill="#e07b00"/>'),
    "migration": ("#2364aa", '<path d="M0,-8 L8,0 L0,8 L-8,0 Z" fill="#2364aa"/>'),
    "failed": ("#c0262d", '<rect x="-6" y="-6" width="12" height="12" fill="#c0262d"/>'),
    "drill": ("#7b3fa0", '<path d="M-4,-7 L4,-7 L8,0 L4,7 L-4,7 L-8,0 Z" fill="#7b3fa0"/>'),
    "health": ("#c99a00", '<circle r="6" fill="#fff" stroke="#c99a00" stroke-width="3"/>'),
}  # fmt: skip


def stamp(t: float, seconds: bool = True) -> str:
    return time.strftime("%H:%M:%S" if seconds else "%H:%M", time.gmtime(t))


def lanes(view: ClusterView) -> list[str]:
    names = [n.name for n in view.report.nodes]
    extra = sorted({e.lane for e in view.timeline} - {*names, CLUSTER_LANE})
    return [*names, *extra, CLUSTER_LANE]


def _ticks(start: float, window: float) -> list[float]:
    step = next((s for s in TICKS if window / s <= 8), TICKS[-1])
    first = (int(start) // step + 1) * step
    return [float(t) for t in range(first, int(start + window) + 1, step)]


def in_window(events: Sequence[TimelineEvent], now: float, window: float) -> list[TimelineEvent]:
    return [e for e in events if now - window <= e.t <= now]


def timeline_svg(view: ClusterView, window: float) -> str:
    """The SVG of the events of the last `window` seconds before the view's refresh."""
    now = view.refreshed
    start = now - window
    rows = lanes(view)
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + LANE_H * len(rows) + AXIS_H + LEGEND_H

    def x(t: float) -> float:
        return round(LEFT + (t - start) / window * plot_w, 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" viewBox="0 0 {WIDTH} '
        f'{height}" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="timeline of the last {escape(_span(window))}">',
        '<style>text{font:12px sans-serif;fill:#333}.lane-label{font-weight:bold}'
        ".event{cursor:help}.event:hover{opacity:.7}</style>",
    ]
    for i, lane in enumerate(rows):
        y = TOP + LANE_H * i
        fill = "#f4f6f8" if i % 2 == 0 else "#ffffff"
        parts.append(f'<rect class="lane" x="{LEFT}" y="{y}" width="{plot_w}" '
                     f'height="{LANE_H}" fill="{fill}"/>')  # fmt: skip
        parts.append(f'<text class="lane-label" x="{LEFT - 8}" y="{y + LANE_H / 2 + 4}" '
                     f'text-anchor="end">{escape(lane)}</text>')  # fmt: skip
    axis_y = TOP + LANE_H * len(rows)
    parts.append(f'<line x1="{LEFT}" y1="{axis_y}" x2="{LEFT + plot_w}" y2="{axis_y}" '
                 'stroke="#888"/>')  # fmt: skip
    for t in _ticks(start, window):
        parts.append(f'<line class="tick" x1="{x(t)}" y1="{TOP}" x2="{x(t)}" y2="{axis_y + 4}" '
                     'stroke="#ddd"/>')  # fmt: skip
        label = stamp(t, seconds=window < 1800) if window < 86400 else time.strftime(
            "%d %b %H:%M", time.gmtime(t))  # fmt: skip
        parts.append(f'<text x="{x(t)}" y="{axis_y + 18}" text-anchor="middle">{label}</text>')
    parts.append(f'<text x="{LEFT + plot_w}" y="{TOP - 4}" text-anchor="end">now '
                 f"{stamp(now)} UTC</text>")  # fmt: skip
    shown = in_window(view.timeline, now, window)
    placed: dict[tuple[str, int], list[float]] = {}
    for e in shown:
        # Markers that would overlap in a lane go to a row above or below (three rows).
        row = next((r for r in ROWS if all(abs(x(e.t) - px) >= MARKER_W
                                            for px in placed.get((e.lane, r), []))), 0)  # fmt: skip
        placed.setdefault((e.lane, row), []).append(x(e.t))
        mid = TOP + LANE_H * rows.index(e.lane) + LANE_H / 2 + row * ROW_H
        _, shape = SHAPES[e.kind]
        title = f"{stamp(e.t)} UTC {e.kind}: {e.text} ({e.source})"
        parts.append(f'<g class="event event-{e.kind}" data-kind="{e.kind}" '
                     f'transform="translate({x(e.t)},{mid})"><title>{escape(title)}</title>'
                     f"{shape}</g>")  # fmt: skip
    earlier = len([e for e in view.timeline if e.t < start])
    if earlier:
        parts.append(f'<text x="{LEFT}" y="{TOP - 4}">{earlier} earlier event(s): a longer '
                     "window shows them</text>")  # fmt: skip
    parts += _legend(height - LEGEND_H / 2)
    parts.append("</svg>")
    return "\n".join(parts)


def _legend(y: float) -> list[str]:
    out = []
    for i, (kind, (_, shape)) in enumerate(SHAPES.items()):
        lx = LEFT + i * 118
        out.append(f'<g class="legend-item" transform="translate({lx + 8},{y})">{shape}'
                   f'<text x="14" y="4">{kind}</text></g>')  # fmt: skip
    return out


def _span(window: float) -> str:
    return next((name for name, s in WINDOWS.items() if s == window), f"{window:.0f}s")
