"""Faults injected from inside the nodes (real-node drills): which addresses each cut drops,
the refusals that protect the drill's own path, and the nft scripts loaded by the real nft in
a private network namespace."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hakvm.drill.faults import (
    BMC_TABLE,
    CUT_TABLE,
    QNETD_TABLE,
    FaultError,
    LabFaults,
    NodeFaults,
    bmc_ruleset,
    cut_ruleset,
    delete_table_script,
    qnetd_ruleset,
)
from hakvm.spec.models import ClusterSpec
from tests.unit.fakes import FakeNodes

REPO = Path(__file__).resolve().parents[2]


def _lab(**change: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "examples" / "lab.yaml").read_text())
    data = copy.deepcopy(data)
    for key, value in change.items():
        data[key] = value
    return data


def _qdevice_spec(**device: Any) -> ClusterSpec:
    data = yaml.safe_load((REPO / "examples" / "lab-qdevice.yaml").read_text())
    data["quorum_device"].update(device)
    return ClusterSpec.model_validate(data)


def _faults(data: dict[str, Any] | None = None) -> tuple[NodeFaults, FakeNodes]:
    recorder = FakeNodes()  # records the commands a fault would run (no node is touched)
    spec = ClusterSpec.model_validate(data or _lab())
    return NodeFaults(spec, recorder), recorder


def test_heartbeat_cut_drops_only_the_peer_on_the_dedicated_link() -> None:
    faults, rec = _faults()
    asyncio.run(faults.cut_heartbeat())
    scripts = {node: stdin for node, argv, stdin in rec.sent if argv == ["nft", "-f", "-"]}
    # The dedicated link is 10.88.1.0/24 (knet link 0; replication has bond0.20's network).
    assert "ip saddr { 10.88.1.2 } drop" in scripts["node01"]
    assert "ip daddr { 10.88.1.1 } drop" in scripts["node02"]
    assert "10.88.0." not in scripts["node01"] + scripts["node02"]


def test_partition_drops_every_cluster_address_of_the_peer() -> None:
    faults, rec = _faults()
    asyncio.run(faults.partition())
    scripts = {node: stdin for node, _, stdin in rec.sent}
    # Both knet links and the replication network of its own (bond0.20).
    assert "ip saddr { 10.88.0.2, 10.88.1.2, 10.88.2.2 } drop" in scripts["node01"]
    assert "ip daddr { 10.88.0.1, 10.88.1.1, 10.88.2.1 } drop" in scripts["node02"]


def test_bond_member_really_goes_down_and_heal_brings_it_back() -> None:
    faults, rec = _faults()
    asyncio.run(faults.cut_bond_member())
    asyncio.run(faults.heal())
    argvs = [(node, argv) for node, argv, _ in rec.sent]
    assert argvs[0] == ("node01", ["ip", "link", "set", "dev", "eth1", "down"])
    assert ("node01", ["ip", "link", "set", "dev", "eth1", "up"]) in argvs
    heal_scripts = [stdin for _, argv, stdin in rec.sent if argv == ["nft", "-f", "-"]]
    assert heal_scripts == [delete_table_script(CUT_TABLE)] * 2


def test_bmc_blocked_on_the_peer_that_fences() -> None:
    faults, rec = _faults()
    asyncio.run(faults.bmc_down("node02"))
    ((node, _, script),) = rec.sent
    assert node == "node01"  # node01 runs the device that fences node02
    assert "ip daddr 10.0.2.2 udp dport 6231 drop" in script


def test_refuses_when_the_management_path_is_a_cluster_address() -> None:
    data = _lab()
    data["nodes"][0]["ssh"]["host"] = "10.88.1.1"
    with pytest.raises(FaultError, match=r"nodes\.node01\.ssh\.host 10\.88\.1\.1 is a cluster"):
        _faults(data)


def test_refuses_a_node_without_bmc() -> None:
    data = _lab()
    del data["nodes"][1]["bmc"]
    data["cluster"]["fencing"] = {"race_protection": "static-delay"}
    try:
        spec = ClusterSpec.model_validate(data)
    except ValueError:
        pytest.skip("the spec itself already refuses a node without a BMC")
    with pytest.raises(FaultError, match=r"nodes\.node02\.bmc"):
        NodeFaults(spec, FakeNodes())


@pytest.mark.realtool
@pytest.mark.parametrize(
    ("script", "table"),
    [
        (cut_ruleset([ipaddress.IPv4Address("10.88.1.2"), ipaddress.IPv4Address("10.88.0.2")]),
         CUT_TABLE),
        (bmc_ruleset(ipaddress.IPv4Address("10.0.2.2"), 6231), BMC_TABLE),
        (qnetd_ruleset(_qdevice_spec()), QNETD_TABLE),
    ],
)  # fmt: skip
def test_nft_loads_the_rules_twice_and_deletes_them(script: str, table: str) -> None:
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        pytest.skip("nft and unshare needed")
    # A private network namespace: the host's firewall is never touched.
    shell = (
        "nft -f - <<'A'\n" + script + "A\n"
        "nft -f - <<'B'\n" + script + "B\n"  # idempotent: a second load replaces the first
        f"nft list table inet {table}\n"
        "nft -f - <<'C'\n" + delete_table_script(table) + "C\n"
        "echo TABLES-AFTER; nft list tables\n"
    )
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", shell], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 and "Operation not permitted" in result.stderr:
        pytest.skip("no permission for a network namespace")
    assert result.returncode == 0, result.stderr
    loaded, _, remaining = result.stdout.partition("TABLES-AFTER")
    assert f"table inet {table}" in loaded and loaded.count("chain input") == 1
    assert " drop" in loaded
    assert table not in remaining


# --- the quorum device's qnetd ------------------------------------------------------------------


def test_qnetd_rule_drops_only_qnetd_and_needs_an_address() -> None:
    script = qnetd_ruleset(_qdevice_spec())
    assert "ip daddr 10.0.2.2 tcp dport 5403 drop" in script
    assert "ip saddr 10.0.2.2 tcp sport 5403 drop" in script
    with pytest.raises(FaultError, match="blocks qnetd by IP address"):
        qnetd_ruleset(_qdevice_spec(host="qnetd.example.org"))
    with pytest.raises(FaultError, match="no quorum_device"):
        qnetd_ruleset(ClusterSpec.model_validate(_lab()))


def test_real_nodes_lose_qnetd_by_dropping_its_traffic_and_get_it_back() -> None:
    recorder = FakeNodes()
    faults = NodeFaults(_qdevice_spec(), recorder)
    asyncio.run(faults.qnetd_down())
    down = [(node, stdin) for node, _, stdin in recorder.sent]
    assert [n for n, _ in down] == ["node01", "node02"]
    assert all("tcp dport 5403 drop" in stdin for _, stdin in down)
    recorder.sent.clear()
    asyncio.run(faults.isolate("node01"))
    isolate = [(node, stdin) for node, _, stdin in recorder.sent]
    assert "tcp dport 5403 drop" in isolate[0][1] and isolate[0][0] == "node01"
    assert all(CUT_TABLE in stdin for _, stdin in isolate[1:])  # then every link, both ways
    recorder.sent.clear()
    asyncio.run(faults.heal())
    healed = [stdin for _, _, stdin in recorder.sent]
    assert healed.count(delete_table_script(QNETD_TABLE)) == 2


def test_the_lab_stops_qnetd_and_isolates_with_a_rule_inside_the_node() -> None:
    recorder = FakeNodes()
    lab = LabFaults(Path("/nonexistent"), spec=_qdevice_spec(), cluster=recorder)
    commands: list[tuple[str, ...]] = []

    async def lab_command(*args: str) -> None:
        commands.append(args)

    lab.run = lab_command  # type: ignore[method-assign]
    asyncio.run(lab.qnetd_down())
    asyncio.run(lab.isolate("node02"))
    assert commands == [("qnetd-stop",), ("cut", "hb"), ("cut", "bond-a"), ("cut", "bond-b")]
    ((node, argv, script),) = recorder.sent
    assert (node, argv) == ("node02", ["nft", "-f", "-"]) and "dport 5403 drop" in script
    commands.clear()
    recorder.sent.clear()
    asyncio.run(lab.heal())
    assert commands == [("heal",), ("qnetd-start",)]
    assert [(n, s) for n, _, s in recorder.sent] == [("node02", delete_table_script(QNETD_TABLE))]
    commands.clear()
    asyncio.run(lab.heal())  # nothing of ours is left to undo
    assert commands == [("heal",)]
