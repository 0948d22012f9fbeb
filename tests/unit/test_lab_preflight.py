"""`hakvm lab up`'s checks before anything is built, and the lab's process hygiene: one
line with the fix and exit 3; pid files rather than argv; no root write through a link."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from hakvm.cli import main
from hakvm.lab import preflight, procs
from hakvm.lab.state import Lab, LabConfig, LabStateError


@pytest.fixture(autouse=True)
def run_base(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    base = tmp_path / "run"
    monkeypatch.setenv("HAKVM_LAB_RUN_BASE", str(base))
    return base


def _lab_up(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["lab", "--lab-dir", str(tmp_path / "lab"), "up", *args])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)


def test_not_root(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    line = _lab_up(tmp_path, capsys)
    assert "needs root" in line and "sudo" in line
    assert not (tmp_path / "lab").exists(), "nothing is created before the checks pass"


@pytest.mark.parametrize(("tool", "package"), [("qemu-system-x86_64", "qemu-system-x86"),
                                              ("debootstrap", "debootstrap")])  # fmt: skip
def test_missing_tool(tool: str, package: str, tmp_path: pathlib.Path,
                      capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _as_root(monkeypatch)
    real_which = preflight.shutil.which
    monkeypatch.setattr(preflight.shutil, "which", lambda t: None if t == tool else real_which(t))
    line = _lab_up(tmp_path, capsys)
    assert f"{tool} is missing" in line and f"apt-get install {package}" in line


def _free_base(span: int) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + span > 65000:
            continue
        try:
            for offset in range(span):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as probe:
                        probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base


def _ports(base: int) -> list[str]:
    return ["--ssh-port", str(base), "--bmc-port", str(base + 2), "--link-port", str(base + 4),
            "--repo-port", str(base + 10)]  # fmt: skip


@pytest.mark.parametrize(("offset", "kind", "what"), [
    (1, socket.SOCK_STREAM, "SSH port of node02"),
    (2, socket.SOCK_DGRAM, "BMC port of node01"),
    (4, socket.SOCK_DGRAM, "bond-a port of node01"),
    # The package repository: another local user listening there would serve the nodes
    # their packages, installed as root.
    (10, socket.SOCK_STREAM, "package repository port"),
])  # fmt: skip
def test_port_in_use_names_port_and_holder(offset: int, kind: int, what: str,
                                           tmp_path: pathlib.Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _as_root(monkeypatch)
    monkeypatch.setattr(preflight, "check_tools", lambda: None)
    base = _free_base(11)
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", base + offset))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        line = _lab_up(tmp_path, capsys, *_ports(base))
    assert f"{what} 127.0.0.1:{base + offset}" in line and "already in use" in line
    assert f"pid {os.getpid()}" in line


def test_too_little_memory(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _as_root(monkeypatch)
    monkeypatch.setattr(preflight, "check_tools", lambda: None)
    monkeypatch.setattr(preflight, "check_ports_free", lambda config: None)
    monkeypatch.setattr(preflight, "available_memory_mib", lambda: 1000)
    line = _lab_up(tmp_path, capsys)
    assert "not enough free memory" in line and "--memory" in line


def test_too_little_disk(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _as_root(monkeypatch)
    monkeypatch.setattr(preflight, "check_tools", lambda: None)
    monkeypatch.setattr(preflight, "check_ports_free", lambda config: None)
    monkeypatch.setattr(preflight, "available_memory_mib", lambda: 1 << 20)
    monkeypatch.setattr(preflight, "free_bytes", lambda path: 1 << 30)
    line = _lab_up(tmp_path, capsys)
    assert "not enough free disk" in line and "1 GiB free" in line


def test_a_directory_that_is_not_a_lab_is_refused_untouched(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _as_root(monkeypatch)
    mine = tmp_path / "lab"
    mine.mkdir(mode=0o750)
    (mine / "thesis.tex").write_text("years of work\n")
    line = _lab_up(tmp_path, capsys)
    assert "holds no lab" in line
    assert (mine / "thesis.tex").read_text() == "years of work\n"
    assert mine.stat().st_mode & 0o777 == 0o750
    with pytest.raises(SystemExit) as exc:
        main(["lab", "--lab-dir", str(mine), "destroy"])
    assert exc.value.code == 3
    assert (mine / "thesis.tex").is_file()


def test_a_planted_pid_file_does_not_make_root_kill_another_process(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = Lab(tmp_path / "lab")
    lab.claim()
    # A process whose argv names the lab, but which is no lab process of the lab user.
    decoy = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "-m", procs.BMCD_MODULE,
         str(lab.run.dir), "node01", "6230", "u"]
    )  # fmt: skip
    try:
        # Right after the exec /proc/PID/cmdline can still read empty (measured: 14 of 30).
        while not procs.cmdline(decoy.pid):
            time.sleep(0.01)
        lab.pidfile("bmcd", "node01").write_text(f"{decoy.pid}\n")
        (lab.run.dir / "node01").mkdir(parents=True)
        (lab.run.dir / "node01" / "qemu.pid").write_text(f"{os.getpid()}\n")
        # Run by root, the lab user is somebody else: neither pid is a lab process.
        monkeypatch.setattr(procs, "lab_uid", lambda: os.getuid() + 54321)
        assert procs.find_lab_processes(lab) == []
        # Were the decoy the lab user's, its pid file would find it (and only it).
        monkeypatch.setattr(procs, "lab_uid", lambda: os.getuid())
        assert [(p.pid, p.kind) for p in procs.find_lab_processes(lab)] == [(decoy.pid, "bmcd")]
    finally:
        decoy.kill()
        decoy.wait()


def test_qemu_pid_file_through_a_symlink_is_not_read(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "secret"
    target.write_text("4242\n")
    (tmp_path / "node01").mkdir()
    (tmp_path / "node01" / "qemu.pid").symlink_to(target)
    assert procs.read_pidfile(tmp_path / "node01" / "qemu.pid") is None


def test_daemon_log_is_never_opened_through_a_symlink(tmp_path: pathlib.Path) -> None:
    lab = Lab(tmp_path / "lab")
    lab.claim()
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    lab.log_file("bmcd", "node01").symlink_to(victim)
    with pytest.raises(OSError):
        procs.spawn_daemon(lab, "bmcd", "node01", ["true"], procs.current_user(),
                           port=1, proto="udp")  # fmt: skip
    assert victim.read_text() == "root's file\n"


def test_socket_owner_is_the_process_holding_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = int(sock.getsockname()[1])
        assert procs.socket_owner(port, "tcp") == os.getpid()
    assert procs.socket_owner(port, "tcp") is None


def test_a_daemon_that_finds_its_port_taken_fails_naming_the_holder(tmp_path: pathlib.Path) -> None:
    lab = Lab(tmp_path / "lab")
    lab.claim()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = int(squatter.getsockname()[1])
        # A daemon that cannot bind exits; one that never binds is stopped. Either way the
        # lab refuses rather than report success with somebody else's server on the port.
        with pytest.raises(procs.DaemonError):
            procs.spawn_daemon(
                lab, "repod", "repo",
                [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                procs.current_user(), port=port, proto="tcp", timeout=3,
            )  # fmt: skip


def test_config_ports_include_the_repository() -> None:
    ports = {what for _, _, what in preflight.wanted_ports(LabConfig())}
    assert "package repository port" in ports
    with pytest.raises(LabStateError):
        preflight.check_memory(LabConfig(memory_mib=1 << 30))


def test_demo_as_a_normal_user_says_it_needs_root(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to say "the lab is already up" (it took `lab up`'s exit 3 for that)."""
    from hakvm.drill import demo

    def run_in_process(*args: str, quiet: bool = False) -> int:
        try:
            return main(list(args))
        except SystemExit as exc:
            return int(exc.code or 0)

    monkeypatch.setenv("HAKVM_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.setattr(demo, "run_hakvm", run_in_process)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    repo = pathlib.Path(__file__).resolve().parents[2]
    code = main(["demo", str(repo / "examples" / "lab.yaml")])
    out, err = capsys.readouterr()
    assert code == 3
    assert "needs root" in err and "already up" not in out
    assert "Traceback" not in err
