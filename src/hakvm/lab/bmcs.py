"""Start, stop and check the per-node BMC daemons (``hakvm.lab.bmcd``)."""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import subprocess
import sys
import time

from hakvm.lab import nodes, procs
from hakvm.lab.state import GUEST_HOST_ADDRESS, LOOPBACK, NODES, Lab, LabConfig, write_atomic


class BmcError(Exception):
    """A BMC daemon could not be started."""


def new_password() -> str:
    # 20 characters: the most IPMI 2.0 (and ipmitool) accept.
    return secrets.token_urlsafe(15)


def write_credentials(lab: Lab, config: LabConfig) -> None:
    """BMC user/addresses in bmc.json; a fresh random password per node (0600)."""
    info = {
        "user": config.bmc_user,
        "nodes": {
            node: {
                "address": LOOPBACK,
                "port": config.bmc_port_of(node),
                "guest_address": GUEST_HOST_ADDRESS,
                "password_file": lab.bmc_password_file(node).name,
            }
            for node in NODES
        },
    }
    write_atomic(lab.bmc_config, json.dumps(info, indent=2) + "\n")
    for node in NODES:
        write_atomic(lab.bmc_password_file(node), new_password() + "\n", mode=0o600)


def bmcd_pid(lab: Lab, node: str) -> int | None:
    p = nodes.node_paths(lab, node)
    pid = procs.read_pidfile(p.bmcd_pidfile)
    if procs.pid_matches(pid, lab.dir, "bmcd", node):
        return pid
    found = procs.find_process(lab.dir, "bmcd", node)
    return found.pid if found else None


def _set_wanted(lab: Lab, node: str, state: str) -> None:
    p = nodes.node_paths(lab, node)
    owner = (p.dir.stat().st_uid, p.dir.stat().st_gid) if os.geteuid() == 0 else None
    write_atomic(p.bmcd_want, state + "\n", owner=owner)


def wanted(lab: Lab, node: str) -> str:
    try:
        return nodes.node_paths(lab, node).bmcd_want.read_text().strip() or "stopped"
    except OSError:
        return "stopped"


def start_bmc(lab: Lab, node: str, user: procs.LabUser) -> int:
    """Start the node's BMC daemon (detached); returns its pid once it is listening."""
    pid = bmcd_pid(lab, node)
    if pid is not None:
        return pid
    p = nodes.node_paths(lab, node)
    password = lab.bmc_password_file(node).read_text().strip()
    argv = procs.as_lab_user([sys.executable, "-m", procs.BMCD_MODULE, str(lab.dir), node], user)
    with p.bmcd_log.open("ab") as log:
        if os.geteuid() == 0:
            os.chown(p.bmcd_log, user.uid, user.gid)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            start_new_session=True,  # survives the lab tool and its terminal
            cwd="/",
        )
    assert proc.stdin is not None
    proc.stdin.write((password + "\n").encode())
    proc.stdin.close()
    owner = (p.dir.stat().st_uid, p.dir.stat().st_gid) if os.geteuid() == 0 else None
    write_atomic(p.bmcd_pidfile, f"{proc.pid}\n", owner=owner)
    _set_wanted(lab, node, "running")
    # Give it a moment to bind: a busy port or bad config must fail `lab up`, not later.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = p.bmcd_log.read_text(errors="replace").strip().splitlines()[-3:]
            raise BmcError(f"{node}: BMC daemon exited: {' | '.join(tail)}")
        if _listening_udp(lab.load().bmc_port_of(node)):
            return proc.pid
        time.sleep(0.1)
    return proc.pid


def stop_bmc(lab: Lab, node: str) -> bool:
    """Stop the node's BMC daemon; returns whether one was running."""
    _set_wanted(lab, node, "stopped")
    pid = bmcd_pid(lab, node)
    if pid is None:
        return False
    procs.kill_hard(pid)
    return True


def _listening_udp(port: int) -> bool:
    """Whether something is bound to 127.0.0.1:port/udp (from /proc/net/udp)."""
    want = f"0100007F:{port:04X}"
    try:
        lines = pathlib.Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == want for line in lines if len(line.split()) > 1)
