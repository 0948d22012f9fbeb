"""On the deployed lab: guests and cluster traffic are apart (issue 16 item 8).

DRBD replication (and so live migration, `<peer>-migration`) runs on VLAN 20 of the bond
(bond0.20, no bridge), not on br0 where the VMs are; the firewall takes DRBD only from the
peer's replication address; and every guest NIC carries libvirt's clean-traffic filter.
Read-only checks on the ``deployed`` snapshot: seconds of lab time.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import LabHandle

pytestmark = [pytest.mark.e2e, pytest.mark.deploy, pytest.mark.readonly]

VIRSH = ["virsh", "-c", "qemu:///system"]
NODES = {"node01": ("10.88.2.1", "10.88.2.2", "node02", "vm-a"),
         "node02": ("10.88.2.2", "10.88.2.1", "node01", "vm-b")}  # fmt: skip


@pytest.mark.parametrize("node", list(NODES))
def test_replication_runs_on_its_own_vlan(deployed: LabHandle, node: str) -> None:
    own, peer, other, _ = NODES[node]
    details = deployed.check(node, ["ip", "-br", "addr", "show", "dev", "bond0.20"])
    assert f"{own}/24" in details
    link = deployed.check(node, ["ip", "-d", "link", "show", "dev", "bond0.20"])
    assert "vlan protocol 802.1Q id 20" in link and "master" not in link  # no bridge on it
    br0 = deployed.check(node, ["ip", "-br", "addr", "show", "dev", "br0"])
    assert "10.88.2." not in br0
    drbd = deployed.check(
        node, ["ss", "-Htn", "state", "established", "( sport = :7789 or dport = :7789 )"]
    )
    assert drbd.strip(), "vm-a's DRBD connection is not established"
    for line in drbd.splitlines():
        local, remote = line.split()[-2:]
        assert local.startswith(f"{own}:") and remote.startswith(f"{peer}:"), line
    resolved = deployed.check(node, ["getent", "hosts", f"{other}-migration"])
    assert resolved.split()[0] == peer  # live migrations go there too
    rules = deployed.check(node, ["nft", "list", "table", "inet", "hakvm"])
    assert f"ip saddr {peer} tcp dport @drbd_tcp accept" in rules


@pytest.mark.parametrize("node", list(NODES))
def test_guest_nics_carry_clean_traffic(deployed: LabHandle, node: str) -> None:
    vm = NODES[node][3]
    xml = deployed.check(node, [*VIRSH, "dumpxml", vm])
    assert "<filterref filter='clean-traffic'" in xml
    bindings = deployed.check(node, [*VIRSH, "nwfilter-binding-list"])
    assert "clean-traffic" in bindings, bindings  # instantiated on the VM's tap
    tap = next(line.split()[0] for line in bindings.splitlines() if "clean-traffic" in line)
    chains = deployed.check(node, ["ebtables", "-t", "nat", "-L"])
    assert f"-{tap}" in chains, chains  # libvirt's per-tap chains (libvirt-I-vnetN, ...)
