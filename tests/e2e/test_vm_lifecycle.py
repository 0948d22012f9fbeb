"""`hakvm vm add / list / remove` end to end on the deployed lab: each changes only its VM.

"Only its VM" is read from Pacemaker's own operation history: the last start/stop/migrate
of every other VM and DRBD clone (its call-id per node) must be the same before and after.
The added VM uses the other disk mode (qcow2 on XFS on DRBD: the deployed VMs are block-mode),
so the same test also moves it the only way that mode allows: a clean stop/start, outage
measured.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from hakvm.remote import pacemaker
from hakvm.render.libvirt import qcow2_dir
from tests.e2e.conftest import LabHandle, hakvm, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.deploy]

OTHERS = ("vm-a", "vm-a_drbd", "vm-b", "vm-b_drbd")


def last_operations(lab: LabHandle) -> dict[tuple[str, str], str]:
    """(node, resource) -> call-id of its last non-recurring operation, from the CIB status."""
    return pacemaker.last_operations(
        lab.check("node01", ["cibadmin", "-Q", "-o", "status"]), OTHERS
    )


def vm_list(spec: Path) -> dict[str, dict[str, Any]]:
    result = hakvm("vm", "list", "--json", str(spec), timeout=300)
    assert result.returncode == 0, result.stderr
    return {vm["name"]: vm for vm in json.loads(result.stdout)["vms"]}


@pytest.mark.extended  # a third VM created, started, moved, removed (docs/testing.md)
def test_vm_add_then_remove_touches_only_that_vm(
    deployed: LabHandle, spec_file: Path, tmp_path: Path
) -> None:
    lab = deployed
    spec = tmp_path / "lab.yaml"  # vm add/remove edit the spec: keep the session's intact
    shutil.copy(spec_file, spec)
    wait_for("both VMs running", lambda: all(
        vm["state"] == "running" for vm in vm_list(spec).values()), 600, interval=10)  # fmt: skip
    before = last_operations(lab)
    assert {name for _, name in before} == set(OTHERS), before

    added = hakvm(
        "vm", "add", str(spec), "vm-c", "--memory", "32MiB", "--disk", "512MiB",
        "--mode", "qcow2-on-xfs", "--preferred-node", "node02", "--bridge", "br0",
        "--force-stop", timeout=2400,
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    assert "vm-c" in spec.read_text()

    def vm_c_running_replicated(node: str) -> dict[str, Any] | None:
        vm = vm_list(spec)["vm-c"]  # "unknown" while a loaded node is slow to answer SSH
        disks = {(d["disk"], d["peer_disk"]) for d in vm["drbd"]}
        placed = vm["state"] == "running" and vm["running_on"] == [node]
        return vm if placed and disks == {("UpToDate", "UpToDate")} else None

    wait_for("vm-c on node02, UpToDate on both", lambda: vm_c_running_replicated("node02"), 300,
             interval=10)  # fmt: skip
    assert vm_list(spec)["vm-c"]["disk_mode"] == "qcow2-on-xfs"
    assert last_operations(lab) == before  # nothing else was stopped, started or moved

    # qcow2-on-xfs cannot live-migrate (XFS is mounted on one node): migrate stops it, moves
    # the filesystem with the DRBD Primary, starts it on the target, and measures the outage.
    moved = hakvm("migrate", "--json", str(spec), "vm-c", "--to", "node01", timeout=1200)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    move = json.loads(moved.stdout)
    assert (move["kind"], move["source"], move["target"]) == ("restart", "node02", "node01")
    assert move["downtime_ms"] is None and 0 < move["outage_s"] <= move["seconds"], move
    mounted = lab.check("node01", ["findmnt", "-n", "-o", "SOURCE", qcow2_dir("vm-c")])
    assert mounted.strip().startswith("/dev/drbd"), mounted
    assert lab.run("node02", ["findmnt", qcow2_dir("vm-c")]).returncode == 1
    assert "cli-prefer-vm-c" not in lab.check("node01", ["cibadmin", "-Q", "-o", "constraints"])
    wait_for("vm-c on node01, UpToDate on both", lambda: vm_c_running_replicated("node01"), 300,
             interval=10)  # fmt: skip
    assert last_operations(lab) == before

    refused = hakvm("vm", "remove", str(spec), "vm-c", timeout=300)
    assert refused.returncode == 3 and "--force" in refused.stderr, refused.stderr
    assert "vm-c" in spec.read_text()

    removed = hakvm("vm", "remove", str(spec), "vm-c", "--force", "--delete-storage", timeout=900)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "vm-c" not in spec.read_text()
    assert "vm-c" not in lab.check("node01", ["cibadmin", "-Q", "-o", "configuration"])
    for node in ("node01", "node02"):
        lvs = lab.check(node, ["lvs", "--noheadings", "-o", "lv_name"])
        assert "vm-c" not in lvs, f"{node}: {lvs}"
        assert lab.run(node, ["test", "-e", "/etc/drbd.d/vm-c.res"]).returncode == 1
        assert "vm-c" not in lab.check(node, ["drbdadm", "status", "all"])
    assert set(vm_list(spec)) == {"vm-a", "vm-b"}
    assert last_operations(lab) == before
