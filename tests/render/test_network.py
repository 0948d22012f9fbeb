"""Network renderer: ifupdown (debian12) and NetworkManager keyfiles (rhel9).

Fast tests check content rules; realtool tests run ifupdown's parser (`ifquery`) and libnm's
keyfile reader on the output, and show both reject broken files.
"""

from __future__ import annotations

import configparser
import copy
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from hakvm.render import network
from hakvm.render.base import RenderedFile
from tests.render.checkers.network import check_ifupdown, check_nm_profiles, check_nmconnection
from tests.render.examples import example_data, render_context


def _files(data: dict[str, Any], node: str = "node01") -> dict[str, RenderedFile]:
    return {f.path: f for f in network.render(render_context(data))[node]}


def _active_backup(example: str, os_family: str) -> dict[str, Any]:
    data = example_data(example, os=os_family)
    for node in data["nodes"]:
        node["interfaces"]["bonds"]["bond0"]["mode"] = "active-backup"
    return data


def _bond_with_address(example: str, os_family: str) -> dict[str, Any]:
    """No bridge: the bond carries the address itself; a second address on eth3/eno3."""
    data = copy.deepcopy(example_data(example, os=os_family))
    for node in data["nodes"]:
        ifaces = node["interfaces"]
        bridge = ifaces.pop("bridges")["br0"]
        ifaces["bonds"]["bond0"]["addresses"] = bridge["addresses"]
        eth = next(iter(ifaces["ethernets"].values()))
        eth["addresses"].append("192.168.77.1/24")
    data["vms"] = []
    return data


# --- content rules (fast) ------------------------------------------------------------------


def test_debian_file_set_and_modes() -> None:
    files = _files(example_data("lab"))
    assert sorted(files) == sorted(
        [network.MODPROBE_PATH, network.IFUPDOWN_PATH, network.MODULES_LOAD_PATH]
    )
    assert all(f.mode == 0o644 for f in files.values())
    text = files[network.IFUPDOWN_PATH].content
    assert text.startswith("# Managed by hakvm")
    # Only the spec's interfaces: never the management NIC, never a route.
    ifaces = [line.split()[1] for line in text.splitlines() if line.startswith("auto ")]
    assert ifaces == ["bond0", "eth1", "eth2", "eth3", "bond0.20", "br0"]
    directives = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    assert not any("eth0" in ln or "gateway" in ln or "route" in ln for ln in directives)


def test_sources_fragment() -> None:
    stock = "# interfaces(5) file\nsource /etc/network/interfaces.d/*\n\nauto lo\n"
    assert network.ifupdown_sources_fragment(stock)
    assert network.ifupdown_sources_fragment("source-directory interfaces.d\n")
    assert network.ifupdown_sources_fragment("source /etc/network/interfaces.d/hakvm\n")
    assert not network.ifupdown_sources_fragment("auto eth0\niface eth0 inet dhcp\n")
    assert not network.ifupdown_sources_fragment("# source /etc/network/interfaces.d/*\n")
    assert not network.ifupdown_sources_fragment("source /etc/network/other.d/*\n")


def test_modules_load_is_bonding_only() -> None:
    text = _files(example_data("lab"))[network.MODULES_LOAD_PATH].content
    directives = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert directives == ["bonding"]
    modprobe = _files(example_data("lab"))[network.MODPROBE_PATH].content
    assert "options bonding max_bonds=0" in modprobe


def test_no_bond_no_module_files() -> None:
    data = example_data("lab")
    for node in data["nodes"]:
        node["interfaces"] = {
            "ethernets": {
                "eth3": {"addresses": node["interfaces"]["ethernets"]["eth3"]["addresses"]}
            }
        }
    data["heartbeat"] = data["heartbeat"][:1]
    data["vms"] = []
    files = _files(data)
    assert sorted(files) == [network.IFUPDOWN_PATH]


def test_rhel_keyfiles_are_0600_and_parse() -> None:
    files = _files(example_data("seed"))
    keyfiles = {p: f for p, f in files.items() if p.endswith(".nmconnection")}
    assert sorted(Path(p).name for p in keyfiles) == [
        "hakvm-bond0.40.nmconnection",
        "hakvm-bond0.nmconnection",
        "hakvm-br0.nmconnection",
        "hakvm-eno2.nmconnection",
        "hakvm-eno3.nmconnection",
        "hakvm-enp1s0f3.nmconnection",
    ]
    for f in keyfiles.values():
        assert f.mode == 0o600
        assert f.content.startswith("# Managed by hakvm")
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(f.content)
        assert "gateway" not in f.content
        conn = parser["connection"]
        if "master" in conn:  # a port: no IP configuration of its own
            assert not parser.has_section("ipv4")
            assert "controller" not in conn and "port-type" not in conn


def test_uuids_are_stable_and_distinct() -> None:
    a = network.profile_uuid("seed", "node01", "bond0")
    assert a == network.profile_uuid("seed", "node01", "bond0")
    assert a != network.profile_uuid("seed", "node02", "bond0")
    assert a != network.profile_uuid("other", "node01", "bond0")


def test_active_backup_has_no_lacp_options() -> None:
    text = _files(_active_backup("lab", "debian12"))[network.IFUPDOWN_PATH].content
    assert "bond-mode active-backup" in text
    assert "bond-lacp-rate" not in text
    assert "bond-xmit-hash-policy" not in text


def test_port_with_address_is_refused() -> None:
    data = example_data("lab")
    data["nodes"][0]["interfaces"]["bonds"]["bond0"]["addresses"] = ["10.9.9.1/24"]
    with pytest.raises(ValueError, match="port of br0"):
        network.render(render_context(data))


def test_deterministic() -> None:
    for example, os_family in (("lab", "debian12"), ("seed", "rhel9")):
        data = example_data(example, os=os_family)
        assert network.render(render_context(data)) == network.render(render_context(data))


# --- ifupdown (realtool) -------------------------------------------------------------------


@pytest.mark.realtool
@pytest.mark.parametrize("node", ["node01", "node02"])
def test_ifquery_accepts_lab(node: str) -> None:
    data = example_data("lab")
    text = _files(data, node)[network.IFUPDOWN_PATH].content
    parsed = check_ifupdown(text)
    assert sorted(parsed) == ["bond0", "bond0.20", "br0", "eth1", "eth2", "eth3"]
    assert parsed["bond0"]["bond-slaves"] == "eth1 eth2"
    assert parsed["bond0"]["bond-mode"] == "802.3ad"
    assert parsed["bond0"]["bond-lacp-rate"] == "fast"
    assert parsed["bond0"]["bond-xmit-hash-policy"] == "layer3+4"
    assert parsed["eth1"]["bond-master"] == "bond0"
    assert parsed["br0"]["bridge_ports"] == "bond0"
    assert parsed["br0"]["bridge_fd"] == "0"
    index = int(node[-1])
    assert parsed["br0"]["address"] == f"10.88.0.{index}"
    assert parsed["br0"]["netmask"] == "255.255.255.0"
    assert parsed["eth3"]["address"] == f"10.88.1.{index}"
    # VLAN 20 on bond0 for replication, named as ifupdown derives the VLAN (no bridge)
    assert parsed["bond0.20"]["address"] == f"10.88.2.{index}"
    assert "bridge_ports" not in parsed["bond0.20"]
    assert all("gateway" not in opts for opts in parsed.values())


@pytest.mark.realtool
def test_ifquery_accepts_seed_topology_and_variants() -> None:
    for data in (
        example_data("seed", os="debian12"),
        _active_backup("seed", "debian12"),
        _bond_with_address("lab", "debian12"),
    ):
        parsed = check_ifupdown(_files(data)[network.IFUPDOWN_PATH].content)
        assert "bond0" in parsed


@pytest.mark.realtool
def test_ifquery_rejects_broken_file() -> None:
    text = _files(example_data("lab"))[network.IFUPDOWN_PATH].content
    with pytest.raises(AssertionError, match="unknown or no method"):
        check_ifupdown(text.replace("inet static", "inet statik", 1))
    with pytest.raises(AssertionError, match="option with empty value"):
        check_ifupdown(text.replace("bond-mode 802.3ad", "bond-mode", 1))


# --- NetworkManager (realtool) -------------------------------------------------------------


def _keyfiles(data: dict[str, Any], node: str = "node01") -> dict[str, str]:
    return {p: f.content for p, f in _files(data, node).items() if p.endswith(".nmconnection")}


@pytest.mark.realtool
@pytest.mark.parametrize("node", ["node01", "node02"])
def test_libnm_accepts_seed(node: str) -> None:
    parsed = check_nm_profiles(_keyfiles(example_data("seed"), node))
    by_name = {str(p["interface-name"]): p for p in parsed.values()}
    assert sorted(by_name) == ["bond0", "bond0.40", "br0", "eno2", "eno3", "enp1s0f3"]
    assert by_name["bond0"]["bond"] == {
        "mode": "802.3ad",
        "miimon": "80",
        "lacp_rate": "fast",
        "xmit_hash_policy": "layer3+4",
    }
    assert by_name["bond0"]["slave-type"] == "bridge"
    assert by_name["eno2"]["slave-type"] == "bond"
    index = 253 if node == "node01" else 254
    assert by_name["br0"]["ipv4.method"] == "manual"
    assert by_name["br0"]["ipv4.addresses"] == [f"10.0.10.{index}/24"]
    assert by_name["br0"]["ipv4.gateway"] is None
    assert by_name["br0"]["ipv6.method"] == "disabled"
    assert by_name["eno3"]["ipv4.addresses"] == [f"10.0.20.{index - 252}/24"]
    vlan = by_name["bond0.40"]
    assert vlan["type"] == "vlan" and vlan["master"] is None
    assert vlan["vlan"] == {"id": 40, "parent": by_name["bond0"]["uuid"]}
    assert vlan["ipv4.addresses"] == [f"10.0.40.{index - 252}/24"]


@pytest.mark.realtool
def test_libnm_accepts_variants() -> None:
    for data in (
        example_data("lab", os="rhel9"),
        _active_backup("seed", "rhel9"),
        _bond_with_address("seed", "rhel9"),
    ):
        parsed = check_nm_profiles(_keyfiles(data))
        bonds = [p for p in parsed.values() if p["type"] == "bond"]
        assert len(bonds) == 1


@pytest.mark.realtool
def test_libnm_rejects_broken_keyfiles() -> None:
    files = _keyfiles(example_data("seed"))
    port = files[f"{network.NM_DIR}/hakvm-eno2.nmconnection"]
    bond = files[f"{network.NM_DIR}/hakvm-bond0.nmconnection"]
    # The NM 1.46 names: NM 1.42 ignores them silently (and would run DHCP on the port).
    renamed = port.replace("master=", "controller=").replace("slave-type=", "port-type=")
    with pytest.raises(AssertionError, match="silently ignored"):
        check_nmconnection(renamed)
    with pytest.raises(AssertionError, match="rejects the keyfile"):
        check_nmconnection(bond.replace("mode=802.3ad", "mode=802.3az"))
    vlan_path = f"{network.NM_DIR}/hakvm-bond0.40.nmconnection"
    vlan = files[vlan_path]
    with pytest.raises(AssertionError, match="rejects the keyfile"):
        check_nmconnection(vlan.replace("id=40", "id=4095"))
    with pytest.raises(AssertionError, match="not one of the rendered profiles"):
        check_nm_profiles({**files, vlan_path: re.sub("parent=.*", f"parent={uuid.uuid4()}", vlan)})
    with pytest.raises(AssertionError, match="rejects the keyfile"):
        check_nmconnection(bond.replace("type=bond", "type=bnod"))
    # A port pointing at a controller that is not rendered.
    broken = dict(files)
    broken[f"{network.NM_DIR}/hakvm-eno2.nmconnection"] = port.replace(
        network.profile_uuid("seed", "node01", "bond0"),
        network.profile_uuid("seed", "node01", "bond9"),
    )
    with pytest.raises(AssertionError, match="not one of the rendered profiles"):
        check_nm_profiles(broken)
