"""The collector on node answers (tests/unit/data/agent and the status recordings): the file it
writes passes `promtool check metrics`, holds every series and label Grafana dashboard 12229
queries, and moves the right series when a link is cut, a node crashes, DRBD resyncs; a
source that fails leaves the rest written."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from hakvm.agent import collector, layout
from hakvm.agent.collector import Answer
from hakvm.agent.config import AgentConfig
from hakvm.agent.exposition import render
from tests.unit.agent_samples import DATA, dashboard_problems, lab_config, promtool_check, samples

AGENT = DATA / "agent"
STATUS = {"healthy", "hb-cut"}


def status_file(state: str, node: str, key: str) -> str:
    from tests.unit.recorded import answers

    return answers(state)[node].text(key)


def node_answers(
    crm_mon: str = "crm_mon-healthy.xml",
    quorumtool: str = "quorumtool-both.txt",
    state: str = "healthy",
    bmc: Answer = (0, "Chassis Power is on\n"),
) -> tuple[dict[str, Answer], dict[str, str]]:
    """What node01's tools say (commands by name; files by path)."""
    commands: dict[str, Answer] = {
        "crm_mon": (0, (AGENT / crm_mon).read_text()),
        "cibadmin": (0, (AGENT / "cibadmin-constraints.xml").read_text()),
        "quorumtool": (0, (AGENT / quorumtool).read_text()),
        "cfgtool": (0, status_file(state, "node01", "cfgtool")),
        "bmc": bmc,
    }
    files = {
        "/proc/drbd": status_file(state, "node01", "proc_drbd"),
        "/proc/net/bonding/bond0": status_file(state, "node01", "bond_bond0"),
    }
    return commands, files


def collect(
    commands: dict[str, Answer],
    files: dict[str, str],
    cfg: AgentConfig | None = None,
    cache: dict[str, Any] | None = None,
) -> tuple[str, dict[str, list[str]]]:
    """One run of the collector on these answers: its text, and the commands it ran."""
    cfg = cfg or lab_config("node01")
    ran: dict[str, list[str]] = {}

    def run(wanted: dict[str, list[str]], timeout: float) -> dict[str, Answer]:
        assert timeout <= cfg.interval_s
        ran.update(wanted)
        return {name: commands.get(name) for name in wanted}

    now = time.time()
    seen = collector.gather(cfg, {} if cache is None else cache, now, 9.0, run=run,
                            read=files.get)  # fmt: skip
    return render(collector.families(cfg, seen, time.monotonic(), now)), ran


def value(text: str, name: str, **labels: str) -> float:
    found = [v for (n, ls), v in samples(text).items()
             if n == name and set(labels.items()) <= set(ls)]  # fmt: skip
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]



def test_healthy_node_passes_promtool_check_metrics() -> None:
    text, ran = collect(*node_answers())
    promtool_check(text)
    assert value(text, "hakvm_collector_success") == 1
    assert value(text, "hakvm_cluster_status") == 0
    assert ran["crm_mon"] == ["crm_mon", "-X", "--inactive", "--fence-history=2"]
    assert "drbdsetup" not in ran  # /proc/drbd says 8.4: no JSON to ask for
    assert not re.search(r"\} \S+ \d+$", text, re.M), "no sample carries a timestamp"


def test_every_series_and_label_dashboard_12229_reads_is_there() -> None:
    assert dashboard_problems(collect(*node_answers())[0]) == []
    assert dashboard_problems("") != []  # the check sees a missing series


def test_a_cut_heartbeat_link_moves_link_and_ring_series() -> None:
    text, _ = collect(*node_answers(state="hb-cut"))
    promtool_check(text)
    assert value(text, "hakvm_corosync_link_up", link="0", peer="node02") == 0
    assert value(text, "hakvm_corosync_link_up", link="1", peer="node02") == 1
    assert value(text, "ha_cluster_corosync_rings", number="0", address="10.88.1.1") == 0
    assert value(text, "ha_cluster_corosync_rings", number="1", ring_id="1.2a") == 1
    assert value(text, "ha_cluster_corosync_ring_errors") == 1
    assert value(text, "hakvm_cluster_status") == 1


def test_a_crashed_peer_is_offline_not_a_faulty_ring() -> None:
    commands, files = node_answers("crm_mon-node02-fenced.xml", "quorumtool-node02-lost.txt")
    cfgtool = commands["cfgtool"]
    assert cfgtool is not None
    commands["cfgtool"] = (1, cfgtool[1].replace("2:\tconnected", "2:\tdisconnected"))
    files["/proc/drbd"] = files["/proc/drbd"].replace(
        "cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate",
        "cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown")  # fmt: skip
    text, _ = collect(commands, files)
    promtool_check(text)
    assert value(text, "ha_cluster_pacemaker_nodes", node="node02", status="online") == 0
    assert value(text, "ha_cluster_pacemaker_nodes", node="node01", status="dc") == 1
    assert value(text, "hakvm_corosync_link_up", link="0", peer="node02") == 0
    assert value(text, "ha_cluster_corosync_ring_errors") == 0  # node02 is not a member
    assert value(text, "ha_cluster_corosync_quorum_votes", type="total_votes") == 1
    assert value(text, "hakvm_vm_running", vm="vm-b") == 1
    assert value(text, "hakvm_vm_on_preferred_node", vm="vm-b", node="node02") == 0
    assert value(text, "hakvm_drbd_connected", resource="vm-a") == 0
    assert value(text, "hakvm_drbd_disk_up_to_date", resource="vm-a", disk="peer") == 0
    assert value(text, "ha_cluster_drbd_connections", resource="vm-a",
                 peer_disk_state="dunknown", peer_role="Unknown") == 1  # fmt: skip
    assert value(text, "hakvm_cluster_status") == 1


def test_a_failing_source_leaves_the_rest_written() -> None:
    commands, files = node_answers()
    commands["crm_mon"] = (102, "")  # crm_mon: not connected
    commands["quorumtool"] = None  # timed out
    text, _ = collect(commands, files)
    promtool_check(text)
    assert value(text, "hakvm_collector_success") == 0
    assert value(text, "hakvm_collector_source_success", source="crm_mon") == 0
    assert value(text, "hakvm_collector_source_success", source="cfgtool") == 1
    names = {n for n, _ in samples(text)}
    assert not any(n.startswith(("ha_cluster_pacemaker_nodes", "ha_cluster_corosync_quorate"))
                   for n in names)  # fmt: skip
    assert {"ha_cluster_pacemaker_location_constraints", "ha_cluster_corosync_rings",
            "ha_cluster_drbd_resources", "hakvm_bond_member_up"} <= names  # fmt: skip
    assert value(text, "hakvm_cluster_status") == 1


def test_a_failed_monitor_counts_as_failed_action_and_fail_count() -> None:
    text, _ = collect(*node_answers("crm_mon-failed-monitor.xml"))
    assert value(text, "hakvm_pacemaker_failed_actions") == 1
    assert value(text, "ha_cluster_pacemaker_fail_count", node="node01", resource="vm-a") == 1
    assert value(text, "ha_cluster_pacemaker_resources", resource="vm-a", status="failed") == 1
    assert value(text, "hakvm_cluster_status") == 2  # vm-a failed, as hakvm status says


FENCE_HISTORY = """  <fence_history>
    <fence_event action="reboot" target="node02" client="pacemaker-controld.1026" \
origin="node01" status="success" delegate="node01" completed="2026-11-26 06:02:11Z"/>
    <fence_event action="reboot" target="node02" client="pacemaker-controld.1026" \
origin="node01" status="failed" exit-reason="timed out" delegate="node01" \
completed="2026-11-26 06:00:40 +01:00"/>
    <fence_event action="reboot" target="node01" client="stonith_admin.3318" \
origin="node02" status="pending" extended-status="1"/>
  </fence_history>
"""


def test_last_fencing_per_target_and_result() -> None:
    """crm_mon --fence-history=2's <fence_history> (Pacemaker 2.1.5 lib/fencing/st_output.c:
    status success|failed|pending; completed in crm_time_as_string's format)."""
    commands, files = node_answers("crm_mon-node02-fenced.xml", "quorumtool-node02-lost.txt")
    mon = commands["crm_mon"]
    assert mon is not None
    commands["crm_mon"] = (0, mon[1].replace("</crm_mon>", FENCE_HISTORY + "</crm_mon>"))
    text, _ = collect(commands, files)
    name = "hakvm_fencing_last_timestamp_seconds"
    assert value(text, name, target="node02", result="success") == 1795672931  # 06:02:11Z
    assert value(text, name, target="node02", result="failed") == 1795669240  # 05:00:40Z
    assert not [k for k in samples(text) if k[0] == name and ("target", "node01") in k[1]]


def test_resync_bytes_eta_and_percentage() -> None:
    commands, files = node_answers()
    files["/proc/drbd"] = files["/proc/drbd"].replace(
        " 0: cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate C r-----\n"
        "    ns:0 nr:0 dw:0 dr:265 al:8 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0\n",
        " 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----\n"
        "    ns:474676 nr:0 dw:0 dr:475400 al:8 bm:0 lo:0 pe:2 ua:0 ap:0 ep:1 wo:f oos:573516\n"
        "\t[=======>............] sync'ed: 45.4% (573516/1048508)K\n"
        "\tfinish: 0:00:37 speed: 15,280 (15,280) K/sec\n")  # fmt: skip
    text, _ = collect(commands, files)
    promtool_check(text)
    assert value(text, "hakvm_drbd_out_of_sync_bytes", resource="vm-a") == 573516 * 1024
    assert value(text, "hakvm_drbd_resync_eta_seconds", resource="vm-a") == 37
    assert value(text, "hakvm_drbd_resync_eta_seconds", resource="vm-b") == 0
    assert value(text, "ha_cluster_drbd_connections_sync", resource="vm-a") == 45.4
    assert value(text, "ha_cluster_drbd_connections_sent", resource="vm-a") == 474676
    assert value(text, "hakvm_drbd_connected", resource="vm-a") == 1
    assert value(text, "hakvm_drbd_disk_up_to_date", resource="vm-a", disk="peer") == 0


def test_bond_member_down_or_missing() -> None:
    commands, files = node_answers()
    files["/proc/net/bonding/bond0"] = files["/proc/net/bonding/bond0"].replace(
        "Slave Interface: eth2\nMII Status: up", "Slave Interface: eth2\nMII Status: down")
    text, _ = collect(commands, files)
    assert value(text, "hakvm_bond_member_up", bond="bond0", member="eth1") == 1
    assert value(text, "hakvm_bond_member_up", bond="bond0", member="eth2") == 0
    del files["/proc/net/bonding/bond0"]
    text, _ = collect(commands, files)
    assert value(text, "hakvm_bond_member_up", bond="bond0", member="eth2") == 0
    assert value(text, "hakvm_collector_source_success", source="bond_bond0") == 0


def test_bmc_checked_through_the_fence_password_file_at_most_once_a_minute() -> None:
    cache: dict[str, Any] = {}
    text, ran = collect(*node_answers(), cache=cache)
    argv = ran["bmc"]
    assert argv[:2] == ["ipmitool", "-I"] and argv[-3:] == ["chassis", "power", "status"]
    assert argv[argv.index("-f") + 1] == "/etc/hakvm/fence/node02.password"
    assert "-P" not in argv and "-E" not in argv  # the password never in argv
    assert value(text, "hakvm_bmc_reachable", node="node02") == 1
    text, ran = collect(*node_answers(bmc=(1, "Error: Unable to establish IPMI v2 session")),
                        cache=cache)  # fmt: skip
    assert "bmc" not in ran and value(text, "hakvm_bmc_reachable", node="node02") == 1
    cache["bmc"]["checked"] -= 61
    text, ran = collect(*node_answers(bmc=None), cache=cache)
    assert "bmc" in ran and value(text, "hakvm_bmc_reachable", node="node02") == 0


def test_drill_results_left_by_hakvm_drill(tmp_path: Path) -> None:
    (tmp_path / "node-crash.json").write_text(
        '{"format": 1, "scenario": "node-crash", "passed": true, "recovery_s": 93.4, '
        '"finished": 1795672931.5}')  # fmt: skip
    (tmp_path / "fence-failure.json").write_text(
        '{"format": 1, "scenario": "fence-failure", "passed": false, "recovery_s": null, '
        '"finished": 1795670000}')  # fmt: skip
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "bad.json").write_text('{"scenario": "../x"}')
    from hakvm.agent import hakvm_metrics

    text = render(hakvm_metrics.drills(collector.read_drills(str(tmp_path))))
    assert value(text, "hakvm_drill_recovery_seconds", scenario="node-crash") == 93.4
    assert value(text, "hakvm_drill_passed", scenario="node-crash") == 1
    assert value(text, "hakvm_drill_passed", scenario="fence-failure") == 0
    assert value(text, "hakvm_drill_last_run_timestamp_seconds",
                 scenario="fence-failure") == 1795670000  # fmt: skip
    assert not [k for k in samples(text) if ("scenario", "../x") in k[1]]


def test_write_is_atomic_readable_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "textfile" / "hakvm.prom"
    collector.write_atomically(str(target), "a 1\n")
    collector.write_atomically(str(target), "a 2\n")
    assert target.read_text() == "a 2\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in target.parent.iterdir()] == ["hakvm.prom"]
    assert layout.TEXTFILE_PATH == "/var/lib/prometheus/node-exporter/hakvm.prom"
