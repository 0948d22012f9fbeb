"""`hakvm serve` without a browser: the page and the timeline's SVG rendered from recorded
states (healthy, a cut heartbeat link, node02's crash), the token rules, /status.json as
`hakvm status --json` writes it, /metrics as Prometheus parses it, and the poller on one
session of fake nodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http import HTTPStatus
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from lxml import etree, html

from hakvm.errors import InputError
from hakvm.ops import view as ops_view
from hakvm.ops.status import StatusReport
from hakvm.ops.view import ClusterView, Observer, assemble
from hakvm.remote.events import events_command, parse_events
from hakvm.remote.session import Session
from hakvm.spec.models import ClusterSpec
from hakvm.web.page import render_page
from hakvm.web.server import Handler, WebApp, make_server, read_token
from hakvm.web.svg import WINDOWS, timeline_svg
from tests.unit.fakes import FakeNodes
from tests.unit.recorded import answers, batch_entries, replaying
from tests.unit.serve_states import (
    EVERY,
    LAB,
    T0,
    crash_views,
    cut_view,
    event,
    healthy_view,
    lab_spec,
    with_events,
)

TOKEN = "s3cret-token-0123456789abcdef"


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return lab_spec()


def markers(svg: str) -> list[etree._Element]:
    root = etree.fromstring(svg.encode())
    return root.findall(".//{http://www.w3.org/2000/svg}g[@data-kind]")


def titles(svg: str) -> list[str]:
    return [m.findtext("{http://www.w3.org/2000/svg}title") or "" for m in markers(svg)]


def lane_of(svg: str, title_part: str) -> str:
    """The label of the lane whose band holds the marker titled `title_part`."""
    root = etree.fromstring(svg.encode())
    ns = "{http://www.w3.org/2000/svg}"
    marker = next(m for m in markers(svg) if title_part in (m.findtext(f"{ns}title") or ""))
    y = float(marker.get("transform", "").split(",")[1].rstrip(")"))
    for rect, label in zip(root.iter(f"{ns}rect"), root.iter(f"{ns}text"), strict=False):
        if rect.get("class") == "lane" and float(rect.get("y")) <= y < float(
            rect.get("y")) + float(rect.get("height")):  # fmt: skip
            return label.text or ""
    raise AssertionError(f"no lane at y={y}")


# --- the page and the picture ------------------------------------------------------------------


def test_healthy_page(spec: ClusterSpec) -> None:
    view = healthy_view(spec)
    page = html.fromstring(render_page("lab", view))
    assert page.get_element_by_id("health").get("data-health") == "healthy"
    assert page.get_element_by_id("problems").text_content().strip() == "none"
    rows = {r.get("data-node"): r.text_content() for r in page.xpath("//tr[@data-node]")}
    assert set(rows) == {"node01", "node02"}
    for text in rows.values():
        assert "online" in text and "reachable" in text and "DOWN" not in text
        assert "link 0 (10.88.1." in text and "link 1 (10.88.0." in text
        assert "bond0: eth1 up eth2 up" in " ".join(text.split())
        assert "10.0.2.2:623" in text and "monitored" in text  # the BMC, its fence device's
    vms = {r.get("data-vm"): " ".join(r.text_content().split())
           for r in page.xpath('//table[@id="vms"]//tr[@data-vm]')}  # fmt: skip
    assert vms["vm-a"].startswith("vm-a running node01 node01")
    assert "node01: Primary UpToDate/UpToDate" in vms["vm-a"]
    assert markers(timeline_svg(view, WINDOWS["1h"])) == []  # nothing happened


def test_cut_link_page_is_degraded_with_the_link_shown_down(spec: ClusterSpec) -> None:
    view = cut_view(spec)
    page = html.fromstring(render_page("lab", view))
    assert page.get_element_by_id("health").get("data-health") == "degraded"
    problems = [li.text_content() for li in page.xpath('//*[@id="problems"]/li')]
    assert problems[0] == "node01: knet link 0 (10.88.1.1) down"
    node01 = page.xpath('//tr[@data-node="node01"]//div[contains(@class, "link")]')
    assert [(d.get("data-link"), "bad" in d.get("class")) for d in node01] == [
        ("0", True), ("1", False),
    ]  # fmt: skip
    assert "link 0 (10.88.1.1): DOWN" in node01[0].text_content()
    svg = timeline_svg(view, WINDOWS["1h"])
    assert titles(svg) == ["06:00:10 UTC health: degraded: node01: knet link 0 (10.88.1.1) "
                           "down (observed)"]  # fmt: skip


def test_crash_and_recovery_on_the_timeline(spec: ClusterSpec) -> None:
    _, lost, _, back = crash_views(spec)
    page = html.fromstring(render_page("lab", lost))  # node02 down renders, it is no error
    assert page.get_element_by_id("health").get("data-health") == "critical"
    row = page.xpath('//tr[@data-node="node02"]')[0].text_content()
    assert "unclean" in row and "unreachable" in row
    svg = timeline_svg(back, WINDOWS["1h"])
    kinds = [m.get("data-kind") for m in markers(svg)]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "drill": 1, "node": 7, "health": 3, "fencing": 1, "failover": 1
    }
    shown = titles(svg)
    assert "06:00:45 UTC fencing: node02 fenced (reboot) by node01 (fence-history)" in shown
    assert "06:01:20 UTC failover: vm-b failed over: node02 -> node01 (events)" in shown
    assert lane_of(svg, "node02 fenced") == "node02"
    assert lane_of(svg, "vm-b failed over") == "node01"
    assert lane_of(svg, "drill node-crash") == "cluster"
    # the fencing the agent recorded too, and the failover the server saw, are told once
    assert sum("fenced" in t for t in shown) == 1 and sum("failed over" in t for t in shown) == 1
    rows = html.fromstring(render_page("lab", back)).xpath('//tr[@class="event-row"]')
    assert len(rows) == len(back.timeline) and "healthy again" in rows[0].text_content()
    vm_b = html.fromstring(render_page("lab", back)).xpath('//tr[@data-vm="vm-b"]')[0]
    assert "node01 node02 (not there)" in " ".join(vm_b.text_content().split())


def test_a_failover_shows_without_the_alert_agent(spec: ClusterSpec) -> None:
    """No events file on the nodes: the server's own refreshes tell the failover."""
    from tests.unit import serve_states

    original = serve_states.crash_events
    serve_states.crash_events = list  # type: ignore[assignment]
    try:
        back = crash_views(spec)[-1]
    finally:
        serve_states.crash_events = original
    failovers = [e for e in back.timeline if e.kind == "failover"]
    assert [(e.t - T0, e.lane, e.text, e.source) for e in failovers] == [
        (90.0, "node01", "vm-b failed over: node02 -> node01", "observed")
    ]


def test_windows_and_escaping(spec: ClusterSpec) -> None:
    back = crash_views(spec)[-1]
    assert len(markers(timeline_svg(back, WINDOWS["15m"]))) == 12  # the drill is older
    assert "1 earlier event(s)" in timeline_svg(back, WINDOWS["15m"])
    hostile = back.model_copy(deep=True)
    hostile.timeline[-1].text = '<script>alert("x")</script> & "quotes"'
    svg = timeline_svg(hostile, WINDOWS["1h"])
    etree.fromstring(svg.encode())  # still well-formed
    assert "<script>" not in svg and "<script>" not in render_page("lab", hostile)


# Lines a node's events file may hold that the agent never wrote as such: times no clock
# writes (a review on 2026-12-04 took the page down with t=1e300), and a non-UTF-8 exit
# reason the agent's JSON carried as a lone surrogate, with control characters.
ODD_TIMES = ("1e300", "NaN", "Infinity", "-1e20", "-1", "1" + "0" * 400, "true", '"1"')
ODD_TEXT = "caf\udce9 \x1b[2J\x01 failed"


def test_events_with_odd_times_are_skipped_and_odd_text_cleaned() -> None:
    lines = [f'{{"t":{t},"node":"node01","kind":"node","target":"node02"}}' for t in ODD_TIMES]
    lines.append(event(T0, "resource", desc=ODD_TEXT, rsc="vm-a"))
    (kept,) = parse_events("\n".join(lines))
    assert kept.t == T0 and kept.desc == "caf? \ufffd[2J\ufffd failed"


def test_odd_event_lines_leave_every_route_up(spec: ClusterSpec) -> None:
    lines = [f'{{"t":{t},"node":"node01","kind":"fencing","target":"node02","task":"reboot",'
             f'"rc":0,"desc":"OK"}}' for t in ODD_TIMES]  # fmt: skip
    lines.append(event(T0 - 60, "resource", target="node01", task="start", rc=1, status=0,
                       target_rc=0, desc=ODD_TEXT, rsc="vm-a"))  # fmt: skip
    seen = answers("healthy")
    with_events(seen, {"node01": lines})
    app = WebApp("lab")
    app.publish(assemble(spec, seen, Observer(), [], now=T0, every=EVERY))
    for target in ("/", "/timeline.svg", "/view.json", "/status.json", "/metrics"):
        status, _, body = get(app, target)
        assert status == 200 and b"\x1b" not in body and b"\x01" not in body, target
    svg = get(app, "/timeline.svg")[2]
    etree.fromstring(svg)  # well-formed XML: no character XML forbids
    assert "caf?" in svg.decode() and len(markers(svg.decode())) == 1


def test_the_events_read_is_bounded_in_bytes(tmp_path: Path) -> None:
    """A file with no newline (not the agent's) is read from its last MiB only."""
    path = tmp_path / "events.jsonl"
    good = event(T0, "node", target="node02", desc="lost")
    path.write_text("x" * (3 << 20) + "\n" + good + "\n")
    _, argv = events_command(str(path))
    out = subprocess.run(argv, capture_output=True, check=True, timeout=30).stdout
    assert len(out) <= 1 << 20 and [e.t for e in parse_events(out.decode())] == [T0]


# --- the HTTP side -----------------------------------------------------------------------------


def get(app: WebApp, target: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    response = app.respond(target, headers)
    return int(response.status), dict(response.headers), response.body


def test_without_a_token_every_route_answers(spec: ClusterSpec) -> None:
    app = WebApp("lab")
    assert get(app, "/")[0] == 200  # the page says it waits for the nodes
    assert get(app, "/status.json")[0] == 503 and get(app, "/metrics")[0] == 200
    app.publish(healthy_view(spec))
    for target in ("/", "/?window=6h", "/status.json", "/view.json", "/metrics", "/timeline.svg"):
        assert get(app, target)[0] == 200, target
    assert get(app, "/nothing")[0] == 404


def test_a_token_is_required_once_set(spec: ClusterSpec) -> None:
    app = WebApp("lab", TOKEN)
    app.publish(healthy_view(spec))
    for target in ("/", "/status.json", "/metrics", "/timeline.svg"):
        assert get(app, target)[0] == 401, target
        assert get(app, target, Authorization="Bearer wrong-token-000000000")[0] == 401
        assert get(app, target, Authorization=f"Bearer {TOKEN}")[0] == 200
    assert get(app, "/", Cookie="hakvm_token=wrong")[0] == 401
    assert get(app, "/?token=wrong-token-000000000")[0] == 401
    status, headers, _ = get(app, f"/?token={TOKEN}&window=6h")
    assert (status, headers["Location"]) == (303, "/?window=6h")  # the token leaves the URL
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert get(app, "/?window=6h", Cookie=cookie.split(";")[0])[0] == 200


def test_without_a_token_only_a_local_host_is_answered(spec: ClusterSpec) -> None:
    """DNS rebinding: a page whose name now resolves to 127.0.0.1 sends its own Host."""
    app = WebApp("lab", bind="127.0.0.2")
    app.publish(healthy_view(spec))
    for host in ("127.0.0.1:8480", "localhost:8480", "LOCALHOST.", "[::1]:8480", "127.0.0.2"):
        assert get(app, "/status.json", Host=host)[0] == 200, host
    assert get(app, "/status.json")[0] == 200  # no Host: not a browser
    for host in ("attacker.example:8480", "127.0.0.1.attacker.example", "evil@127.0.0.1",
                 "[::1", "localhost:x", ""):  # fmt: skip
        assert get(app, "/status.json", Host=host)[0] == 403, host
    tokened = WebApp("lab", TOKEN, bind="10.0.0.1")  # with a token, the token decides
    tokened.publish(healthy_view(spec))
    assert get(tokened, "/", Host="cluster.example", Authorization=f"Bearer {TOKEN}")[0] == 200


@pytest.mark.parametrize("token", ["abcdefgh;ijklmnopqrst", 'abcdefgh"ijklmnop,q\\r',
                                   "abcdefgh!ijklmnop:q@", "abcdefgh+ijklmnop/q=%"])  # fmt: skip
def test_any_printable_token_logs_in_by_cookie(
    token: str, tmp_path: Path, spec: ClusterSpec
) -> None:
    """A review found a token with ';' could never log in: the cookie carried it bare."""
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    assert read_token(path) == token
    app = WebApp("lab", token)
    app.publish(healthy_view(spec))
    status, headers, _ = get(app, f"/?{urllib.parse.urlencode({'token': token})}")
    assert status == 303
    cookie = SimpleCookie(headers["Set-Cookie"])  # as a browser keeps it
    sent = f"hakvm_token={cookie['hakvm_token'].value}"
    assert get(app, "/status.json", Cookie=sent)[0] == 200
    assert get(app, "/status.json", Authorization=f"Bearer {token}")[0] == 200
    path.write_text("short token\n")
    with pytest.raises(InputError, match="at least 16 printable"):
        read_token(path)


@pytest.fixture
def served(spec: ClusterSpec) -> Iterator[tuple[str, WebApp, list[str]]]:
    """A real server on 127.0.0.1 (a free port), with the token, and its log lines."""
    lines: list[str] = []
    app = WebApp("lab", TOKEN, lines.append)
    app.publish(crash_views(spec)[1])  # node02 down
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", app, lines
    finally:
        server.shutdown()
        server.server_close()


def fetch(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_server_never_logs_the_token(served: tuple[str, WebApp, list[str]]) -> None:
    base, _, lines = served
    assert fetch(f"{base}/")[0] == 401
    # urllib follows the redirect but keeps no cookie: refused again, the token logged nowhere
    assert fetch(f"{base}/?token={TOKEN}")[0] == 401
    assert fetch(f"{base}/status.json", Authorization=f"Bearer {TOKEN}")[0] == 200
    for bad in (f"GET /?token={TOKEN} HTTP/1.1 junk", f"BREW /?token={TOKEN} HTTP/1.1"):
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), 10) as raw:
            raw.sendall(f"{bad}\r\n\r\n".encode())  # requests http.server refuses
            raw.recv(200)
    request = urllib.request.Request(f"{base}/", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError, match="405"):
        urllib.request.urlopen(request, timeout=10)
    assert lines and not any(TOKEN in line for line in lines), lines
    assert '127.0.0.1 "GET /" 303' in lines and '127.0.0.1 "- -" 400' in lines
    assert not any("error serving" in line for line in lines), lines


def test_the_log_escapes_control_characters_and_idle_connections_close(
    served: tuple[str, WebApp, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _, lines = served
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), 10) as raw:
        raw.sendall(b"GET /\x1b]0;title\x07\x1b[2J HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert raw.recv(200).startswith(b"HTTP/1.0 401")
    assert not any("\x1b" in line or "\x07" in line for line in lines), lines
    assert any("/\\x1b]0;title\\x07\\x1b[2J" in line for line in lines), lines
    monkeypatch.setattr(Handler, "timeout", 0.5)
    with socket.create_connection(("127.0.0.1", port), 10) as idle:
        idle.settimeout(10)
        started = time.monotonic()
        assert idle.recv(200) == b""  # closed by the server, not by this test's 10 s
        assert time.monotonic() - started < 9


def test_a_write_is_refused_with_the_same_headers(served: tuple[str, WebApp, list[str]]) -> None:
    base, _, _ = served
    request = urllib.request.Request(f"{base}/", method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405 and refused.value.headers["Allow"] == "GET, HEAD"
    assert refused.value.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in refused.value.headers["Content-Security-Policy"]


def test_status_json_is_hakvm_status_json(served: tuple[str, WebApp, list[str]]) -> None:
    base, app, _ = served
    status, body = fetch(f"{base}/status.json", Authorization=f"Bearer {TOKEN}")
    assert status == 200
    assert app.view is not None
    assert body.decode() == app.view.report.model_dump_json(indent=2)  # what status --json prints
    data = json.loads(body)
    schema = json.loads((Path(__file__).parents[2] / "docs" / "status.schema.json").read_text())
    assert schema == StatusReport.model_json_schema()  # `hakvm status --schema`
    assert set(data) == set(schema["properties"]) and set(schema["required"]) <= set(data)
    assert StatusReport.model_validate(data) == app.view.report
    assert data["health"] == "critical" and data["nodes"][1]["reachable"] is False


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_parse_and_follow_the_view(spec: ClusterSpec) -> None:
    app = WebApp("lab")
    assert metric_values(get(app, "/metrics")[2].decode()) == {("hakvm_serve_up", ()): 0.0}
    healthy, lost, _, back = crash_views(spec)
    for view, status, vm_b_on_node01, node02 in ((healthy, 0, 0, 1), (lost, 2, 0, 0),
                                                  (back, 0, 1, 1)):  # fmt: skip
        app.publish(view)
        values = metric_values(get(app, "/metrics")[2].decode())
        assert values[("hakvm_cluster_status", ())] == status
        assert values[("hakvm_vm_active", (("node", "node01"), ("vm", "vm-b")))] == vm_b_on_node01
        assert values[("hakvm_node_online", (("node", "node02"),))] == node02
    assert values[("hakvm_vm_on_preferred_node", (("node", "node02"), ("vm", "vm-b")))] == 0
    assert values[("hakvm_vm_running", (("vm", "vm-b"),))] == 1
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=get(app, "/metrics")[2],
                               capture_output=True, check=False, timeout=60)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr


# --- the command -------------------------------------------------------------------------------


def serve(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from hakvm.cli import main

    code = main(["serve", str(LAB), *args])
    return code, capsys.readouterr().err


def test_another_address_needs_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = serve(["--bind", "0.0.0.0"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--token-file" in err
    assert serve(["--bind", "localhost"], capsys)[0] == 2  # an address, not a name
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o644)
    code, err = serve(["--bind", "10.255.255.1", "--token-file", str(token)], capsys)
    assert code == 2 and "chmod 600" in err and TOKEN not in err
    token.chmod(0o600)
    token.write_text("short\n")
    code, err = serve(["--bind", "10.255.255.1", "--token-file", str(token)], capsys)
    assert code == 2 and "at least 16" in err


def test_serve_binds_127_0_0_1_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hakvm.cli import serve as cli_serve

    bound: list[tuple[str, int]] = []

    class Server:
        def serve_forever(self) -> None: ...
        def shutdown(self) -> None: ...
        def server_close(self) -> None: ...

    def fake_server(app: WebApp, host: str, port: int) -> Server:
        bound.append((host, port))
        assert app.token is None
        return Server()

    async def no_poll(*args: Any) -> None: ...

    monkeypatch.setattr(cli_serve, "make_server", fake_server)
    monkeypatch.setattr(cli_serve.view, "poll", no_poll)
    code, err = serve([], capsys)
    assert (code, bound) == (0, [("127.0.0.1", 8480)])
    assert "http://127.0.0.1:8480/" in err and "no token" in err


def test_poll_refreshes_on_one_session_with_the_events(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = FakeNodes()
    for name, answer in answers("healthy").items():
        nodes[name].answer = replaying(answer)
    monkeypatch.setattr(Session, "fresh", lambda self, name: nodes[name])
    views: list[ClusterView] = []

    class Enough(Exception):
        pass

    def publish(view: ClusterView) -> None:
        views.append(view)
        if len(views) == 3:
            raise Enough

    calls = iter([[], RuntimeError("disk on fire"), []])

    def drills() -> list[Any]:
        result = next(calls)
        if isinstance(result, Exception):
            raise result
        return result

    with pytest.raises(Enough):
        asyncio.run(ops_view.poll(spec, LAB, 0.001, publish, drills))
    assert [v.error for v in views] == [None, "RuntimeError: disk on fire", None]
    assert [n.connects for n in nodes.nodes.values()] == [1, 1]
    for name in ("node01", "node02"):
        batches = [batch_entries(a) for a in nodes[name].argvs if batch_entries(a)]
        assert len(batches) == 3 and all("events" in b for b in batches)


def test_drill_results_are_kept_for_the_timeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hakvm.drill.harness import DrillResult
    from hakvm.drill.run import keep
    from hakvm.ops import drills

    monkeypatch.setenv("HAKVM_STATE_DIR", str(tmp_path / "state"))
    said: list[str] = []
    result = DrillResult("node-crash", recovery_s=61.2)
    result.check("fenced", True, "node02 fenced by node01")
    keep("lab", result, T0, said.append)
    (drills.drills_dir("lab") / "20990101T000000Z-garbage.json").write_text("{not json")
    kept = drills.records("lab")
    assert [(r.scenario, r.passed, r.recovery_s, r.started) for r in kept] == [
        ("node-crash", True, 61.2, T0)
    ]
    data = json.loads(next(drills.drills_dir("lab").glob("*-node-crash.json")).read_text())
    assert data["invariants"] == [{"name": "fenced", "ok": True,
                                   "detail": "node02 fenced by node01"}]  # fmt: skip
    assert said == []
    (tmp_path / "state" / "other").write_text("a file where a directory goes")
    keep("other", result, T0, said.append)  # not writable: the drill goes on, and says so
    assert len(said) == 1 and said[0].startswith("drill node-crash: result not kept")


def test_a_taken_port_is_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = serve(["--port", str(port)], capsys)
    assert (code, err) == (3, f"hakvm: cannot listen on 127.0.0.1:{port}: Address already in use\n")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_cleanly_on_a_signal_even_when_sigint_was_ignored(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """A shell's background job inherits SIGINT ignored (the lab run of 2026-12-02: the e2e
    teardown's Ctrl-C went unheard for 60 s); SIGTERM is what systemd and kill send."""
    with socket.socket() as one, socket.socket() as two:  # ports nothing listens on
        one.bind(("127.0.0.1", 0))
        two.bind(("127.0.0.1", 0))
        dead = one.getsockname()[1], two.getsockname()[1]
    spec = tmp_path / "examples" / "lab.yaml"
    spec.parent.mkdir()
    spec.write_text(LAB.read_text().replace("port: 2201,", f"port: {dead[0]},").replace(
        "port: 2202,", f"port: {dead[1]},"))  # fmt: skip
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hakvm.cli", "serve", str(spec), "--port", str(port),
         "--every", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, HAKVM_STATE_DIR=str(tmp_path / "state")),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            assert time.monotonic() < deadline, "hakvm serve did not listen within 60 s"
            time.sleep(0.2)
        time.sleep(3)  # a refresh under way (its connections refused)
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0, proc.communicate()[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _raw_answer(base: str, request: str) -> bytes:
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), 10) as raw:
        raw.sendall(request.encode())
        answer = b""
        while chunk := raw.recv(4096):  # the server closes after a refusal
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        ("BREW /<script> HTTP/1.1\r\n\r\n", b"501"),
        ("GET /<script> HTTP/1.1\r\nX-Long: " + "a" * 70000 + "\r\n\r\n", b"431"),
    ],
)
def test_http_servers_own_refusals_carry_the_headers_and_echo_nothing(
    served: tuple[str, WebApp, list[str]], sent: str, status: bytes
) -> None:
    answer = _raw_answer(served[0], sent)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == status, answer
    assert b"Content-Security-Policy: default-src 'none'" in head, head
    assert b"X-Content-Type-Options: nosniff" in head and b"Cache-Control: no-store" in head
    phrase = HTTPStatus(int(status)).phrase.encode()
    assert body == status + b" " + phrase + b"\n", answer  # nothing of the request echoed


def test_an_unreadable_request_line_gets_a_bare_answer_that_echoes_nothing(
    served: tuple[str, WebApp, list[str]],
) -> None:
    # Not a request line http.server can read: it answers as HTTP/0.9 would, no head at all.
    assert _raw_answer(served[0], "GET /<script> HTTP/1.1 junk\r\n\r\n") == b"400 Bad Request\n"
