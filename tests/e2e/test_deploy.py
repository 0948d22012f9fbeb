"""End to end on the lab: apply takes two bare nodes to a fenced cluster running replicated VMs.

Order matters: an apply killed in the storage phase on the bare lab, its re-run to
convergence, a no-op re-apply (which saves the lab snapshot ``deployed`` the later tests
start from), then a hard node kill (the node-crash drill) that must be fenced and failed over.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hakvm.remote.pacemaker import ClusterState, parse_crm_mon
from tests.e2e.conftest import REPO, STATE_DIR, LabHandle, hakvm, has_quorum_device, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.deploy]

TIMINGS: dict[str, float] = {}


def cluster_state(lab: LabHandle, node: str = "node01") -> ClusterState:
    return parse_crm_mon(lab.check(node, ["crm_mon", "--output-as=xml", "-1"]))


def test_apply_killed_in_storage_phase_then_converges(lab: LabHandle, spec_file: Path) -> None:
    lab.ensure("bare")
    env = dict(os.environ, HAKVM_STATE_DIR=str(STATE_DIR))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hakvm.cli", "apply", str(spec_file)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        # Kill right after the first volume exists: LVs made, DRBD not yet up.
        if "create volume hakvm/" in line and "ok" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)

    started = time.monotonic()
    result = hakvm("apply", str(spec_file))
    TIMINGS["first_apply"] = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr

    quorum = lab.check("node01", ["corosync-quorumtool", "-s"])
    assert "Quorate:          Yes" in quorum, quorum
    if has_quorum_device(spec_file):  # make test's: both nodes and the device's vote
        assert "Total votes:      3" in quorum and "Qdevice" in quorum, quorum
        assert len(re.findall(r"\bA,V,N?MW\b", quorum)) == 2, quorum  # both nodes' qdevice
    else:
        assert "Total votes:      2" in quorum, quorum
    links = lab.check("node01", ["corosync-cfgtool", "-s"])
    assert "LINK ID 0" in links and "LINK ID 1" in links, links

    props = lab.check("node01", ["crm_attribute", "--type", "crm_config",
                                 "--name", "stonith-enabled", "--query"])  # fmt: skip
    assert "value=true" in props

    def vms_placed() -> bool:
        state = cluster_state(lab)
        return state.resources["vm-a"].running_on == ["node01"] and state.resources[
            "vm-b"
        ].running_on == ["node02"]

    wait_for("vm-a on node01 and vm-b on node02", vms_placed, 300)
    state = cluster_state(lab)
    for fence in ("node01_fence", "node02_fence"):
        assert state.resources[fence].active_on, f"{fence} not started"
    assert state.resources["node01_fence"].active_on == ["node02"]
    for node in ("node01", "node02"):
        for vm in ("vm-a", "vm-b"):
            dstate = lab.check(node, ["drbdadm", "dstate", vm]).strip()
            assert dstate == "UpToDate/UpToDate", f"{node} {vm}: {dstate}"
        domains = lab.check(node, ["virsh", "list", "--name"])
        ps = lab.check(node, ["ps", "-eo", "user,comm"])
        qemu_users = {line.split()[0] for line in ps.splitlines() if "qemu" in line}
        assert "root" not in qemu_users, ps
        assert domains.strip(), f"{node} runs no VM"


@pytest.mark.readonly
def test_second_apply_changes_nothing(lab: LabHandle, spec_file: Path) -> None:
    started = time.monotonic()
    result = hakvm("apply", "--json", str(spec_file))
    TIMINGS["noop_apply"] = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    changed = [s for p in report["phases"] for s in p["steps"]]
    assert report["changes"] == 0, json.dumps(changed, indent=1)
    plan = hakvm("plan", str(spec_file))
    assert plan.returncode == 0
    assert "no changes" in plan.stdout
    if has_quorum_device(spec_file):
        assert "qdevice certificates: present" in plan.stdout, plan.stdout
    # The snapshot ``deployed`` is saved only before a test that may change the cluster
    # (conftest `keep`): make test's read-only checks share this state and never restore.
    lab.reached("deployed")


@pytest.mark.extended  # 11-12 min of emulated CPU: make test-e2e, make demo (docs/testing.md)
def test_killed_node_is_fenced_and_vm_stays_on_survivor(
    deployed: LabHandle, spec_file: Path
) -> None:
    """`hakvm lab kill node02` through the node-crash drill (the drill *is* this test, with
    the acknowledged-write witness added): node02 is fenced, vm-b restarts on node01, and
    stays there when node02 is back."""
    lab = deployed
    before = cluster_state(lab)
    assert before.resources["vm-b"].running_on == ["node02"]
    assert before.resources["vm-a"].running_on == ["node01"]
    result = hakvm(
        "drill", "--json", str(spec_file), "--scenario", "node-crash",
        "--lab-dir", str(lab.state_dir), "--bound", "900", timeout=3600,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    (drill,) = json.loads(result.stdout)
    (REPO / ".hakvm" / "e2e-drill-node-crash.json").write_text(json.dumps(drill, indent=2))
    events = [e["event"] for e in drill["timeline"]]
    assert "fault injected (node-crash) on node02" in events, events  # the tie-break victim
    assert drill["passed"], json.dumps(drill, indent=1)
    assert drill["witness"]["acked"] > 0 and drill["witness"]["lost"] == []
    TIMINGS["failover"] = drill["recovery_s"]
    state = cluster_state(lab)
    fenced = [e for e in state.fencing if e.target == "node02" and e.status == "success"]
    assert fenced, f"no successful fencing of node02 recorded: {state.fencing}"
    assert state.resources["vm-b"].active_on == ["node01"], "vm-b moved back: stickiness broken"
    assert state.resources["vm-a"].active_on == ["node01"]
    out = REPO / ".hakvm" / "e2e-timings.json"
    out.write_text(json.dumps(TIMINGS, indent=2))
