"""End-to-end checks of the QEMU lab: nodes, bonded links, faults, virtual BMCs.

Tests run in file order on one session lab (see conftest.py); the last one takes it down.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from hakvm.lab import procs
from hakvm.lab.state import Lab
from tests.e2e.conftest import LabHandle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

NODES = ("node01", "node02")
BOND_NET = "192.168.100"
HB_NET = "192.168.101"
ZERO_MAC = "00:00:00:00:00:00"


def _wait(what: str, probe: Callable[[], bool], timeout: float, step: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _partners(text: str) -> list[str]:
    """Partner MACs of the members in /proc/net/bonding/bond0 (802.3ad)."""
    members = text.split("Slave Interface:")[1:]
    out = []
    for member in members:
        match = re.search(r"details partner lacp pdu:.*?system mac address: (\S+)", member, re.S)
        out.append(match.group(1) if match else ZERO_MAC)
    return out


@pytest.fixture(scope="module", autouse=True)
def bare_again(lab: LabHandle) -> Iterator[None]:
    """Leave the nodes as bare as found (the snapshot saved right after `lab up`), for the
    e2e tests that run after these."""
    yield
    if lab.has_snapshot("bare"):
        lab.ensure("bare")


@pytest.mark.readonly
def test_lab_is_up_and_nodes_have_own_identity(lab: LabHandle) -> None:
    status = lab.status()
    assert status["healthy"]
    ids = {}
    for index, node in enumerate(NODES, start=1):
        assert status["nodes"][node]["power"] == "on"
        assert status["nodes"][node]["bmc"] == "running"
        assert lab.check(node, ["hostname"]).strip() == node
        ids[node] = lab.check(node, ["cat", "/etc/machine-id"]).strip()
        # The host key we pinned is the one the node presents (StrictHostKeyChecking=yes).
        fingerprint = lab.check(node, ["ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub"])
        assert fingerprint.split()[1].startswith("SHA256:")
        assert f"[127.0.0.1]:{2200 + index} ssh-ed25519" in lab.known_hosts.read_text()
    assert len(set(ids.values())) == 2 and all(len(i) == 32 for i in ids.values())
    assert (lab.state_dir / "id_ed25519").stat().st_mode & 0o777 == 0o600
    for node in NODES:
        assert (lab.state_dir / f"bmc-{node}.password").stat().st_mode & 0o777 == 0o600
    # The runtime dir names its state dir: a clone removed without `lab destroy` is then
    # named by the next `lab up` (tests/unit/test_lab_orphans.py).
    state = Lab(lab.state_dir)
    assert state.run.owner_file.read_text() == f"{state.dir}\n"


@pytest.mark.readonly
def test_nodes_are_bare_with_no_default_route(lab: LabHandle) -> None:
    for node in NODES:
        assert lab.check(node, ["ip", "route", "show", "default"]).strip() == ""
        assert lab.check(node, ["ip", "-6", "route", "show", "default"]).strip() == ""
        links = lab.check(node, ["ip", "-br", "link"])
        names = [line.split()[0] for line in links.splitlines()]
        assert names[:5] == ["lo", "eth0", "eth1", "eth2", "eth3"], links
        assert "bond0" not in links
        assert "10.0.2.15/24" in lab.check(node, ["ip", "-br", "addr", "show", "eth0"])
        # The cluster stack is installed but not running: that is `hakvm apply`'s job.
        assert lab.run(node, ["systemctl", "is-active", "corosync"]).stdout.strip() != "active"
        lab.check(node, ["modprobe", "drbd"])
        assert "version: 8.4" in lab.check(node, ["cat", "/proc/drbd"])
        disks = lab.check(node, ["lsblk", "-dnbo", "NAME,SIZE"])
        assert re.search(r"^vdb\s+21474836480$", disks, re.M), disks


@pytest.mark.readonly
def test_lacp_bond_finds_partner_and_links_carry_traffic(lab: LabHandle) -> None:
    for index, node in enumerate(NODES, start=1):
        for argv in (
            ["ip", "link", "add", "bond0", "type", "bond", "mode", "802.3ad",
             "miimon", "100", "lacp_rate", "fast"],
            ["ip", "link", "set", "eth1", "down"],
            ["ip", "link", "set", "eth1", "master", "bond0"],
            ["ip", "link", "set", "eth2", "down"],
            ["ip", "link", "set", "eth2", "master", "bond0"],
            ["ip", "link", "set", "bond0", "up"],
            ["ip", "addr", "add", f"{BOND_NET}.{index}/24", "dev", "bond0"],
            ["ip", "link", "set", "eth3", "up"],
            ["ip", "addr", "add", f"{HB_NET}.{index}/24", "dev", "eth3"],
        ):
            lab.check(node, argv)

    def partnered() -> bool:
        for node in NODES:
            text = lab.check(node, ["cat", "/proc/net/bonding/bond0"])
            partners = _partners(text)
            if len(partners) != 2 or ZERO_MAC in partners:
                return False
        return True

    _wait("an 802.3ad partner on both members of both nodes", partnered, 90, 2)
    text = lab.check("node01", ["cat", "/proc/net/bonding/bond0"])
    # node01's partner is node02's bond, whose MAC is node02's eth1 MAC.
    assert set(_partners(text)) == {"52:54:00:4c:02:01"}, text
    lab.check("node01", ["ping", "-c", "3", "-W", "5", f"{BOND_NET}.2"])
    lab.check("node02", ["ping", "-c", "3", "-W", "5", f"{HB_NET}.1"])


def _carrier_is(lab: LabHandle, node: str, nic: str, value: str) -> Callable[[], bool]:
    return lambda: lab.check(node, ["cat", f"/sys/class/net/{nic}/carrier"]).strip() == value


@pytest.mark.readonly
def test_cut_one_bond_member_keeps_connectivity(lab: LabHandle) -> None:
    result = lab.hakvm("cut", "bond-a")
    assert result.returncode == 0, result.stderr
    try:
        for node in NODES:
            _wait(f"eth1 carrier down on {node}", _carrier_is(lab, node, "eth1", "0"), 30)
        assert lab.status()["links"]["bond-a"] == "cut"
        lab.check("node01", ["ping", "-c", "3", "-W", "5", f"{BOND_NET}.2"])
        lab.check("node02", ["ping", "-c", "3", "-W", "5", f"{BOND_NET}.1"])
        # The heartbeat link is independent of the bond.
        lab.check("node01", ["ping", "-c", "2", "-W", "5", f"{HB_NET}.2"])
    finally:
        healed = lab.hakvm("heal", "bond-a")
    assert healed.returncode == 0, healed.stderr
    assert lab.status()["links"]["bond-a"] == "up"
    _wait("eth1 carrier back on node01", _carrier_is(lab, "node01", "eth1", "1"), 30)


def _fence(
    lab: LabHandle, action: str, target: str = "node01", via: str = "node02", rc: int = 0
) -> str:
    """fence_ipmilan on ``via`` against ``target``'s BMC; the password never on argv.

    ``rc``: fence agents answer ``-o status`` with 0 for on and 2 for off.
    """
    password = (lab.state_dir / f"bmc-{target}.password").read_text().strip()
    pw_file = f"/root/.bmc-{target}.password"
    lab.check(via, ["install", "-m", "0600", "/dev/null", pw_file])
    put = lab.run(via, ["tee", pw_file], input=password + "\n")
    assert put.returncode == 0, put.stderr
    script = f"/root/.bmc-{target}.sh"
    lab.check(via, ["sh", "-c", f"printf '#!/bin/sh\\ncat {pw_file}\\n' > {script}"])
    lab.check(via, ["chmod", "0700", script])
    result = lab.run(
        via,
        [
            "fence_ipmilan", "--lanplus", "-a", "10.0.2.2",
            "-u", str(lab.bmc_ports[target]), "-l", lab.bmc_user, "-S", script,
            "-o", action,
        ],
        timeout=120,
    )
    assert result.returncode == rc, f"fence_ipmilan -o {action}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.mark.extended  # Pacemaker runs this agent against these BMCs in make test's node-crash
def test_fence_ipmilan_powers_node_off_and_on(lab: LabHandle) -> None:
    assert "Status: ON" in _fence(lab, "status")
    _fence(lab, "off")
    node01 = lab.status()["nodes"]["node01"]
    assert node01["power"] == "off" and node01["qemu_pid"] is None
    assert "Status: OFF" in _fence(lab, "status", rc=2)
    # node02 keeps running while its peer is fenced.
    assert lab.check("node02", ["hostname"]).strip() == "node02"
    _fence(lab, "on")
    assert lab.status()["nodes"]["node01"]["power"] == "on"
    lab.wait_ssh("node01", timeout=300)
    assert lab.check("node01", ["hostname"]).strip() == "node01"
    # The links come back by themselves after a power cycle (UDP socket netdevs).
    lab.check("node01", ["ip", "link", "set", "eth3", "up"])
    lab.check("node01", ["ip", "addr", "add", f"{HB_NET}.1/24", "dev", "eth3"])
    _wait(
        "heartbeat ping after node01's power cycle",
        lambda: lab.run("node02", ["ping", "-c", "1", "-W", "2", f"{HB_NET}.1"]).returncode == 0,
        60,
    )


@pytest.mark.readonly
def test_supervision_reports_dead_processes(lab: LabHandle) -> None:
    # Each BMC speaks IPMI 2.0 (a daemon that merely holds its port is no BMC).
    for node in NODES:
        password = (lab.state_dir / f"bmc-{node}.password").read_text().strip()
        result = subprocess.run(
            ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(lab.bmc_ports[node]),
             "-U", lab.bmc_user, "-E", "chassis", "power", "status"],
            env={"IPMI_PASSWORD": password}, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert result.stdout.strip() == "Chassis Power is on", result.stderr
    assert lab.hakvm("bmc-stop", "node02").returncode == 0
    assert lab.status()["nodes"]["node02"]["bmc"] == "stopped"
    assert lab.hakvm("bmc-start", "node02").returncode == 0
    assert lab.status()["nodes"]["node02"]["bmc"] == "running"
    # A BMC killed behind the lab's back is reported dead, not stopped.
    procs.kill_hard(lab.status()["nodes"]["node02"]["bmc_pid"])
    status = lab.status()
    assert status["nodes"]["node02"]["bmc"] == "dead" and not status["healthy"]
    assert lab.hakvm("bmc-start", "node02").returncode == 0
    assert lab.status()["healthy"]


@pytest.mark.extended
def test_lab_kill_and_start_keeps_cut_links_cut(lab: LabHandle) -> None:
    assert lab.hakvm("kill", "node02").returncode == 0
    assert lab.status()["nodes"]["node02"]["power"] == "off"
    # A link cut while a node is off stays cut when it powers on.
    assert lab.hakvm("cut", "hb").returncode == 0
    result = lab.hakvm("start", "node02", "--wait")
    assert result.returncode == 0, result.stderr
    assert lab.check("node02", ["hostname"]).strip() == "node02"
    lab.check("node02", ["ip", "link", "set", "eth3", "up"])
    time.sleep(2)
    assert lab.check("node02", ["cat", "/sys/class/net/eth3/carrier"]).strip() == "0"
    assert lab.hakvm("heal").returncode == 0
    _wait("eth3 carrier after heal", _carrier_is(lab, "node02", "eth3", "1"), 30)


@pytest.mark.lab_last
def test_down_leaves_no_process(lab: LabHandle) -> None:
    result = lab.hakvm("down")
    assert result.returncode == 0, result.stderr
    state = Lab(lab.state_dir)
    assert procs.find_lab_processes(state) == []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            joined = " ".join(procs.cmdline(int(entry.name)))
            assert str(state.run.dir) not in joined, joined
    assert lab.hakvm("status", "--json").returncode == 0
    assert lab.status()["nodes"]["node01"]["power"] == "off"
