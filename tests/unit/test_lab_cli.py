"""`hakvm lab` error handling: one line, exit 2 for bad input, 3 for a missing lab."""

from __future__ import annotations

import pathlib

import pytest

from hakvm.cli import main


@pytest.mark.parametrize(
    "args",
    [
        ["cut", "bond-c"],
        ["kill", "node03"],
        ["heal", "eth0"],
        ["status", "--bogus"],
    ],
)
def test_bad_input_exits_2(
    args: list[str], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lab", "--lab-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip()


@pytest.mark.parametrize("args", [["status"], ["kill", "node01"], ["cut", "hb"], ["heal"]])
def test_no_lab_exits_3(
    args: list[str], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["lab", "--lab-dir", str(tmp_path / "none"), *args])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "lab up" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_down_without_lab_is_fine(tmp_path: pathlib.Path) -> None:
    assert main(["lab", "--lab-dir", str(tmp_path / "none"), "down"]) == 0


def test_bad_port_exits_2(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert main(["lab", "--lab-dir", str(tmp_path), "up", "--ssh-port", "22"]) == 2


def _free_tcp_port(span: int = 8) -> int:
    """A port that is free, and so are the `span` after it (the lab derives node02's ports
    and the links' from a base: a busy neighbour would make the checks below flaky)."""
    import socket

    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + span > 65535:
            continue
        try:
            for offset in range(1, span + 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base


def test_ports_check_refuses_a_listener_but_not_lingering_connections() -> None:
    import socket

    from hakvm.lab.preflight import check_ports_free
    from hakvm.lab.state import LabConfig, LabStateError

    port = _free_tcp_port()
    config = LabConfig(
        ssh_port=port,
        bmc_port=_free_tcp_port(),
        link_port=_free_tcp_port(),
        # Not the defaults: a lab running on this machine holds those.
        repo_port=_free_tcp_port(1),
        qnetd_port=_free_tcp_port(1),
    )
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        with pytest.raises(LabStateError, match=f"SSH port of node01 127.0.0.1:{port}"):
            check_ports_free(config)
        # A connection closed by the listening side first leaves that side in TIME_WAIT on
        # the port: a lab just taken down does that; it must not block the next `lab up`.
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()
        client.close()
    check_ports_free(config)
