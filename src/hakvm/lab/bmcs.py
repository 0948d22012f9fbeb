"""Start, stop and check the per-node BMC daemons (``hakvm.lab.bmcd``)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess

from hakvm.lab import procs
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
    found = procs.find_process(lab, "bmcd", node)
    return found.pid if found else None


def set_wanted(lab: Lab, node: str, state: str) -> None:
    write_atomic(lab.want_file("bmcd", node), state + "\n", mode=0o600)


def wanted(lab: Lab, node: str) -> str:
    try:
        return lab.want_file("bmcd", node).read_text().strip() or "stopped"
    except OSError:
        return "stopped"


def start_bmc(lab: Lab, node: str, user: procs.LabUser) -> int:
    """Start the node's BMC daemon (detached); returns its pid once it is listening."""
    pid = bmcd_pid(lab, node)
    if pid is not None:
        return pid
    config = lab.load()
    password = lab.bmc_password_file(node).read_text().strip()
    port = config.bmc_port_of(node)
    argv = [
        procs.SYSTEM_PYTHON, "-E", "-s", "-m", procs.BMCD_MODULE,
        str(lab.run.dir), node, str(port), config.bmc_user,
    ]  # fmt: skip
    set_wanted(lab, node, "running")
    try:
        return procs.spawn_daemon(
            lab, "bmcd", node, argv, user, port=port, proto="udp",
            stdin_text=password + "\n", cwd=str(lab.run.code_dir),
        )  # fmt: skip
    except procs.DaemonError as exc:
        raise BmcError(str(exc)) from None


def stop_bmc(lab: Lab, node: str) -> bool:
    """Stop the node's BMC daemon; returns whether one was running."""
    set_wanted(lab, node, "stopped")
    pid = bmcd_pid(lab, node)
    if pid is None:
        return False
    procs.kill_hard(pid)
    return True


def check_answers(lab: Lab, node: str) -> str:
    """Ask the node's BMC for the power state with ipmitool over IPMI 2.0 (lanplus), as
    fence_ipmilan does: a daemon holding its port is not yet a BMC that answers."""
    config = lab.load()
    password = lab.bmc_password_file(node).read_text().strip()
    argv = [
        "ipmitool", "-I", "lanplus", "-H", LOOPBACK, "-p", str(config.bmc_port_of(node)),
        "-U", config.bmc_user, "-E", "chassis", "power", "status",
    ]  # fmt: skip
    # -E: the password comes from the environment, never argv.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IPMI_PASSWORD": password}
    try:
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BmcError(f"{node}: its BMC does not answer IPMI: {exc}") from None
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        raise BmcError(f"{node}: its BMC does not answer IPMI: {detail}")
    return result.stdout.strip()
