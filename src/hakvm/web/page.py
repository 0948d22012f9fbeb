"""The page: jinja2 (autoescaped) from a ClusterView, the timeline's SVG inline. It refreshes
itself (a meta refresh at the view's own interval: no script)."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path

import jinja2
from markupsafe import Markup

from hakvm.ops.status import DrbdStatus
from hakvm.ops.view import ClusterView
from hakvm.web.svg import DEFAULT_WINDOW, WINDOWS, stamp, timeline_svg

EVENTS_LISTED = 40
MIN_REFRESH_S = 2


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = duration
    env.filters["stamp"] = stamp
    env.filters["drbd"] = drbd_text
    return env


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def drbd_text(d: DrbdStatus) -> str:
    text = f"{d.node}: {d.role} {d.disk}/{d.peer_disk}"
    if d.connection != "Connected":
        text += f" {d.connection}"
    if d.sync_percent is not None:
        text += f", {d.sync_percent:.1f}% synced"
    if d.sync_eta_s is not None:
        text += f", ETA {duration(d.sync_eta_s)}"
    return text


def window_of(name: str | None) -> str:
    return name if name in WINDOWS else DEFAULT_WINDOW


def render_page(cluster: str, view: ClusterView | None, window: str | None = None) -> str:
    """The whole page; `view` None: no refresh has answered yet."""
    shown = window_of(window)
    every = max(MIN_REFRESH_S, round(view.every_s)) if view else MIN_REFRESH_S
    # timeline_svg escapes every text it draws
    svg = Markup(timeline_svg(view, WINDOWS[shown])) if view else Markup("")
    events = list(reversed(view.timeline))[:EVENTS_LISTED] if view else []
    return environment().get_template("page.html.j2").render(
        cluster=cluster, view=view, report=view.report if view else None, svg=svg,
        events=events, windows=list(WINDOWS), window=shown, refresh=every,
        now=view.refreshed if view else time.time(),
    )  # fmt: skip
