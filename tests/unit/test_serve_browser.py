"""`hakvm serve` in a real browser: Playwright (PyPI) driving Debian 12's own chromium
(Playwright's own browser download cannot work here, and is never called). The server is
hakvm serve's app on 127.0.0.1 with a token, fed the recorded states one after the other:
a healthy cluster, the heartbeat link cut, then node02's crash and recovery, which must
show on the SVG timeline. The last page is saved as docs/serve.png (the README shows it).

About 10-20 s (chromium's start on a loaded 2-core machine): in `make test`, not in
`make test-fast`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hakvm.ops.view import ClusterView
from hakvm.web.server import WebApp, make_server
from tests.unit.serve_states import crash_views, cut_view, healthy_view, lab_spec

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TOKEN = "browser-test-token-0123456789"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "serve.png"


@pytest.fixture
def served() -> Iterator[tuple[str, WebApp]]:
    app = WebApp("lab", TOKEN)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", app
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make deps: tools/install-debs chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user data dir
            executable_path=str(CHROMIUM), headless=True, args=ARGS,
            viewport={"width": 1160, "height": 900},
        )  # fmt: skip
        try:
            yield context.new_page()
        finally:
            context.close()


def marker_titles(page: Any) -> list[str]:
    titles: list[str] = page.locator("#timeline svg g.event").evaluate_all(
        "els => els.map(e => e.querySelector('title').textContent)"
    )
    return titles


def show(page: Any, app: WebApp, view: ClusterView) -> None:
    app.publish(view)
    page.reload()


def test_the_page_follows_a_cut_link_then_a_crash_and_its_recovery(
    served: tuple[str, WebApp], browser_page: Any
) -> None:
    base, app = served
    page = browser_page
    spec = lab_spec()
    app.publish(healthy_view(spec))

    assert page.goto(f"{base}/").status == 401  # no token, nothing shown
    page.goto(f"{base}/?token={TOKEN}")  # the cookie is set, the token leaves the URL
    assert page.url == f"{base}/"
    assert page.locator("#health").get_attribute("data-health") == "healthy"
    assert page.locator("#problems").inner_text() == "none"
    assert page.locator("#timeline svg g.event").count() == 0

    show(page, app, cut_view(spec))
    assert page.locator("#health").inner_text() == "DEGRADED"
    assert page.locator("#problems li").first.inner_text() == "node01: knet link 0 (10.88.1.1) down"
    link0 = page.locator('tr[data-node="node01"] .link[data-link="0"]')
    assert link0.inner_text() == "link 0 (10.88.1.1): DOWN"
    assert link0.evaluate("e => getComputedStyle(e).color") == "rgb(192, 38, 45)"  # red
    assert marker_titles(page) == [
        "06:00:10 UTC health: degraded: node01: knet link 0 (10.88.1.1) down (observed)"
    ]

    _, lost, over, back = crash_views(spec)
    show(page, app, lost)
    assert page.locator("#health").inner_text() == "CRITICAL"
    assert "unreachable" in page.locator('tr[data-node="node02"]').inner_text()
    # The page refreshes itself (meta refresh at the view's interval): no reload from here.
    app.publish(over.model_copy(update={"every_s": 2.0}))
    page.wait_for_selector('#health[data-health="degraded"]', timeout=15_000)
    app.publish(back)
    page.wait_for_selector('#health[data-health="healthy"]', timeout=15_000)

    markers = page.locator("#timeline svg g.event")
    assert markers.count() == 13
    kinds = markers.evaluate_all("els => els.map(e => e.dataset.kind)")
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "drill": 1, "node": 7, "health": 3, "fencing": 1, "failover": 1,
    }  # fmt: skip
    titles = marker_titles(page)
    assert "06:00:45 UTC fencing: node02 fenced (reboot) by node01 (fence-history)" in titles
    assert "06:01:20 UTC failover: vm-b failed over: node02 -> node01 (events)" in titles
    fencing = page.locator("#timeline svg g.event-fencing")
    fencing.hover()  # on screen, inside the picture, where a pointer can reach it
    box, svg = fencing.bounding_box(), page.locator("#timeline svg").bounding_box()
    assert box is not None and svg is not None and svg["x"] < box["x"] < svg["x"] + svg["width"]
    assert "vm-b failed over" in page.locator("#events").inner_text()
    page.get_by_role("link", name="15m", exact=True).click()  # the crash, closer
    assert page.url == f"{base}/?window=15m"
    assert page.locator("#timeline svg g.event").count() == 12  # the drill is older
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
