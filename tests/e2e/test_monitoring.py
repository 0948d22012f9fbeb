"""End to end on the deployed lab: what watches the cluster without hakvm (issue 18 items 1
and 3). A node's hakvm.prom passes the host's `promtool check metrics` and holds what
dashboard 12229 reads, node_exporter serves it; a cut heartbeat link moves
hakvm_corosync_link_up within a collector run and the heal brings it back; a live migration lands in
both nodes' events files.

Lab time: seconds for the first two (the timer writes every 15 s), one live migration for
the last. The module starts from the deployed lab (vm-a on node01, vm-b on node02).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from hakvm.agent import layout
from tests.e2e.conftest import LabHandle, hakvm, wait_for
from tests.unit.agent_samples import dashboard_problems, promtool_check, samples

# Each test starts from the deployed cluster (conftest `deployed`: restored unless it still is).
pytestmark = [pytest.mark.e2e, pytest.mark.deploy, pytest.mark.usefixtures("deployed")]

NODES = ("node01", "node02")
# The lab spec's collector interval (examples/lab.yaml: 60 s on TCG nodes): a metric follows a
# change within one run, so the tests allow two intervals (a check, not a speed target).
INTERVAL_S = 60


def value(text: str, name: str, **labels: str) -> float | None:
    found = [v for (n, ls), v in samples(text).items()
             if n == name and set(labels.items()) <= set(ls)]  # fmt: skip
    assert len(found) <= 1, f"{name}{labels}: {found}"
    return found[0] if found else None


def fresh_textfile(
    lab: LabHandle, node: str, timeout: float = 2 * INTERVAL_S, *, run_now: bool = False
) -> str:
    """The node's hakvm.prom as written after this call (its own clock): a new run, the
    timer's or (`run_now`) one started here (systemctl returns when the oneshot ended)."""
    since = float(lab.check(node, ["date", "+%s.%N"]))
    if run_now:
        lab.check(node, ["systemctl", "start", "hakvm-metrics.service"], timeout=timeout)
    text = ""

    def written() -> bool:
        nonlocal text
        result = lab.run(node, ["cat", layout.TEXTFILE_PATH])
        text = result.stdout if result.returncode == 0 else ""
        stamp = value(text, "hakvm_collector_last_run_timestamp_seconds") if text else None
        return stamp is not None and stamp > since

    wait_for(f"a fresh {layout.TEXTFILE_PATH} on {node}", written, timeout, interval=2)
    return text


@pytest.mark.readonly
def test_textfile_passes_promtool_and_holds_what_dashboard_12229_reads(lab: LabHandle) -> None:
    for node in NODES:
        assert lab.check(node, ["systemctl", "is-active", "hakvm-metrics.timer"]).strip() == (
            "active"
        )
        text = fresh_textfile(lab, node, run_now=True)  # not a minute's wait for the timer
        promtool_check(text, missing="fail")  # CI installs it: make deps
        assert dashboard_problems(text) == [], node
        assert value(text, "hakvm_collector_success") == 1, node
        assert value(text, "hakvm_cluster_status") == 0, node
        assert value(text, "hakvm_agent_info", node=node, cluster="lab") == 1
        peer = "node02" if node == "node01" else "node01"
        assert value(text, "hakvm_bmc_reachable", node=peer) == 1
        assert value(text, "hakvm_corosync_link_up", link="0", peer=peer) == 1
        assert value(text, "hakvm_vm_running", vm="vm-a") == 1
        assert value(text, "ha_cluster_drbd_resources", resource="vm-a", disk_state="uptodate")
        # Within the timer's TimeoutStartSec (the lab writes every 30 s: TCG nodes).
        assert (value(text, "hakvm_collector_duration_seconds") or 99) < 29
        # node_exporter (Debian's, installed by apply) serves it, with the node's uname:
        # the dashboard joins both on the host part of `instance` and the node name.
        served = lab.check(node, ["python3", "-c", "import urllib.request; print(urllib."
                                  "request.urlopen('http://127.0.0.1:9100/metrics', timeout=30)"
                                  ".read().decode())"])  # fmt: skip
        assert value(served, "node_textfile_scrape_error") == 0
        assert value(served, "node_textfile_mtime_seconds", file=layout.TEXTFILE_PATH)
        assert value(served, "node_uname_info", nodename=node) == 1
        assert re.search(r'^ha_cluster_pacemaker_nodes\{.*status="dc"', served, re.M)


@pytest.mark.extended  # CI's time: make test-e2e (docs/testing.md)
def test_a_cut_link_moves_link_up_within_a_collector_run_then_heals(lab: LabHandle) -> None:
    def link0(up: float) -> bool:
        text = lab.check("node01", ["cat", layout.TEXTFILE_PATH])
        return value(text, "hakvm_corosync_link_up", link="0", peer="node02") == up

    fresh_textfile(lab, "node01")
    cut = time.monotonic()
    assert lab.hakvm("cut", "hb").returncode == 0
    try:
        wait_for("hakvm_corosync_link_up{link=0} 0 on node01", lambda: link0(0),
                 2 * INTERVAL_S, interval=2)  # fmt: skip
        # knet notices in seconds; the collector writes once per interval.
        took = time.monotonic() - cut
        assert took <= INTERVAL_S + 30, f"link_up moved after {took:.0f}s"
        text = lab.check("node01", ["cat", layout.TEXTFILE_PATH])
        assert value(text, "ha_cluster_corosync_ring_errors") == 1
        assert value(text, "ha_cluster_corosync_rings", number="0") == 0
        assert value(text, "hakvm_corosync_link_up", link="1", peer="node02") == 1
        assert value(text, "hakvm_cluster_status") == 1
    finally:
        assert lab.hakvm("heal").returncode == 0
    wait_for("hakvm_corosync_link_up{link=0} 1 again", lambda: link0(1), 2 * INTERVAL_S, interval=2)


def events(lab: LabHandle, node: str) -> list[dict[str, object]]:
    result = lab.run(node, ["cat", layout.EVENTS_PATH])
    return [json.loads(line) for line in result.stdout.splitlines()] if result.returncode == 0 \
        else []  # fmt: skip


@pytest.mark.extended  # CI's time: make test-e2e (docs/testing.md)
def test_a_live_migration_lands_in_both_nodes_events_files(lab: LabHandle, spec_file: Path) -> None:
    before = {node: len(events(lab, node)) for node in NODES}
    status = json.loads(hakvm("status", "--json", str(spec_file), timeout=300).stdout)
    source = next(vm["running_on"][0] for vm in status["vms"] if vm["name"] == "vm-a")
    target = "node02" if source == "node01" else "node01"
    result = hakvm("migrate", str(spec_file), "vm-a", "--to", target, timeout=1200)
    assert result.returncode == 0, result.stderr

    def recorded(node: str, task: str) -> list[dict[str, object]]:
        return [e for e in events(lab, node)[before[node]:]
                if (e["kind"], e["rsc"], e["task"]) == ("resource", "vm-a", task)]  # fmt: skip

    wait_for("migrate_to recorded on the source",
             lambda: recorded(source, "migrate_to"), 60)  # fmt: skip
    wait_for("migrate_from recorded on the target",
             lambda: recorded(target, "migrate_from"), 60)  # fmt: skip
    (event,) = recorded(target, "migrate_from")[:1]
    assert (event["node"], event["target"], event["rc"]) == (target, target, 0)
    assert isinstance(event["t"], float) and abs(event["t"] - time.time()) < 600
    # Pacemaker runs the agent as hacluster: the file is its own, in its own directory.
    assert lab.check(target, ["stat", "-c", "%U", layout.EVENTS_PATH]).strip() == "hacluster"
