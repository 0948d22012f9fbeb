"""End to end on the deployed lab: status, doctor, live migration, drain and undrain.

The module starts from the deployed lab (snapshot ``deployed``: vm-a on node01, vm-b on
node02); its tests run in file order on that one cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REPO, LabHandle, hakvm, wait_for

# Each test starts from the deployed cluster (conftest `deployed`: restored unless it still is).
pytestmark = [pytest.mark.e2e, pytest.mark.deploy, pytest.mark.usefixtures("deployed")]

FIGURES: dict[str, Any] = {}


def status(spec_file: Path) -> tuple[int, dict[str, Any]]:
    result = hakvm("status", "--json", str(spec_file), timeout=300)
    assert result.returncode in (0, 1, 2), result.stderr
    return result.returncode, json.loads(result.stdout)


def placement(report: dict[str, Any]) -> dict[str, list[str]]:
    return {vm["name"]: vm["running_on"] for vm in report["vms"]}


@pytest.mark.readonly
def test_status_reports_healthy_cluster(lab: LabHandle, spec_file: Path) -> None:
    wait_for("hakvm status healthy", lambda: status(spec_file)[0] == 0, 600, interval=10)
    code, report = status(spec_file)
    assert (code, report["health"], report["problems"]) == (0, "healthy", [])
    for node in report["nodes"]:
        assert node["state"] == "online" and node["quorate"] is True
        assert [link["peer_connected"] for link in node["links"]] == [True, True]
        assert node["bonds"][0]["members_up"] == ["eth1", "eth2"]
    for vm in report["vms"]:
        assert vm["state"] == "running" and len(vm["running_on"]) == 1
        assert {(d["disk"], d["peer_disk"]) for d in vm["drbd"]} == {("UpToDate", "UpToDate")}


@pytest.mark.extended  # CI's time: make test-e2e (docs/testing.md)
def test_status_sees_a_cut_heartbeat_link(lab: LabHandle, spec_file: Path) -> None:
    assert lab.hakvm("cut", "hb").returncode == 0
    try:

        def link0_down() -> bool:
            code, report = status(spec_file)
            return code == 1 and any("knet link 0" in p for p in report["problems"])

        wait_for("status degraded with knet link 0 down", link0_down, 180, interval=5)
        _, report = status(spec_file)
        assert all(vm["state"] == "running" for vm in report["vms"])  # nothing moved
    finally:
        assert lab.hakvm("heal").returncode == 0
    wait_for("links back", lambda: status(spec_file)[0] == 0, 180, interval=5)


@pytest.mark.readonly
def test_doctor_finds_nothing_on_the_deployed_cluster(spec_file: Path) -> None:
    result = hakvm("doctor", "--json", str(spec_file), timeout=600)
    report = json.loads(result.stdout)
    assert result.returncode == 0, json.dumps(report["findings"], indent=1)
    assert {"fencing-disabled", "drbd-split-brain", "secret-readable"} <= set(report["checks_run"])
    # The lab mounts /proc without hidepid: advice only, the cluster stays healthy.
    assert "proc-hidepid" in report["checks_run"]
    assert {(f["check"], f["severity"]) for f in report["findings"]} <= {("proc-hidepid", "advice")}


@pytest.mark.readonly
def test_plan_from_a_machine_without_the_secrets_reads_none(
    lab: LabHandle, spec_file: Path, tmp_path: Path
) -> None:
    """Issue 16 item 4c: plan from an empty state dir (another admin's machine) compares
    each secret by the hash the nodes compute, reads none back, writes none here, and finds
    the deployed cluster's secret files as they should be."""
    empty = tmp_path / "state"
    env = dict(os.environ, HAKVM_STATE_DIR=str(empty))
    result = subprocess.run(
        [sys.executable, "-m", "hakvm.cli", "plan", "--json", str(spec_file)],
        capture_output=True, text=True, timeout=900, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert not empty.exists()
    assert len(report["secrets"]) == 3, report["secrets"]
    for line in report["secrets"]:
        assert line.endswith("node01 present, matches; node02 present, matches"), line
    # Stand-ins for the unread secrets compare exactly: not one file differs.
    steps = [f"{s['node']}: {s['title']}" for p in report["phases"] for s in p["steps"]]
    assert report["changes"] == 0, steps


@pytest.mark.readonly
def test_the_migration_key_opens_only_libvirts_tunnel(lab: LabHandle) -> None:
    """Issue 16 item 9: node02 runs libvirt's tunnel (virt-ssh-helper) for the migration key
    and refuses anything else; the live migration below proves the tunnel carries a move."""
    tunnel = lab.run(
        "node01", ["virsh", "-c", "qemu+ssh://node02-migration/system", "uri"], timeout=180
    )
    assert tunnel.returncode == 0, tunnel.stdout + tunnel.stderr
    probe = "/root/hakvm-forced-command-probe"
    key = "/etc/hakvm/ssh/migration_ed25519"
    for asked in (["true"], ["touch", probe]):
        refused = lab.run("node01", ["ssh", "-i", key, "node02-migration", *asked], timeout=120)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "opens only the libvirt tunnel" in refused.stderr
    assert lab.run("node02", ["test", "-e", probe]).returncode == 1


@pytest.mark.extended  # CI's time: make test-e2e (docs/testing.md)
def test_live_migration_reports_libvirt_downtime(lab: LabHandle, spec_file: Path) -> None:
    _, before = status(spec_file)
    source = placement(before)["vm-a"][0]
    target = "node02" if source == "node01" else "node01"
    result = hakvm("migrate", "--json", str(spec_file), "vm-a", "--to", target, timeout=1200)
    assert result.returncode == 0, result.stderr
    move = json.loads(result.stdout)
    assert (move["kind"], move["source"], move["target"]) == ("live", source, target)
    assert isinstance(move["downtime_ms"], int), move
    # libvirt's downtime_net: the same figure without the switch-over's transfer between the
    # hosts; libvirt leaves it out when the destination's clock runs behind (the lab's nodes
    # have no time source: set from the host's at each restore).
    net = move["downtime_net_ms"]
    assert net is None or 0 < net <= move["downtime_ms"], move
    FIGURES["migration"] = move
    _, after = status(spec_file)
    assert placement(after)["vm-a"] == [target]
    # The temporary preference is gone: the VM stays by stickiness, no cli-prefer left.
    constraints = lab.check("node01", ["cibadmin", "-Q", "-o", "constraints"])
    assert "cli-prefer-vm-a" not in constraints


@pytest.mark.readonly
def test_migrate_refuses_bad_requests(spec_file: Path) -> None:
    result = hakvm("migrate", str(spec_file), "no-such-vm")
    assert result.returncode == 2 and "no VM named 'no-such-vm'" in result.stderr
    _, report = status(spec_file)
    here = placement(report)["vm-a"][0]
    result = hakvm("migrate", str(spec_file), "vm-a", "--to", here)
    assert result.returncode == 3 and f"already runs on {here}" in result.stderr


@pytest.mark.extended  # two VM moves and back: minutes of emulated CPU (docs/testing.md)
def test_drain_moves_everything_then_undrain_keeps_placement(spec_file: Path) -> None:
    result = hakvm("drain", "--json", str(spec_file), "node02", timeout=2400)
    assert result.returncode == 0, result.stderr
    drained = json.loads(result.stdout)
    assert drained["standby"] is True
    assert all(m["kind"] == "live" and m["target"] == "node01" for m in drained["moves"])
    FIGURES["drain"] = drained
    code, report = status(spec_file)
    assert code == 1 and "node02 is in standby: it takes no VMs" in report["problems"]
    assert placement(report) == {"vm-a": ["node01"], "vm-b": ["node01"]}

    result = hakvm("undrain", str(spec_file), "node02", timeout=300)
    assert result.returncode == 0, result.stderr
    wait_for("node02 online again", lambda: status(spec_file)[0] == 0, 300, interval=10)
    _, report = status(spec_file)
    assert placement(report) == {"vm-a": ["node01"], "vm-b": ["node01"]}  # stickiness
    (REPO / ".hakvm" / "e2e-operate.json").write_text(json.dumps(FIGURES, indent=2))
