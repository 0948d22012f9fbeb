"""The lab's qnetd (the quorum device server): on the host's loopback as the lab user, never
on a node; checked by `lab up`'s preflight, started by `lab up` and snapshot restores,
stopped by `lab down` and `lab qnetd-stop`, shown by `lab status`, and named by the lab's
qdevice spec."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import socket
import stat
import sys
import time

import pytest
import yaml

from hakvm.cli import main
from hakvm.lab import lifecycle, preflight, procs, qnetd, specfile
from hakvm.lab.state import Lab, LabConfig, write_atomic

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def lab(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    monkeypatch.setenv("HAKVM_LAB_RUN_BASE", str(tmp_path / "run"))
    lab = Lab(tmp_path / "state")
    lab.claim()
    lab.run.dir.mkdir(parents=True)
    return lab


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_qnetd_argv_is_loopback_with_its_own_files(lab: Lab) -> None:
    run = lab.run.dir
    assert qnetd.argv(lab, 5403) == [
        "corosync-qnetd", "-f", "-l", "127.0.0.1", "-p", "5403", "-S",
        f"nss_db_dir={run}/qnetd/nssdb,lock_file={run}/qnetd/qnetd.pid,"
        f"local_socket_file={run}/qnetd/qnetd.sock",
    ]  # fmt: skip
    assert procs.classify(qnetd.argv(lab, 5403), run) == ("qnetd", "qnetd")
    assert procs.classify(qnetd.argv(lab, 5403), run.parent / "other") is None


def test_preflight_checks_the_qnetd_tools_port_and_packages() -> None:
    tools = dict(preflight.TOOLS)
    assert tools["corosync-qnetd"] == "corosync-qnetd"
    assert tools["certutil"] == tools["pk12util"] == "libnss3-tools"
    demo = re.search(r"^DEMO_PACKAGES := (.*?)\n\n", (REPO / "Makefile").read_text(), re.M | re.S)
    assert demo is not None
    packages = set(demo.group(1).replace("\\", " ").split())
    assert {package for _, package in preflight.TOOLS} <= packages
    ports = {(port, what) for _, port, what in preflight.wanted_ports(LabConfig())}
    assert (5403, "qnetd (quorum device) port") in ports
    with pytest.raises(ValueError, match=r"SSH ports 2201\.\. overlap qnetd ports 2202"):
        LabConfig(qnetd_port=2202).validate()


@pytest.mark.skipif(shutil.which("certutil") is None, reason="certutil not installed")
def test_lab_qnetd_starts_stops_and_is_reported(
    lab: Lab, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = procs.current_user()
    monkeypatch.setattr(procs, "lab_uid", lambda: os.getuid())  # the test runs it as itself
    # A stand-in for corosync-qnetd (same name, same argv): it listens on -p's port.
    fake = tmp_path / "bin" / "corosync-qnetd"
    fake.parent.mkdir()
    code = (
        "import socket, sys, time; s = socket.socket(); "
        "s.bind(('127.0.0.1', int(sys.argv[sys.argv.index('-p') + 1]))); s.listen(); "
        "time.sleep(600)"
    )
    python = shlex.quote(sys.executable)  # a clone's venv may have a space in its path
    fake.write_text(f'#!/bin/bash\nexec -a "$0" {python} -c "{code}" "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(procs, "QNETD_BINARY", str(fake))
    port = _free_port()
    lab.save(LabConfig(qnetd_port=port))
    with pytest.raises(qnetd.QnetdError, match="no database"):
        qnetd.start(lab, me)
    qnetd.prepare(lab, me)
    directory = qnetd.qnetd_dir(lab)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert (qnetd.nss_db(lab) / "qnetd-cacert.crt").read_text().count("BEGIN CERTIFICATE") == 1
    pid = qnetd.start(lab, me)
    try:
        assert procs.socket_owner(port, "tcp") == pid
        assert qnetd.start(lab, me) == pid  # already running: left alone
        state = qnetd.status(lab, port)
        assert (state["state"], state["pid"]) == ("running", pid)
        assert state["guest_address"] == f"10.0.2.2:{port}"
        assert qnetd.stop(lab) and qnetd.status(lab, port)["state"] == "stopped"
        assert not qnetd.stop(lab)
        pid = qnetd.start(lab, me)
        procs.kill_hard(pid)  # gone although it should run: dead, not stopped
        assert qnetd.status(lab, port)["state"] == "dead"
        pid = qnetd.start(lab, me)
        killed = lifecycle.down(lab)
        assert [(p.kind, p.pid) for p in killed] == [("qnetd", pid)]
        assert qnetd.status(lab, port)["state"] == "stopped"
    finally:
        if qnetd.pid(lab) is not None:
            procs.kill_hard(pid)
    # `lab up` makes a fresh CA for fresh nodes.
    before = (qnetd.nss_db(lab) / "qnetd-cacert.crt").read_text()
    time.sleep(1)
    qnetd.prepare(lab, me)
    assert (qnetd.nss_db(lab) / "qnetd-cacert.crt").read_text() != before


def test_the_lab_qdevice_spec_points_at_this_labs_qnetd(lab: Lab, tmp_path: pathlib.Path) -> None:
    write_atomic(lab.dir / "lab.json", '{"ssh_port": 2301, "qnetd_port": 5503}\n')
    out = specfile.lab_spec(
        REPO / "examples" / "lab-qdevice.yaml", lab.dir, tmp_path / "qdevice.yaml"
    )
    data = yaml.safe_load(out.read_text())
    device = data["quorum_device"]
    assert (device["host"], device["port"]) == ("10.0.2.2", 5503)
    assert device["local"] == {"nss_db": str(lab.dir / "qnetd-nssdb"), "user": "hakvm-lab"}
    assert [n["ssh"]["port"] for n in data["nodes"]] == [2301, 2302]
    plain = yaml.safe_load(
        specfile.lab_spec(REPO / "examples" / "lab.yaml", lab.dir, tmp_path / "l.yaml").read_text()
    )
    assert "quorum_device" not in plain


@pytest.mark.parametrize("command", ["qnetd-stop", "qnetd-start"])
def test_qnetd_commands_need_a_lab(
    command: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["lab", "--lab-dir", str(tmp_path / "none"), command])
    assert exc.value.code == 3
    assert "no lab in" in capsys.readouterr().err
