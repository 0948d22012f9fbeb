"""Hypothesis strategies for *valid* cluster specs (as YAML-ready dicts)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from hakvm.spec.models import DRBD_WORDS

# drbd.conf's own words are refused as names (spec/models.py): not a valid spec.
NAMES = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True).filter(lambda n: n not in DRBD_WORDS)
NIC = st.sampled_from(["eth", "eno", "enp1s0f", "ens"])


@st.composite
def cluster_specs(draw: st.DrawFn) -> dict[str, Any]:
    os_family = draw(st.sampled_from(["debian12", "rhel9"]))
    n_links = draw(st.integers(1, 3))
    token = draw(st.integers(1000, 10000))
    node_names = draw(st.lists(NAMES, min_size=2, max_size=2, unique=True))
    prefix = draw(NIC)
    bond_mode = draw(st.sampled_from(["802.3ad", "active-backup"]))
    use_bridge = draw(st.booleans())
    mtu = draw(st.sampled_from([1500, 9000]))
    second_octet = draw(st.integers(16, 31))  # links live in 172.16-31.x.0/24: any is fine
    nodes = []
    for idx, name in enumerate(node_names, start=1):
        bond_addr = [f"172.{second_octet}.0.{idx}/24"]
        bond: dict[str, Any] = {
            "members": [f"{prefix}1", f"{prefix}2"],
            "mode": bond_mode,
            "miimon": draw(st.integers(50, 200)),
            "lacp_rate": draw(st.sampled_from(["slow", "fast"])),
            "xmit_hash_policy": draw(st.sampled_from(["layer2", "layer2+3", "layer3+4"])),
            "mtu": mtu,
        }
        ifaces: dict[str, Any] = {"bonds": {"bond0": bond}, "ethernets": {}, "bridges": {}}
        if use_bridge:
            ifaces["bridges"]["br0"] = {"ports": ["bond0"], "addresses": bond_addr, "mtu": mtu}
        else:
            bond["addresses"] = bond_addr
        for link in range(1, n_links):
            ifaces["ethernets"][f"{prefix}{2 + link}"] = {
                "addresses": [f"172.{second_octet}.{link}.{idx}/24"]
            }
        nodes.append(
            {
                "name": name,
                "ssh": {"host": "127.0.0.1", "port": 2200 + idx, "key_file": "/dev/null"},
                "memory": "64GiB",
                "interfaces": ifaces,
                "bmc": {
                    "address": f"127.0.0.{idx + 1}",
                    "port": 623,
                    "user": "admin",
                    "password_file": "/dev/null",
                },
                "storage": {
                    "volume_group": draw(st.sampled_from(["vg0", "hakvm", "vg_drbd"])),
                    "thin_pool": draw(st.sampled_from(["pool", "drbdpool"])),
                    "size": "4TiB",
                },
            }
        )
    heartbeat = [
        {"network": f"172.{second_octet}.{link}.0/24", "priority": n_links - link}
        for link in range(n_links)
    ]
    vm_names = draw(st.lists(NAMES, min_size=0, max_size=5, unique=True))
    vms = []
    for name in vm_names:
        mode = draw(st.sampled_from(["block", "qcow2-on-xfs"]))
        vm: dict[str, Any] = {
            "name": f"vm-{name}",
            "vcpus": draw(st.integers(1, 8)),
            "memory": draw(st.sampled_from(["64MiB", "512MiB", "2GiB"])),
            "disk": {"size": draw(st.sampled_from(["1GiB", "20GiB"])), "mode": mode},
            "preferred_node": draw(st.sampled_from([*node_names, None])),
            "autostart": draw(st.booleans()),
            "boot": draw(
                st.sampled_from(
                    [
                        {"source": "disk"},
                        {"source": "network"},
                        {"source": "cdrom", "cdrom_image": "/var/lib/libvirt/images/x.iso"},
                    ]
                )
            ),
        }
        if use_bridge:
            vm["networks"] = [{"bridge": "br0"}]
        vms.append(vm)
    return {
        "cluster": {
            "name": draw(NAMES),
            "os": os_family,
            "hypervisor": draw(st.sampled_from(["kvm", "qemu"])),
            "stickiness": draw(st.integers(1, 1000)),
            "timing": {"token_ms": token},
            "fencing": {
                "race_protection": draw(
                    st.sampled_from(["static-delay", "priority-fencing-delay"])
                ),
                "preferred_survivor": draw(st.sampled_from([*node_names, None])),
                "action": draw(st.sampled_from(["reboot", "off"])),
                "power_wait_s": draw(st.sampled_from([None, 0, 2, 5])),
            },
            "ports": {"corosync": draw(st.sampled_from([5405, 5420])), "drbd_base": 7789},
        },
        "heartbeat": heartbeat,
        "nodes": nodes,
        "vms": vms,
    }
