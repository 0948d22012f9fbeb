"""Failure drills on the deployed lab, with the acknowledged-write witness.

Each scenario starts from the deployed lab (snapshot ``deployed``, restored in seconds) and
is a real fault injected with the lab's own commands; the invariants are checked by `hakvm
drill` itself, and this test fails if any did not hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from tests.e2e.conftest import REPO, LabHandle, hakvm

pytestmark = [pytest.mark.e2e, pytest.mark.deploy, pytest.mark.drill]


# node-crash runs in test_deploy.py (its failover test is that drill). These two took 13-15
# min each on the lab (CI run of 2026-12-01): make test-e2e (docs/testing.md).
@pytest.mark.extended
@pytest.mark.parametrize("scenario", ["fence-failure", "heartbeat-partition"])
def test_drill(deployed: LabHandle, spec_file: Path, scenario: str) -> None:
    drill = _passing_drill(deployed, spec_file, scenario)
    assert drill["witness"]["acked"] > 0 and drill["witness"]["lost"] == []


# The other scenarios (about 40 min together on the lab): make test-e2e. The survivor of
# node-crash-during-resync must not run the VM on its partial copy (the CIB's good-data
# rule, fed by DRBD's resync handler), and its witness must lose nothing.
@pytest.mark.extended
@pytest.mark.parametrize(
    "scenario",
    [
        "node-crash-during-resync",
        "node-hang",
        "vm-crash",
        "bond-member-loss",
        "heartbeat-link-loss",
        "rolling-maintenance",
    ],
)
def test_drill_extended(deployed: LabHandle, spec_file: Path, scenario: str) -> None:
    drill = _passing_drill(deployed, spec_file, scenario)
    if scenario == "node-crash-during-resync":
        assert drill["witness"]["acked"] > 0 and drill["witness"]["lost"] == []
    if scenario == "node-hang":  # the survivor's own events give each component
        _journal_in_order(drill)


def _journal_in_order(drill: dict[str, Any]) -> None:
    """Lost, then fenced, then every VM started, on the survivor's clock, within recovery."""
    found = drill["journal"]
    assert found is not None and found["uncertainty_s"] < 5, drill
    assert 0 < found["detected_s"] < found["fenced_s"], found
    assert found["started_s"] and all(
        found["fenced_s"] < t < drill["recovery_s"] + found["uncertainty_s"] + 1
        for t in found["started_s"].values()
    ), found


@pytest.mark.extended  # an apply and a node crash: about 15 min on the lab
def test_node_crash_with_fencing_action_off(
    deployed: LabHandle, spec_file: Path, tmp_path: Path
) -> None:
    """fencing.action off: Pacemaker powers the crashed node02 off (not reboot), vm-b
    recovers on node01, and node02 stays off until the drill powers it on through its fence
    device (stonith_admin --unfence), as the docs tell an admin to."""
    data = yaml.safe_load(spec_file.read_text())
    data["cluster"]["fencing"]["action"] = "off"
    spec = tmp_path / "lab.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    applied = hakvm("apply", str(spec), timeout=1800)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    action = ["crm_attribute", "--type", "crm_config", "--name", "stonith-action", "--query"]
    assert "value=off" in deployed.check("node01", action)
    drill = _passing_drill(deployed, spec, "node-crash")
    healthy = next(i for i in drill["invariants"] if i["name"] == "no split-brain, back to healthy")
    assert "node02 powered on first: fencing.action off" in healthy["detail"], healthy
    _journal_in_order(drill)
    history = deployed.check("node01", ["stonith_admin", "--history", "node02", "--output-as=xml"])
    assert 'action="off"' in history and 'action="reboot"' not in history, history


def _passing_drill(lab: LabHandle, spec_file: Path, scenario: str) -> dict[str, Any]:
    result = hakvm(
        "drill", "--json", str(spec_file), "--scenario", scenario,
        "--lab-dir", str(lab.state_dir), "--bound", "900", timeout=3600,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    (drill,) = json.loads(result.stdout)
    out = REPO / ".hakvm" / f"e2e-drill-{scenario}.json"
    out.write_text(json.dumps(drill, indent=2))
    failed = [i for i in drill["invariants"] if not i["ok"]]
    assert drill["passed"] and not failed, json.dumps(drill, indent=1)
    assert result.returncode == 0
    return cast(dict[str, Any], drill)


@pytest.mark.readonly
def test_drill_refuses_what_is_not_a_lab(spec_file: Path, tmp_path: Path) -> None:
    result = hakvm("drill", str(spec_file), "--scenario", "node-crash", "--lab-dir", str(tmp_path))
    assert result.returncode == 3
    assert "add --yes-really" in result.stderr
    result = hakvm(
        "drill", str(spec_file), "--scenario", "node-crash", "--lab-dir", str(tmp_path),
        "--yes-really",
    )  # fmt: skip
    assert result.returncode == 3 and "--witness-vm NAME" in result.stderr


@pytest.mark.extended
def test_drill_with_faults_injected_from_inside_the_nodes(lab: LabHandle, spec_file: Path) -> None:
    """What a real cluster gets (`--yes-really`): nftables cuts the heartbeat link on the
    nodes themselves; nothing may move, restart or be fenced."""
    result = hakvm(
        "drill", "--json", str(spec_file), "--scenario", "heartbeat-link-loss",
        "--lab-dir", str(lab.state_dir), "--inject", "nodes", "--yes-really", timeout=1800,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    (drill,) = json.loads(result.stdout)
    (REPO / ".hakvm" / "e2e-drill-nodes-heartbeat-link-loss.json").write_text(
        json.dumps(drill, indent=2)
    )
    assert drill["passed"], json.dumps(drill, indent=1)
    for node in ("node01", "node02"):  # healed: the drill's table is gone
        assert "hakvm_drill" not in lab.check(node, ["nft", "list", "tables"])


@pytest.mark.extended  # 85 s and a snapshot save: make test-e2e (docs/testing.md)
def test_drill_heal_removes_what_an_interrupted_drill_left(
    deployed: LabHandle, spec_file: Path
) -> None:
    """`hakvm drill --heal` after a drill that left its nftables table (injected here, with a
    rule for a loopback address nothing uses, so that the cluster does not notice) and a stopped
    BMC: exit 0, both gone; a second heal finds nothing. Seconds of lab time."""
    table = (
        "table inet hakvm_drill {\n  chain input {\n"
        "    type filter hook input priority -200; policy accept;\n"
        "    ip saddr 127.255.255.254 drop\n  }\n}\n"
    )
    injected = deployed.run("node01", ["nft", "-f", "-"], input=table)
    assert injected.returncode == 0, injected.stderr
    assert "table inet hakvm_drill" in deployed.check("node01", ["nft", "list", "tables"])
    stopped = deployed.hakvm("bmc-stop", "node02")
    assert stopped.returncode == 0, stopped.stderr
    args = ("drill", str(spec_file), "--heal", "--lab-dir", str(deployed.state_dir))
    healed = hakvm(*args, timeout=300)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert "node01: removed nftables table inet hakvm_drill" in healed.stdout.splitlines()
    assert "lab: node02's BMC started" in healed.stdout.splitlines()
    for node in ("node01", "node02"):
        assert "hakvm_drill" not in deployed.check(node, ["nft", "list", "tables"])
    assert deployed.status()["nodes"]["node02"]["bmc"] == "running"
    again = hakvm(*args, timeout=300)
    assert (again.returncode, again.stdout) == (0, "no trace of a drill on the nodes\n"), (
        again.stdout + again.stderr
    )


@pytest.mark.extended
@pytest.mark.lab_last  # node02 is reinstalled: the lab's snapshots are forgotten
def test_node_replacement_drill(deployed: LabHandle, spec_file: Path) -> None:
    """node02 dies, gets fresh disks and a new host key (hakvm lab reimage); replace-node
    brings it back while the witness writes on node01: no VM stops, no acknowledged write is
    lost, every copy UpToDate on both; then a node-crash of node01 fails over onto node02."""
    drill = _passing_drill(deployed, spec_file, "node-replacement")
    assert drill["witness"]["acked"] > 0 and drill["witness"]["lost"] == []
    assert drill["witness"]["reader"] == "node02"  # the acked records reached the new copy
    names = {i["name"] for i in drill["invariants"]}
    assert {"no VM stopped", "every copy UpToDate on both nodes"} <= names
    assert any(n.startswith("failover onto the new node: ") for n in names)
    events = [e["event"] for e in drill["timeline"]]
    assert any(e.startswith("replace-node: vm-a: resync done") for e in events), events
    assert not deployed.has_snapshot("deployed")  # they held node02's old disks
