"""The Pacemaker alert agent: fed Pacemaker's CRM_alert_* environments (tests/unit/data/agent/
alert-*.env), it appends one JSON line per event (the format docs/metrics.md documents and
`hakvm serve` reads), never interleaves concurrent writers, rotates at 1 MiB keeping one old
file, and forwards the same JSON to a webhook whose URL it checks strictly (a server on
127.0.0.1 here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from hakvm.agent import events
from tests.unit.agent_samples import DATA


def env(name: str, **override: str) -> dict[str, str]:
    lines = (DATA / "agent" / f"alert-{name}.env").read_text().splitlines()
    return {**dict(line.split("=", 1) for line in lines if line), **override}


def test_each_kind_becomes_one_json_object() -> None:
    assert events.event(env("fencing"), "node01") == {
        "t": 1795672931.421093, "node": "node01", "kind": "fencing", "target": "node02",
        "task": "reboot", "rc": 0, "status": None,
        "desc": "Operation reboot of node02 by node01 for pacemaker-controld.1026@node01: OK "
                "(ref=3b1a9f6e-5d0e-4c55-9c1f-0f2f6b1e6a41)",
        "rsc": None,
    }  # fmt: skip
    assert events.event(env("node"), "node01") == {
        "t": 1795672862.009051, "node": "node01", "kind": "node", "target": "node02",
        "task": None, "rc": None, "status": None, "desc": "lost", "rsc": None, "nodeid": "2",
    }  # fmt: skip
    failed = events.event(env("resource-failed"), "node01")
    assert (failed["rsc"], failed["task"], failed["rc"], failed["desc"]) == (
        "vm-a", "monitor", 7, "not running")
    assert (failed["interval_ms"], failed["target_rc"], failed["status"]) == (30000, 0, 0)
    attribute = events.event(env("attribute"), "node01")
    assert (attribute["attribute"], attribute["value"]) == ("hakvm-resyncing-vm-b", "1")


def test_main_appends_one_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for kind in ("node", "fencing", "resource", "attribute"):
        assert events.main(env(kind, CRM_alert_recipient=str(path))) == 0
    lines = path.read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["node", "fencing", "resource",
                                                            "attribute"]  # fmt: skip
    assert all(line.startswith('{"t":') for line in lines)


def test_a_long_value_is_cut_and_an_odd_one_kept_as_text(tmp_path: Path) -> None:
    record = events.event(env("resource", CRM_alert_desc="x" * 5000, CRM_alert_rc="12abc"), "n")
    assert len(record["desc"]) == events.MAX_FIELD and record["rc"] == "12abc"
    record = events.event(env("node", CRM_alert_timestamp_epoch="soon"), "n")
    assert isinstance(record["t"], float)


def test_bytes_that_are_not_utf8_are_written_as_replacement_characters() -> None:
    # How os.environ hands over an exit reason in Latin-1: b"caf\xe9" as "caf\udce9".
    latin1 = b"caf\xe9 failed".decode("utf-8", "surrogateescape")
    record = events.event(env("resource-failed", CRM_alert_desc=latin1), "n")
    assert record["desc"] == "caf\ufffd failed"
    assert "\\udc" not in events.line(record).decode()
    record = events.event(env("resource-failed", CRM_alert_desc="\ud800 lone"), "n")
    assert record["desc"] == "? lone"


def test_rotation_keeps_one_old_file(tmp_path: Path) -> None:
    path = str(tmp_path / "events.jsonl")
    line = events.line(events.event(env("resource"), "node01"))
    for _ in range(30):
        events.append(path, line, max_bytes=10 * len(line))
    old, new = Path(path + ".1").read_bytes(), Path(path).read_bytes()
    assert len(old) == 10 * len(line) and 0 < len(new) <= 10 * len(line)
    assert {p.name for p in tmp_path.iterdir()} == {"events.jsonl", "events.jsonl.1", ".lock"}


def test_concurrent_agents_never_interleave_lines(tmp_path: Path) -> None:
    path = str(tmp_path / "events.jsonl")
    lines = [events.line(events.event(env("resource", CRM_alert_rsc=f"vm-{i}"), "node01"))
             for i in range(8)]  # fmt: skip

    def write(data: bytes) -> None:
        for _ in range(50):
            events.append(path, data)

    threads = [threading.Thread(target=write, args=(data,)) for data in lines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    written = (Path(path + ".1").read_bytes() if Path(path + ".1").exists() else b"")
    written += Path(path).read_bytes()
    assert all(json.loads(line)["kind"] == "resource" for line in written.splitlines())
    assert len(written.splitlines()) == 8 * 50  # none lost, none torn


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hooks.example/x", "must start with https://"),
        ("https://user:pw@hooks.example/x", "no user:password@"),
        ("https:///x", "needs a host"),
        ("https://hooks.example/a b", "whitespace"),
        ("https://hooks.example:99999/x", "bad port"),
        ("https://hooks.example/" + "a" * 2048, "longer than 2048"),
        ("", "empty"),
    ],
)
def test_webhook_url_is_checked_strictly(url: str, problem: str) -> None:
    with pytest.raises(events.BadUrlError, match=problem) as caught:
        events.check_url(url)
    assert "hooks.example" not in str(caught.value)  # the URL may hold a token


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Hook.received.append((self.path, self.headers["Content-Type"], self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def hook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T0KEN"
    server.shutdown()
    server.server_close()


def test_webhook_recipient_posts_the_same_json(tmp_path: Path, hook: str) -> None:
    url_file = tmp_path / "webhook.url"
    url_file.write_text(hook + "\n")
    assert events.main(env("fencing", CRM_alert_recipient=str(url_file))) == 0
    ((path, kind, body),) = _Hook.received
    assert (path, kind) == ("/hooks/T0KEN", "application/json")
    assert json.loads(body) == events.event(env("fencing"), json.loads(body)["node"])


def test_webhook_failure_is_one_line_without_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url_file = tmp_path / "webhook.url"
    url_file.write_text("https://user:T0KEN@hooks.example/x\n")
    assert events.main(env("node", CRM_alert_recipient=str(url_file))) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "T0KEN" not in err and "user:password" in err
