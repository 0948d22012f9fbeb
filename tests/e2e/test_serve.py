"""`hakvm serve` on the deployed lab, in a real browser (Playwright driving Debian's chromium):
the page shows the healthy cluster, then the cut heartbeat link as degraded, then node02's
crash: its fencing and vm-b's failover appear on the SVG timeline.

About three minutes of lab time (node02's fencing and vm-b's restart on node01 are most of
it): in `make test` with the other deploy tests. It ends with node02 fenced (rebooting);
every group after it restores the snapshot it starts from.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import STATE_DIR, LabHandle, hakvm
from tests.unit.test_serve_browser import ARGS, CHROMIUM

pytestmark = [pytest.mark.e2e, pytest.mark.deploy, pytest.mark.browser]

EVERY_S = 5  # the server's refresh, and the page's


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(deployed: LabHandle, spec_file: Path, tmp_path: Path) -> Iterator[str]:
    """`hakvm serve` on 127.0.0.1 (no token: loopback), stopped with Ctrl-C at the end."""
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hakvm.cli", "serve", str(spec_file), "--port", str(port),
         "--every", str(EVERY_S)],
        env=dict(os.environ, HAKVM_STATE_DIR=str(STATE_DIR)), stdout=log, stderr=log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:  # listening once its imports are done
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "hakvm serve did not listen within 60 s"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "make deps installs Debian's chromium"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=ARGS,
        )  # fmt: skip
        try:
            yield context.new_page()
        finally:
            context.close()


def until(page: Any, url: str, what: str, check: Callable[[], bool], timeout: float) -> float:
    """Load the page every few seconds until `check` holds; seconds it took. A node down must
    render as such: every load must answer 200."""
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        response = page.goto(url)
        assert response is not None and response.status == 200, f"{url}: {response}"
        if page.locator("#health").count() and check():
            return time.monotonic() - started
        last = page.locator("body").inner_text()[:600]
        time.sleep(EVERY_S)
    pytest.fail(f"not shown within {timeout:.0f}s: {what}\nlast page:\n{last}")


def titles(page: Any, kind: str) -> list[str]:
    found: list[str] = page.locator(f"#timeline svg g.event-{kind}").evaluate_all(
        "els => els.map(e => e.querySelector('title').textContent)"
    )
    return found


@pytest.mark.extended  # a node crash and its fencing: about 8 min on the lab (docs/testing.md)
def test_serve_shows_a_cut_link_then_a_crash_and_its_failover(
    deployed: LabHandle, spec_file: Path, server: str, page: Any
) -> None:
    lab = deployed
    home = f"{server}/?window=15m"
    until(page, home, "a healthy cluster",
          lambda: page.locator("#health").get_attribute("data-health") == "healthy", 180)

    status = json.loads(page.goto(f"{server}/status.json").body())
    schema = json.loads(hakvm("status", "--schema", str(spec_file)).stdout)
    assert set(status) == set(schema["properties"]) and status["health"] == "healthy"

    assert lab.hakvm("cut", "hb").returncode == 0
    try:
        took = until(page, home, "the cut link as degraded", lambda: (
            page.locator("#health").get_attribute("data-health") == "degraded"
            and "DOWN" in page.locator('tr[data-node="node01"] .link[data-link="0"]').inner_text()
        ), 60)  # fmt: skip
        print(f"serve: cut link shown degraded after {took:.0f}s")
    finally:
        assert lab.hakvm("heal").returncode == 0

    assert lab.hakvm("kill", "node02").returncode == 0
    took = until(page, home, "node02's fencing and vm-b's failover on the timeline", lambda: (
        any("node02 fenced" in t for t in titles(page, "fencing"))
        and any("vm-b failed over" in t and "-> node01" in t for t in titles(page, "failover"))
    ), 600)  # fmt: skip
    print(f"serve: fencing and failover on the timeline {took:.0f}s after the kill")
    assert page.locator('tr[data-vm="vm-b"]').inner_text().split()[1:3] == ["running", "node01"]
