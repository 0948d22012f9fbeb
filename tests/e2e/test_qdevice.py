"""The quorum device on the lab: the three most telling drills (a partition decided by qnetd
with no delay, qnetd down changing nothing, a node cut off from its peer and qnetd losing
quorum), in make test (the issue asks for them there); and, in make test-e2e, the deployed
two_node cluster switched to the device with its VMs running (one apply, which saves the lab
snapshot ``qdevice``) and the other two drills. qnetd runs on the lab host (started by `lab
up`), never on a node; the guests reach it at 10.0.2.2.

The drills start from the device's cluster: in make test the deploy tests' own (make test
deploys examples/lab-qdevice.yaml from bare: conftest E2E_SPEC), otherwise the switched one.
qnetd-down proves by its own checks that nothing changed (placement, QEMU pids, fencing, health
after the heal): the drill after it skips the restore; isolated-node restores.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from hakvm.lab import specfile
from tests.e2e.conftest import (
    REPO,
    LabHandle,
    hakvm,
    has_quorum_device,
    restore_deployed,
    used_later,
    wait_for,
)
from tests.e2e.test_drills import _passing_drill

pytestmark = [pytest.mark.e2e, pytest.mark.deploy]


@pytest.fixture(scope="session")
def qdevice_spec_file(
    lab: LabHandle, spec_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """examples/lab-qdevice.yaml pointed at the session's lab (its qnetd included): the
    session's own spec when it deploys that."""
    if has_quorum_device(spec_file):
        return spec_file
    directory = tmp_path_factory.mktemp("qdevice-spec")
    return specfile.lab_spec(
        REPO / "examples" / "lab-qdevice.yaml", lab.state_dir, directory / "lab-qdevice.yaml"
    )


def _qemu_pids(lab: LabHandle) -> dict[str, str]:
    pids = {}
    for node in ("node01", "node02"):
        found = lab.run(node, ["sh", "-c", "cat /run/libvirt/qemu/*.pid"])
        pids[node] = found.stdout.strip()
    return pids


def _fence_history(lab: LabHandle) -> str:
    return lab.check("node01", ["crm_mon", "--output-as=xml", "-1"])


def switch_to_qdevice(lab: LabHandle, qdevice_spec_file: Path) -> dict[str, Any]:
    """The deployed two_node cluster onto the device: one apply; snapshot ``qdevice`` after.
    Returns the first healthy `status --json` (its check reads it: a status run is 6-35 s
    of make test here)."""
    result = hakvm("apply", str(qdevice_spec_file))
    assert result.returncode == 0, result.stdout + result.stderr
    healthy: list[dict[str, Any]] = []

    def reports_healthy() -> bool:
        status = hakvm("status", "--json", str(qdevice_spec_file))
        if status.returncode == 0:
            healthy.append(json.loads(status.stdout))
        return status.returncode == 0

    wait_for("a healthy cluster with the device", reports_healthy, 600)
    lab.save("qdevice")
    return healthy[0]


@pytest.fixture
def qdevice(lab: LabHandle, spec_file: Path, qdevice_spec_file: Path) -> LabHandle:
    """The deployed lab on the quorum device, restored unless it still is: the deploy tests'
    own (``deployed``) when the session deploys the device, else ``qdevice``."""
    if has_quorum_device(spec_file):
        return restore_deployed(lab, spec_file)
    if lab.current == "qdevice" or lab.has_snapshot("qdevice"):
        lab.ensure("qdevice")
    else:
        restore_deployed(lab, spec_file)
        switch_to_qdevice(lab, qdevice_spec_file)
    return lab


@pytest.mark.readonly
def test_lab_runs_qnetd_on_the_host(lab: LabHandle) -> None:
    state = lab.status()["qnetd"]
    assert state["state"] == "running" and state["address"] == "127.0.0.1:5403/tcp"
    assert state["guest_address"] == "10.0.2.2:5403"


@pytest.mark.extended  # an apply of 3.5-5 min here: make test deploys the device instead
@pytest.mark.leaves_snapshot  # it saves ``qdevice``, then only reads
def test_a_running_cluster_switches_to_the_device_with_its_vms_running(
    request: pytest.FixtureRequest, lab: LabHandle, spec_file: Path, qdevice_spec_file: Path
) -> None:
    if has_quorum_device(spec_file):
        pytest.skip("this session deploys the quorum device's spec: no two_node cluster")
    # The deploy tests' cluster is saved as ``deployed`` first only if a later test starts
    # from it (make test-e2e's); in make test only the device's drills follow.
    restore_deployed(lab, spec_file, keep=used_later(request, "deployed"))
    pids, fencing = _qemu_pids(lab), _fence_history(lab)
    assert all(pids.values()), pids
    status = switch_to_qdevice(lab, qdevice_spec_file)
    # Not one VM restarted, nobody fenced: corosync was reloaded, never restarted.
    assert _qemu_pids(lab) == pids
    assert _fence_history(lab).count("<fence_event") == fencing.count("<fence_event")
    quorum = lab.check("node01", ["corosync-quorumtool", "-s"])
    assert "Quorate:          Yes" in quorum and "Qdevice" in quorum, quorum
    assert re.search(r"^\s+0\s+1\s+Qdevice$", quorum, flags=re.M), quorum  # its vote counts
    assert len(re.findall(r"\bA,V,N?MW\b", quorum)) == 2, quorum  # both nodes' qdevice vote
    conf = lab.check("node02", ["cat", "/etc/corosync/corosync.conf"])
    assert "two_node: 1" not in conf and "wait_for_all: 1" in conf and "model: net" in conf
    cib = lab.check("node01", ["cibadmin", "-Q"])
    assert "pcmk_delay_base" not in cib and "pcmk_delay_max" not in cib
    # A second apply has nothing to do; plan says the certificates are there.
    plan = hakvm("plan", str(qdevice_spec_file))
    assert plan.returncode == 0, plan.stderr
    assert "qdevice certificates: present" in plan.stdout and "no changes" in plan.stdout, (
        plan.stdout
    )
    for node in status["nodes"]:
        assert node["qdevice"] == {"connected": True, "vote_cast": True, "state": "Connected"}
    doctor = hakvm("doctor", "--json", str(qdevice_spec_file))
    found = [f["check"] for f in json.loads(doctor.stdout)["findings"]]
    assert not [f for f in found if f.startswith("qdevice")], found


@pytest.mark.drill
@pytest.mark.parametrize(
    "scenario",
    [
        # First; it leaves the lab as the snapshot it started from (it fails on any change).
        pytest.param("qnetd-down", marks=pytest.mark.leaves_snapshot),
        "partition-with-qdevice",
        "isolated-node",
    ],
)
def test_qdevice_drill(qdevice: LabHandle, qdevice_spec_file: Path, scenario: str) -> None:
    drill = _passing_drill(qdevice, qdevice_spec_file, scenario)
    if scenario != "qnetd-down":
        assert drill["witness"]["acked"] > 0 and drill["witness"]["lost"] == []
    if scenario == "qnetd-down":
        assert qdevice.status()["qnetd"]["state"] == "running"  # healed


@pytest.mark.drill
@pytest.mark.extended
@pytest.mark.parametrize("scenario", ["node-crash-with-qdevice", "qnetd-down-then-crash"])
def test_qdevice_drill_extended(qdevice: LabHandle, qdevice_spec_file: Path, scenario: str) -> None:
    _passing_drill(qdevice, qdevice_spec_file, scenario)
