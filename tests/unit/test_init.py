"""`hakvm init`: the inventory parsers on the lab nodes' answers, the proposal they lead to
(it must pass `hakvm validate` and match what examples/lab.yaml says of the lab), and the
rules that keep it safe: a disk holding anything is never proposed, the SSH NIC is never
used, an unknown host key is never trusted without being told to.

tests/unit/data/inventory-node0N.b64 and linkprobe-node0N.txt are the bare lab nodes'
answers (`hakvm init --lab --save-facts tests/unit/data` on the `bare` snapshot records them).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from pathlib import Path

import asyncssh
import pytest
import yaml

from hakvm.cli import main
from hakvm.remote import hostkeys
from hakvm.remote.facts import parse_batch
from hakvm.remote.inventory import (
    PROBE_SCRIPT,
    inventory_from_batch,
    parse_bmc,
    parse_probe,
    probe_argv,
)
from hakvm.spec.inventory import Bmc, Disk, Inventory, Nic, disk_problems
from hakvm.spec.models import SshTarget
from hakvm.spec.propose import Access, KnownBmc, Machine, ProposeError, propose
from hakvm.spec.validate import validate_file

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
NODES = ("node01", "node02")


def recorded(name: str) -> Inventory:
    inv = inventory_from_batch(parse_batch((DATA / f"inventory-{name}.b64").read_text()))
    parse_probe((DATA / f"linkprobe-{name}.txt").read_text(), inv)
    return inv


def lab_machines(tmp: Path, *, bmcs: bool = True) -> list[Machine]:
    """The two lab nodes as `init --lab` sees them, their files in `tmp`."""
    out = []
    for i, name in enumerate(NODES):
        for file in ("id_ed25519", f"bmc-{name}.password"):
            (tmp / file).write_text("x\n")
            (tmp / file).chmod(0o600)
        access = Access("127.0.0.1", 2201 + i, "root", "id_ed25519", "known_hosts")
        bmc = KnownBmc("10.0.2.2", 6230 + i, "hakvm", f"bmc-{name}.password", "the lab's")
        out.append(Machine(access, recorded(name), bmc if bmcs else None,
                           password_file=f"bmc-{name}.password"))  # fmt: skip
    return out


def write(tmp: Path, machines: list[Machine]) -> Path:
    path = tmp / "cluster.yaml"
    path.write_text(propose(machines, cluster_name="lab", source="hakvm init --lab"))
    return path


# --- the inventory ------------------------------------------------------------------------------


def test_recorded_inventory_gives_every_fact() -> None:
    inv = recorded("node01")
    assert inv.hostname == "node01" and inv.os_release["VERSION_ID"] == "12"
    assert inv.nics["eth0"].ipv4 == ("10.0.2.15/24",) and inv.ssh_address == "10.0.2.15"
    eth1 = inv.nics["eth1"]
    assert (eth1.mac, eth1.driver, eth1.physical) == ("52:54:00:4c:01:01", "virtio_net", True)
    # Down before the probe; its carrier and speed come from the probe, which took it up.
    assert (eth1.up, eth1.carrier, eth1.speed_mbps) == (False, True, 1000)
    assert inv.neighbours == {
        "eth1": {"52:54:00:4c:02:01"}, "eth2": {"52:54:00:4c:02:02"},
        "eth3": {"52:54:00:4c:02:03"},
    }  # fmt: skip
    assert [(d.name, d.fstype, d.mountpoints) for d in inv.disks] == [
        ("/dev/vda", "ext4", ("/",)), ("/dev/vdb", None, ()),
    ]  # fmt: skip
    assert inv.memory_total == 1536 * 1024**2 and inv.memory_available
    assert (inv.kvm, inv.virt, inv.bmc) == (False, "qemu", None)


def test_the_probe_only_pings_link_local_multicast_and_restores_the_links() -> None:
    argv = probe_argv(["eth1", "eth3"])
    assert argv[:3] == ["sh", "-c", PROBE_SCRIPT] and argv[-2:] == ["eth1", "eth3"]
    assert "ff02::1" in PROBE_SCRIPT and "trap" in PROBE_SCRIPT
    pings = [line for line in PROBE_SCRIPT.splitlines() if "ping" in line]
    assert len(pings) == 1 and pings[0].split("-I \"$n\" ")[1].startswith("ff02::1 ")


def test_bmc_from_ipmitool() -> None:
    lan = (
        "Set in Progress         : Set Complete\nIP Address Source       : Static Address\n"
        "IP Address              : 192.0.2.17\nSubnet Mask             : 255.255.255.0\n"
    )
    users = (
        "ID  Name\t     Callin  Link Auth\tIPMI Msg   Channel Priv Limit\n"
        "1                    true    false      false      Unknown (0x00)\n"
        "2   ADMIN            true    false      false      ADMINISTRATOR\n"
        "3   ops              true    false      true       OPERATOR\n"
    )
    bmc = parse_bmc(lan, users)
    assert bmc is not None and (bmc.address, bmc.source, bmc.user) == (
        "192.0.2.17", "Static Address", "ADMIN")  # fmt: skip
    assert parse_bmc(lan.replace("192.0.2.17", "0.0.0.0"), users) is None
    assert parse_bmc("", "") is None


# --- the proposal ---------------------------------------------------------------------------------


def test_init_spec_for_the_lab_validates_and_is_the_lab(tmp_path: Path) -> None:
    path = write(tmp_path, lab_machines(tmp_path))
    report = validate_file(path)
    assert report.ok and report.warnings == [], report.lines()
    ours = yaml.safe_load(path.read_text())
    lab = yaml.safe_load((REPO / "examples" / "lab.yaml").read_text())
    # The networks examples/lab.yaml describes by hand, found on the machines themselves.
    assert ours["heartbeat"] == lab["heartbeat"]
    for mine, theirs in zip(ours["nodes"], lab["nodes"], strict=True):
        assert mine["name"] == theirs["name"]
        assert mine["interfaces"]["bonds"]["bond0"]["members"] == ["eth1", "eth2"]
        assert mine["interfaces"]["bonds"]["bond0"]["mode"] == "802.3ad"
        assert mine["interfaces"]["bridges"] == theirs["interfaces"]["bridges"]
        assert mine["interfaces"]["ethernets"] == theirs["interfaces"]["ethernets"]
        assert mine["storage"] == theirs["storage"]  # /dev/vdb, 16GiB of its 20GiB
        assert mine["memory"] == theirs["memory"]
        assert {k: v for k, v in mine["bmc"].items() if k != "password_file"} == {
            k: v for k, v in theirs["bmc"].items() if k != "password_file"
        }
        assert "eth0" not in str(mine["interfaces"])  # the SSH path: never touched
    # Emulated nodes: the lab's TCG timing, the lab's hypervisor; no VMs.
    assert ours["cluster"]["timing"] == {
        k: v for k, v in lab["cluster"]["timing"].items() if k != "consensus_ms"
    }
    assert ours["cluster"]["hypervisor"] == "qemu" and ours["vms"] == []
    text = path.read_text()
    assert "# TODO" not in text
    assert "# eth1 (virtio_net, 1000 Mb/s, carrier, 52:54:00:4c:01:01) answered by node02 eth1" in (
        text
    )


def test_emulated_machines_get_qemu_even_with_a_dev_kvm(tmp_path: Path) -> None:
    """The live lab nodes have /dev/kvm (TCG emulates SVM): init proposed kvm there
    (lab run of 2026-12-02); emulated machines get the lab's qemu."""
    machines = lab_machines(tmp_path)
    for m in machines:
        m.inv.kvm = True
    ours = yaml.safe_load(write(tmp_path, machines).read_text())
    assert ours["cluster"]["hypervisor"] == "qemu"
    for m in machines:
        m.inv.virt = "kvm"  # KVM guests with nested KVM, or real machines: kvm
    assert yaml.safe_load(write(tmp_path, machines).read_text())["cluster"]["hypervisor"] == "kvm"


def test_outside_the_lab_only_the_bmc_secrets_are_todo(tmp_path: Path) -> None:
    machines = lab_machines(tmp_path, bmcs=False)
    path = write(tmp_path, machines)
    report = validate_file(path)
    assert report.ok, report.lines()
    lines = path.read_text().splitlines()
    todo = [line.split(":")[0].strip() for line in lines if "# TODO" in line]
    assert todo == ["address", "user", "password_file"] * 2
    # A BMC that answers ipmitool: its address and administrator, only the password is TODO.
    for i, m in enumerate(machines):
        m.inv.bmc = Bmc(f"192.0.2.{i + 1}", "Static Address", "ADMIN")
    path = write(tmp_path, machines)
    assert [line.split(":")[0].strip() for line in path.read_text().splitlines()
            if "# TODO" in line] == ["password_file"] * 2  # fmt: skip
    assert yaml.safe_load(path.read_text())["nodes"][0]["bmc"] == {
        "address": "192.0.2.1", "user": "ADMIN", "password_file": "bmc-node01.password",
    }  # fmt: skip


def _with_vdb(tmp: Path, **changes: object) -> list[Machine]:
    machines = lab_machines(tmp)
    for m in machines:
        m.inv.disks = [
            dataclasses.replace(d, **changes) if d.name == "/dev/vdb" else d  # type: ignore[arg-type]
            for d in m.inv.disks
        ]
    return machines


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"fstype": "xfs"}, "holds xfs data"),
        ({"fstype": "LVM2_member"}, "holds LVM2_member data"),
        ({"pttype": "gpt"}, "holds a gpt partition table"),
        ({"mountpoints": ("/srv",)}, "is mounted at /srv"),
        ({"children": (Disk("/dev/vdb1", "vdb1", 10**9, "part"),)}, "has partitions"),
        ({"read_only": True}, "is read-only"),
    ],
)
def test_a_disk_holding_anything_is_never_proposed(
    tmp_path: Path, changes: dict[str, object], why: str
) -> None:
    with pytest.raises(ProposeError, match=f"node01 has no empty disk.*/dev/vdb {why}"):
        propose(_with_vdb(tmp_path, **changes), cluster_name="lab", source="t")


def test_a_pv_or_a_held_disk_is_not_empty_either(tmp_path: Path) -> None:
    inv = recorded("node01")
    vdb = inv.disks[1]
    assert disk_problems(vdb, inv) == []
    assert disk_problems(vdb, dataclasses.replace(inv, pvs={"/dev/vdb": "data"})) == [
        "is an LVM physical volume of data"
    ]
    held = dataclasses.replace(inv, holders={"vdb": ["dm-3"]})
    assert disk_problems(vdb, held) == ["is held by dm-3"]
    # An empty second disk is taken instead of one that holds data.
    machines = _with_vdb(tmp_path, fstype="ext4")
    for m in machines:
        m.inv.disks.append(Disk("/dev/vdc", "vdc", 8 * 1024**3, "disk"))
    data = yaml.safe_load(propose(machines, cluster_name="lab", source="t"))
    assert data["nodes"][0]["storage"]["create_from"]["device"] == "/dev/vdc"
    assert data["nodes"][0]["storage"]["size"] == "6GiB"


def test_a_switched_network_is_bonded_active_backup(tmp_path: Path) -> None:
    machines = lab_machines(tmp_path)
    a, b = (m.inv for m in machines)
    # Through a switch each NIC hears both of the other machine's (and its own sibling).
    a.neighbours["eth1"] = a.neighbours["eth2"] = {b.nics["eth1"].mac, b.nics["eth2"].mac}
    b.neighbours["eth1"] = b.neighbours["eth2"] = {a.nics["eth1"].mac, a.nics["eth2"].mac}
    data = yaml.safe_load(propose(machines, cluster_name="lab", source="t"))
    bond = data["nodes"][0]["interfaces"]["bonds"]["bond0"]
    assert bond == {"members": ["eth1", "eth2"], "mode": "active-backup"}
    assert data["nodes"][1]["interfaces"]["ethernets"] == {"eth3": {"addresses": ["10.88.1.2/24"]}}


def test_addresses_avoid_every_network_in_use(tmp_path: Path) -> None:
    machines = lab_machines(tmp_path)
    machines[1].inv.routes = ("10.88.0.0/23",)
    data = yaml.safe_load(propose(machines, cluster_name="lab", source="t"))
    assert [h["network"] for h in data["heartbeat"]] == ["10.88.3.0/24", "10.88.2.0/24"]


def test_no_cable_between_the_machines_is_refused(tmp_path: Path) -> None:
    machines = lab_machines(tmp_path)
    for m in machines:
        m.inv.neighbours = {}
        # The management NIC answering is no cable of the cluster's: it is never proposed.
    machines[0].inv.neighbours["eth0"] = {machines[1].inv.nics["eth0"].mac}
    with pytest.raises(ProposeError, match="no NIC of node01 answered a NIC of node02"):
        propose(machines, cluster_name="lab", source="t")


def test_unsupported_os_and_bad_hostnames_are_refused(tmp_path: Path) -> None:
    machines = lab_machines(tmp_path)
    machines[1].inv.os_release = {"ID": "ubuntu", "VERSION_ID": "24.04", "PRETTY_NAME": "Ubuntu"}
    with pytest.raises(ProposeError, match="node02 runs Ubuntu"):
        propose(machines, cluster_name="lab", source="t")
    machines = lab_machines(tmp_path)
    machines[1].inv.hostname = "Node_2"
    with pytest.raises(ProposeError, match="hostname 'Node_2' cannot be a node name"):
        propose(machines, cluster_name="lab", source="t")


# --- host keys ------------------------------------------------------------------------------------


def _key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519").convert_to_public()


def test_host_keys_are_trusted_only_as_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = tmp_path / "known_hosts"
    other = _key()
    line = other.export_public_key("openssh").decode().split()
    known.write_text(f"[127.0.0.1]:2201 {line[0]} {line[1]}\n")
    presented = {"key": _key()}

    async def fake(target: SshTarget, algorithms: object = (), timeout: float = 0) -> object:
        return presented["key"]

    monkeypatch.setattr(hostkeys, "server_host_key", fake)
    target = SshTarget(host="127.0.0.1", port=2202, key_file=tmp_path / "k", known_hosts=known)
    found = asyncio.run(hostkeys.check(target, known))
    assert found.state == "unknown" and found.where == "[127.0.0.1]:2202"
    hostkeys.trust(found)
    assert asyncio.run(hostkeys.check(target, known)).state == "trusted"
    # A reinstalled node02: its key changed; trusting it replaces node02's line only.
    presented["key"] = _key()
    changed = asyncio.run(hostkeys.check(target, known))
    assert changed.state == "changed"
    assert hostkeys.same_fingerprint(changed.fingerprint.removeprefix("SHA256:"), changed.key)
    hostkeys.trust(changed)
    lines = known.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[127.0.0.1]:2201 ")
    assert asyncio.run(hostkeys.check(target, known)).state == "trusted"
    node01 = target.model_copy(update={"port": 2201})
    presented["key"] = other
    assert asyncio.run(hostkeys.check(node01, known)).state == "trusted"


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["init"],
        ["init", "--node", "root@192.0.2.1"],
        ["init", "--lab", "--node", "192.0.2.1", "--node", "192.0.2.2"],
        ["init", "--node", "192.0.2.1", "--node", "root@192.0.2.2:99999"],
        ["init", "--lab", "--name", "Bad_Name"],
    ],
)
def test_init_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_init_refuses_to_overwrite_and_a_missing_lab(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cluster.yaml"
    out.write_text("keep me\n")
    nolab = ["init", "--lab", "--lab-dir", str(tmp_path / "nolab"), "-o"]
    assert main([*nolab, str(out)]) == 2
    assert out.read_text() == "keep me\n"
    assert main([*nolab, str(tmp_path / "x.yaml")]) == 3
    err = capsys.readouterr().err
    assert "exists; choose another -o or add --force" in err and "no lab in" in err


def test_nic_description_reads_well() -> None:
    nic = Nic("eth1", "52:54:00:4c:01:01", "virtio_net", up=True, carrier=False, speed_mbps=None)
    assert nic.describe() == "eth1 (virtio_net, speed unknown, no carrier, 52:54:00:4c:01:01)"
    assert copy.copy(nic) == nic
