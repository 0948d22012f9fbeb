"""On the deployed lab, cheaply (plans and refusals, no apply): hakvm never destroys what it
did not create (issue 16, item 1).

1. A stopped cluster that is not this spec's is refused by name, and `--replace-cluster`
   plans to move its CIB aside, never `rm` it.

Each test starts from the ``deployed`` snapshot and restores it at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import LabHandle, hakvm

pytestmark = [pytest.mark.e2e, pytest.mark.deploy]

NODES = ("node01", "node02")


@pytest.fixture
def restored(deployed: LabHandle) -> Iterator[LabHandle]:
    """The deployed lab, put back as it was after the test."""
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
