"""On the deployed lab, cheaply (plans and refusals, no apply): hakvm never destroys what it
did not create (issue 16, items 1-3).

1. A stopped cluster that is not this spec's is refused by name, and `--replace-cluster`
   plans to move its CIB aside, never `rm` it.
2. A disk holding a partition table with a filesystem is refused, a blank one is planned
   with its lsblk line (both file-backed loop devices on node01's root disk), and the
   /dev/disk/by-* links the guard resolves are read right from a real node.
3. An LV planted under a new VM's name is refused until `--adopt`, and `vm remove
   --delete-storage` refuses to lvremove it.

Each test starts from the ``deployed`` snapshot and restores it at the end.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hakvm.remote.disks import LINKS_ARGV, parse_links
from tests.e2e.conftest import LabHandle, hakvm, restore_deployed

# Each test restores the deployed lab twice and plans or applies: make test-e2e (CI's time).
# readonly: each puts the lab back itself (`restored`), so the next test need not.
pytestmark = [pytest.mark.e2e, pytest.mark.deploy, pytest.mark.extended, pytest.mark.readonly]

NODES = ("node01", "node02")


@pytest.fixture
def restored(deployed: LabHandle, spec_file: Path) -> Iterator[LabHandle]:
    """The deployed lab, put back as it was after the test (saved first if it never was)."""
    restore_deployed(deployed, spec_file)
    try:
        yield deployed
    finally:
        deployed.restore("deployed")


def plan_steps(result: Any) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stdout + result.stderr
    return [s for p in json.loads(result.stdout)["phases"] for s in p["steps"]]


def spec_copy(spec_file: Path, directory: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    data = yaml.safe_load(spec_file.read_text())
    edit(data)
    out = directory / "lab.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_a_stopped_foreign_cluster_is_refused_and_replacing_it_moves_it(
    restored: LabHandle, spec_file: Path
) -> None:
    lab = restored
    # Pacemaker stopped on node02 (maintenance mode: nothing moves), its corosync.conf now
    # another cluster's (no hakvm header, another name): only the CIB on disk is left.
    lab.check("node01", ["crm_attribute", "--name", "maintenance-mode", "--update", "true"])
    lab.check("node02", ["systemctl", "stop", "pacemaker"], timeout=180)
    conf = "/etc/corosync/corosync.conf"
    lab.check("node02", ["sed", "-i", "-e", "1,2d", "-e", "s/cluster_name: lab/cluster_name: prod/",
                         conf])  # fmt: skip
    refused = hakvm("plan", str(spec_file), timeout=600)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    (line,) = [x for x in refused.stderr.splitlines() if "belongs to cluster" in x]
    assert "node02: belongs to cluster prod (corosync.conf not hakvm's, nodes node01, node02;" in (
        line
    )
    assert line.endswith("--replace-cluster prod moves its configuration aside and replaces it")
    steps = plan_steps(hakvm("plan", str(spec_file), "--replace-cluster", "prod", "--json"))
    (moved,) = [s for s in steps if s["title"].startswith("stop cluster prod")]
    assert moved["node"] == "node02"
    assert "/var/lib/pacemaker/cib/hakvm-moved-" in moved["title"]
    assert not any("rm -f" in a for s in steps for a in s["actions"])
    # A plan changes nothing: the CIB and its signature are where Pacemaker keeps them.
    lab.check("node02", ["test", "-s", "/var/lib/pacemaker/cib/cib.xml"])
    lab.check("node02", ["test", "-s", "/var/lib/pacemaker/cib/cib.xml.sig"])


# Writes a DOS partition table with one Linux partition (from sector 2048 to the end) into
# the image file argv[1] of argv[2] sectors: the lab image has python3 but no sfdisk.
MBR = """import struct, sys
sectors = int(sys.argv[2])
with open(sys.argv[1], "r+b") as f:
    f.seek(446)
    f.write(struct.pack("<B3sB3sII", 0, bytes(3), 0x83, bytes(3), 2048, sectors - 2048))
    f.seek(510)
    f.write(b"\\x55\\xaa")
"""


def loop_device(lab: LabHandle, image: str, mib: int, partitioned: bool) -> str:
    lab.check("node01", ["truncate", "-s", f"{mib}M", image])
    if partitioned:
        lab.check("node01", ["python3", "-c", MBR, image, str(mib * 2048)])
    lab.check("node01", ["modprobe", "loop"])
    device = lab.check("node01", ["losetup", "-f", "-P", "--show", image]).strip()
    lab.check("node01", ["udevadm", "trigger", "--action=change", "--settle", device])
    return device


def test_a_disk_holding_data_is_refused_a_blank_one_shown_with_its_lsblk_line(
    restored: LabHandle, spec_file: Path, tmp_path: Path
) -> None:
    lab = restored
    used = loop_device(lab, "/var/tmp/hakvm-e2e-used.img", 512, partitioned=True)
    lab.check("node01", ["mkfs.xfs", "-q", f"{used}p1"])
    lab.check("node01", ["udevadm", "trigger", "--action=change", "--settle", used, f"{used}p1"])
    blank = loop_device(lab, "/var/tmp/hakvm-e2e-blank.img", 64, partitioned=False)

    def on(device: str) -> Callable[[dict[str, Any]], None]:
        def edit(data: dict[str, Any]) -> None:
            storage = data["nodes"][0]["storage"]  # node01 only; node02 keeps its VG
            storage["volume_group"] = "scratch"  # not there: create_from is used
            storage["create_from"] = {"device": device, "destroy_existing_data": True}

        return edit

    refused = hakvm("plan", str(spec_copy(spec_file, tmp_path, on(used))), timeout=600)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    name = used.removeprefix("/dev/")
    assert f"node01: {used} holds a dos partition table ({name}p1: xfs): refusing to wipe it" in (
        refused.stderr
    )
    assert "expect_signature: dos" in refused.stderr
    steps = plan_steps(hakvm("plan", str(spec_copy(spec_file, tmp_path, on(blank))), "--json"))
    (wipe,) = [s for s in steps if s["title"] == f"wipe {blank} and create volume group scratch"]
    assert wipe["actions"][0] == f"wipefs -a {blank}"
    assert f'PATH="{blank}" SIZE="{64 * 2**20}" TYPE="loop" FSTYPE="" PTTYPE=""' in wipe["diff"]
    # The links a stable name resolves through, as the facts batch reads them.
    links = parse_links(lab.check("node01", LINKS_ARGV))
    assert "/dev/vdb" in links.values(), links


def test_a_planted_lv_is_refused_until_adopted_and_never_lvremoved(
    restored: LabHandle, spec_file: Path, tmp_path: Path
) -> None:
    lab = restored
    spec = tmp_path / "lab.yaml"
    shutil.copy(spec_file, spec)
    for node in NODES:  # someone's volume, named like the VM about to be added
        lab.check(node, ["lvcreate", "-q", "-y", "-V", "64m", "-T", "hakvm/drbdpool", "-n", "vm-c"])
    added = hakvm("vm", "add", str(spec), "vm-c", "--memory", "32MiB", "--disk", "64MiB",
                  "--no-apply")  # fmt: skip
    assert added.returncode == 0, added.stderr
    refused = hakvm("plan", str(spec), timeout=600)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "node01: logical volume hakvm/vm-c exists and is not hakvm's (untagged)" in (
        refused.stderr
    )
    assert "--adopt vm-c" in refused.stderr
    steps = plan_steps(hakvm("plan", str(spec), "--adopt", "vm-c", "--json"))
    adopted = [s for s in steps if s["title"].startswith("adopt hakvm/vm-c (--adopt vm-c; ")]
    assert [s["node"] for s in adopted] == list(NODES)
    assert adopted[0]["actions"] == [
        "lvchange --addtag hakvm_cluster=lab --addtag hakvm_vm=vm-c hakvm/vm-c"
    ]
    removed = hakvm("vm", "remove", str(spec), "vm-c", "--delete-storage", timeout=600)
    assert removed.returncode == 3, removed.stdout + removed.stderr
    assert "logical volume hakvm/vm-c is not cluster lab's VM vm-c's (untagged)" in removed.stderr
    for node in NODES:
        lab.check(node, ["lvs", "hakvm/vm-c"])  # still there
