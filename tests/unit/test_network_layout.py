"""Guests and cluster traffic (issue 16 item 8): replication on a network VMs reach is a
`validate` warning (exit 0) and a doctor finding; VLANs and the replication network are
checked; guest NICs get libvirt's clean-traffic filter unless a network opts out."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree

from hakvm.cli import main
from hakvm.ops import doctor as dr
from hakvm.render import libvirt
from hakvm.spec.models import ClusterSpec
from tests.render.examples import example_data, render_context

REPLICATION_WARNING = "DRBD replication and live migration run over"


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _on_the_vm_bridge(example: str) -> dict[str, Any]:
    """The example as it was: no replication network, so DRBD takes the bond's link: br0."""
    data = copy.deepcopy(example_data(example))
    del data["replication"]
    for node in data["nodes"]:
        del node["interfaces"]["vlans"]
    return data


def _validate(
    tmp_path: Path, data: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["validate", str(_write(tmp_path, data))])
    return code, capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    ("example", "line"), [("lab", "heartbeat[1].network"), ("seed", "heartbeat[1].network")]
)
def test_replication_on_the_vm_bridge_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], example: str, line: str
) -> None:
    code, lines = _validate(tmp_path, _on_the_vm_bridge(example), capsys)
    assert code == 0
    warned = [text for text in lines if REPLICATION_WARNING in text]
    assert len(warned) == 1, lines
    assert f": warning: {line}: " in warned[0] and " on br0, which VMs reach (" in warned[0]
    assert "replication: {network: ...}" in warned[0]  # the fix


@pytest.mark.parametrize("example", ["lab", "seed"])
def test_the_examples_keep_replication_off_the_vm_bridge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], example: str
) -> None:
    code, lines = _validate(tmp_path, example_data(example), capsys)
    assert code == 0 and not [text for text in lines if REPLICATION_WARNING in text], lines
    assert dr.check_guest_network(ClusterSpec.model_validate(example_data(example))) == []


def test_a_vlan_under_a_bridge_with_an_unfiltered_guest_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = example_data("lab")
    data["vms"][1]["networks"][0]["clean_traffic"] = False
    code, lines = _validate(tmp_path, data, capsys)
    warned = [text for text in lines if REPLICATION_WARNING in text]
    assert code == 0 and len(warned) == 1, lines
    assert ": warning: replication.network: " in warned[0]
    assert "vm-b (br0, clean_traffic off)" in warned[0]


def test_doctor_reports_it_with_the_fix() -> None:
    spec = ClusterSpec.model_validate(_on_the_vm_bridge("lab"))
    (finding,) = dr.check_guest_network(spec)
    assert finding.check == dr.GUEST_NET == "replication-on-guest-network"
    assert finding.severity == "warning"
    assert "10.88.0.0/24 on br0" in finding.message and "vm-a, vm-b" in finding.message
    assert "VLAN on the bond" in finding.fix


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda d: d["nodes"][1]["interfaces"]["vlans"].clear(), "replication.network",
         "node02 has no address in 10.88.2.0/24"),
        (lambda d: d.update(replication={"network": "10.88.0.0/16"}), "replication.network",
         "overlaps heartbeat[0]"),
        (lambda d: d["nodes"][0]["interfaces"]["vlans"].update({"eth9.30": {}}),
         "nodes[0].interfaces.vlans.eth9.30", "'eth9' is not a bond or ethernet of node01"),
        (lambda d: d["nodes"][0]["interfaces"]["vlans"].update({"eth1.30": {}}),
         "nodes[0].interfaces.vlans.eth1.30", "'eth1' is not a bond or ethernet"),
        (lambda d: d["nodes"][0]["interfaces"]["vlans"].update({"bond0.4095": {}}),
         "nodes[0].interfaces.vlans.bond0.4095", "VLAN id 4095 is out of range"),
        (lambda d: d["nodes"][0]["interfaces"]["vlans"]["bond0.20"].update(mtu=9000),
         "nodes[0].interfaces.vlans.bond0.20", "mtu 9000 is above bond0's mtu 1500"),
    ],
)  # fmt: skip
def test_vlan_and_replication_mistakes_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: Any, field: str, message: str
) -> None:
    data = example_data("lab")
    mutate(data)
    code, lines = _validate(tmp_path, data, capsys)
    assert code == 2
    assert any(f": {field}: " in text and message in text for text in lines), lines


def test_guest_nics_get_clean_traffic_unless_opted_out() -> None:
    data = example_data("lab")
    data["vms"][1]["networks"][0]["clean_traffic"] = False
    ctx = render_context(data)
    filters = {}
    for vm in ctx.spec.vms:
        root = etree.fromstring(libvirt.domain_xml(ctx, vm).encode())
        filters[vm.name] = [
            str(f.get("filter")) for f in root.iterfind("devices/interface/filterref")
        ]
    assert filters == {"vm-a": ["clean-traffic"], "vm-b": []}
