"""QmpClient against a real (CPU-less, paused) qemu-system-x86_64."""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hakvm.lab.qmp import QmpClient, QmpError

QEMU = shutil.which("qemu-system-x86_64")


def _accepts(path: pathlib.Path) -> bool:
    # The file appears at bind(), a moment before listen(): probe with a connect.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@pytest.fixture
def qmp_socket(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    if QEMU is None:  # `make deps` installs it; a silent skip would hide a broken CI
        pytest.fail("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
    sock = tmp_path / "qmp.sock"
    argv = [
        QEMU,
        "-machine", "none",
        "-accel", "tcg",
        "-nodefaults",
        "-display", "none",
        "-qmp", f"unix:{sock},server=on,wait=off",
        "-S",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not _accepts(sock):
            if proc.poll() is not None:
                assert proc.stderr is not None
                pytest.fail(f"qemu exited {proc.returncode}: {proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("qemu did not create its QMP socket")
            time.sleep(0.02)
        yield sock
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def _status(client: QmpClient) -> dict[str, object]:
    result = client.command("query-status")
    assert isinstance(result, dict)
    return result


def test_query_status_cont_stop(qmp_socket: pathlib.Path) -> None:
    client = QmpClient(qmp_socket)
    status = _status(client)
    # -S: not running yet (QEMU reports "prelaunch" before the first cont).
    assert status["running"] is False
    assert status["status"] in {"prelaunch", "paused"}

    # cont/stop emit RESUME/STOP events around their replies; those must be skipped.
    assert client.command("cont") == {}
    status = _status(client)
    assert status == {**status, "running": True, "status": "running"}

    assert client.command("stop") == {}
    status = _status(client)
    assert status == {**status, "running": False, "status": "paused"}


def test_command_with_arguments(qmp_socket: pathlib.Path) -> None:
    client = QmpClient(qmp_socket)
    result = client.command("query-command-line-options", option="machine")
    assert isinstance(result, list)
    assert [opt["option"] for opt in result] == ["machine"]


def test_argument_called_name(qmp_socket: pathlib.Path) -> None:
    # QMP arguments named "name" (set_link, trace-event-get-state, ...) must pass through.
    result = QmpClient(qmp_socket).command("trace-event-get-state", name="qmp_job_*")
    assert isinstance(result, list)
    assert result, "expected some qmp_job_* trace events"
    assert all(str(ev["name"]).startswith("qmp_job_") for ev in result)


def test_unknown_command_raises(qmp_socket: pathlib.Path) -> None:
    client = QmpClient(qmp_socket)
    with pytest.raises(QmpError, match="has not been found"):
        client.command("no-such-command")
    # The monitor is still usable afterwards.
    assert _status(client)["running"] is False


def test_bad_arguments_raise(qmp_socket: pathlib.Path) -> None:
    with pytest.raises(QmpError, match="bogus"):
        QmpClient(qmp_socket).command("query-status", bogus=1)


def test_missing_socket_raises_quickly(tmp_path: pathlib.Path) -> None:
    start = time.monotonic()
    with pytest.raises(QmpError):
        QmpClient(tmp_path / "absent.sock", timeout=5.0).command("query-status")
    assert time.monotonic() - start < 1.0


def test_stale_socket_raises_quickly(tmp_path: pathlib.Path) -> None:
    # The socket file of a QEMU that was SIGKILLed: connection refused.
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    start = time.monotonic()
    with pytest.raises(QmpError, match="refused"):
        QmpClient(path).command("query-status")
    assert time.monotonic() - start < 1.0


def test_silent_peer_times_out(tmp_path: pathlib.Path) -> None:
    # A listener that never sends the greeting (e.g. hung QEMU) must not block forever.
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        start = time.monotonic()
        with pytest.raises(QmpError, match="timed out"):
            QmpClient(path, timeout=0.3).command("query-status")
        assert time.monotonic() - start < 2.0


def test_freeze_and_thaw_a_node(qmp_socket: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lab freeze`: the vCPUs stop with the power on (QMP stop), `lab thaw` lets them run."""
    from types import SimpleNamespace

    from hakvm.lab import nodes

    monkeypatch.setattr(nodes, "qemu_pid", lambda run, node: 4242)
    monkeypatch.setattr(nodes, "node_paths", lambda run, node: SimpleNamespace(qmp=qmp_socket))
    run: Any = None
    QmpClient(qmp_socket).command("cont")
    assert not nodes.is_frozen(run, "node01")
    assert nodes.freeze_node(run, "node01") and nodes.is_frozen(run, "node01")
    assert nodes.thaw_node(run, "node01") and not nodes.is_frozen(run, "node01")
    monkeypatch.setattr(nodes, "qemu_pid", lambda run, node: None)  # off: nothing to do
    assert not nodes.freeze_node(run, "node01") and not nodes.thaw_node(run, "node01")
    assert not nodes.is_frozen(run, "node01")
