"""`hakvm doctor` checks, replayed from answers recorded on the lab (healthy, heartbeat link
cut; facts of a deployed node) and from variants edited by exactly the attribute a fault
changes. The healthy recording must give no finding; each check must fire on its fault."""

from __future__ import annotations

import json
import pathlib
import subprocess
import time

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from hakvm.cli import monitor as cli_doctor
from hakvm.deploy.secrets import AUTHKEY_PATH, DRBD_MASTER_PATH
from hakvm.deploy.steps import Step
from hakvm.errors import UnknownError as SpecUnknownError
from hakvm.ops import doctor as dr
from hakvm.remote.facts import (
    FileFact,
    NodeFacts,
    batch_argv,
    facts_from_batch,
    parse_batch,
    parse_hidepid,
)
from hakvm.remote.probes import NodeAnswer, status_commands
from hakvm.render.cib import password_file_path
from hakvm.render.drbd import resource_path
from hakvm.render.migration import KEY_PATH as MIGRATION_KEY_PATH
from hakvm.spec.models import ClusterSpec
from hakvm.spec.validate import validate_file
from tests.unit.recorded import NODES, answers, edit

DATA = pathlib.Path(__file__).parent / "data"
REPO = pathlib.Path(__file__).resolve().parents[2]
FACT_PATHS = ["/etc/hosts", "/etc/network/interfaces.d/hakvm", "/etc/hakvm/no-such-file"]
EVERY_ID = [
    "node-unreachable", *dr.FENCING_IDS, "no-quorum-policy-ignore", "no-quorum-policy-risky",
    "heartbeat-single-link", dr.GUEST_NET, "heartbeat-down", "heartbeat-link-down",
    "vm-no-replication",
    "drbd-split-brain", "drbd-not-uptodate", "clock-skew", "bond-degraded",
    "qdevice-not-voting", "qdevice-with-two-node", "quorum-held-by-wait-for-all",
    "local-secret-readable", "secret-readable",
    "proc-hidepid", "drift",
]  # fmt: skip
NODE01_FENCE = '<resource id="node01_fence" resource_agent="stonith:fence_ipmilan" role="Started"'


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    report = validate_file(REPO / "examples" / "lab.yaml")
    assert report.spec is not None
    return report.spec


# --- recorded inputs and edits -------------------------------------------------------------------


def edit_both(seen: dict[str, NodeAnswer], key: str, old: str, new: str) -> None:
    for answer in seen.values():
        edit(answer, key, old, new)


def deployed_files(spec: ClusterSpec) -> dict[str, dict[str, FileFact | None]]:
    """Recorded facts, plus the secret files at the modes apply writes them (their contents
    are never recorded)."""
    out = {}
    for name in NODES:
        batch = parse_batch((DATA / f"facts-{name}.b64").read_text())
        files = facts_from_batch(NodeFacts(name), batch, FACT_PATHS, {}).files
        files[AUTHKEY_PATH] = FileFact(b"", 0o400)
        files[DRBD_MASTER_PATH] = FileFact(b"", 0o600)
        files[MIGRATION_KEY_PATH] = FileFact(b"", 0o600)
        for vm in spec.vms:
            files[resource_path(vm.name)] = FileFact(b"", 0o600)
        for node in spec.nodes:  # a node holds its peer's BMC password only
            files[password_file_path(node.name)] = (
                None if node.name == name else FileFact(b"", 0o600)
            )
        out[name] = files
    return out


def inputs(
    spec: ClusterSpec,
    seen: dict[str, NodeAnswer] | None = None,
    deployed: dr.DeployView | None = None,
) -> dr.Inputs:
    seen = answers() if seen is None else seen
    if deployed is None:
        deployed = dr.DeployView(files=deployed_files(spec), proc_hidden=dict.fromkeys(NODES, True))
    local = {"/spec/id_ed25519": 0o600, "/spec/bmc.password": 0o400}
    return dr.Inputs({n: dr.TimedAnswer(a, 100.0, 100.2) for n, a in seen.items()}, deployed, local)


def found(report: dr.DoctorReport) -> list[tuple[str, str, str | None]]:
    return [(f.check, f.severity, f.node) for f in report.findings]


def run(spec: ClusterSpec, seen: dict[str, NodeAnswer]) -> dr.DoctorReport:
    return dr.diagnose(spec, inputs(spec, seen))


# --- healthy -------------------------------------------------------------------------------------


def test_healthy_lab_has_no_findings(spec: ClusterSpec) -> None:
    report = dr.diagnose(spec, inputs(spec))
    assert (report.findings, report.health, report.exit_code) == ([], "healthy", 0)
    # The recording predates the clock entry: not checked, and said so.
    assert report.checks_run == [i for i in EVERY_ID if i != "clock-skew"]
    assert report.skipped == ["clock-skew: no clock answer from node01, node02"]


def test_every_finding_line_is_one_line(spec: ClusterSpec) -> None:
    seen = answers("hb-cut")
    edit_both(seen, "crm_mon", 'stonith-enabled="true"', 'stonith-enabled="false"')
    report = run(spec, seen)
    assert report.findings
    assert all("\n" not in f.message + f.fix and f.fix for f in report.findings)


# --- fencing -------------------------------------------------------------------------------------


def test_fencing_disabled_is_critical(spec: ClusterSpec) -> None:
    seen = answers()
    edit_both(seen, "crm_mon", 'stonith-enabled="true"', 'stonith-enabled="false"')
    report = run(spec, seen)
    assert found(report) == [("fencing-disabled", "critical", None)]
    assert report.exit_code == 2 and "stonith-enabled --update true" in report.findings[0].fix


def test_stopped_fence_device_is_critical_while_its_host_is_online(spec: ClusterSpec) -> None:
    seen = answers()
    edit_both(seen, "crm_mon", NODE01_FENCE + ' active="true"', NODE01_FENCE + ' active="false"')
    assert found(run(spec, seen)) == [("fence-device-stopped", "critical", None)]
    # node01_fence runs only on node02: with node02 offline nobody needs to fence node01.
    edit_both(seen, "crm_mon", '<node name="node02" id="2" online="true"',
              '<node name="node02" id="2" online="false"')  # fmt: skip
    assert found(run(spec, seen)) == []


def test_failed_fence_device_and_failed_action_are_critical(spec: ClusterSpec) -> None:
    seen = answers()
    failed = NODE01_FENCE + ' active="true" orphaned="false" blocked="false" managed="true"'
    edit_both(seen, "crm_mon", failed + ' failed="false"', failed + ' failed="true"')
    report = run(spec, seen)
    assert found(report) == [("fence-device-failed", "critical", None)]
    assert "10.0.2.2:6230" in report.findings[0].fix
    assert "crm_resource --cleanup --resource node01_fence" in report.findings[0].fix

    seen = answers()
    failure = (
        '  <failures>\n    <failure op_key="node02_fence_monitor_60000" node="node01" '
        'exitstatus="error" exitreason="Connection timed out" exitcode="1" call="11" '
        'status="complete" interval="60000" task="monitor"/>\n  </failures>\n  <bans>'
    )
    edit_both(seen, "crm_mon", "  <bans>", failure)
    report = run(spec, seen)
    assert found(report) == [("fence-device-failed", "critical", None)]
    assert (
        "node02_fence monitor on node01 error: Connection timed out" in report.findings[0].message
    )


def test_missing_fence_device_is_critical(spec: ClusterSpec) -> None:
    seen = answers()
    device = (
        '    <resource id="node02_fence" resource_agent="stonith:fence_ipmilan" role="Started" '
        'active="true" orphaned="false" blocked="false" managed="true" failed="false" '
        'failure_ignored="false" nodes_running_on="1">\n      <node name="node01" id="1" '
        'cached="true"/>\n    </resource>\n'
    )
    edit_both(seen, "crm_mon", device, "")
    report = run(spec, seen)
    assert found(report) == [("fence-device-missing", "critical", None)]
    assert "node02_fence" in report.findings[0].message


# --- quorum policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("ignore", [("no-quorum-policy-ignore", "critical", None)]),
        ("suicide", [("no-quorum-policy-risky", "warning", None)]),
        ("freeze", []),
        ("demote", []),
    ],
)
def test_no_quorum_policy(spec: ClusterSpec, policy: str, expected: list[object]) -> None:
    seen = answers()
    edit_both(seen, "crm_mon", 'no-quorum-policy="stop"', f'no-quorum-policy="{policy}"')
    assert found(run(spec, seen)) == expected


def test_no_quorum_ignore_in_the_spec_is_fixed_in_the_spec(spec: ClusterSpec) -> None:
    risky = spec.model_copy(
        update={"cluster": spec.cluster.model_copy(update={"no_quorum_policy": "ignore"})}
    )
    seen = answers()
    edit_both(seen, "crm_mon", 'no-quorum-policy="stop"', 'no-quorum-policy="ignore"')
    (finding,) = run(risky, seen).findings
    assert finding.fix == "set cluster.no_quorum_policy: stop in SPEC, then hakvm apply SPEC"
    (finding,) = run(spec, seen).findings
    assert finding.fix == "hakvm apply SPEC restores no-quorum-policy=stop"


# --- heartbeat -----------------------------------------------------------------------------------


def test_one_heartbeat_network_in_the_spec_is_a_warning(spec: ClusterSpec) -> None:
    single = spec.model_copy(update={"heartbeat": spec.heartbeat[:1]})
    report = run(single, answers())
    assert found(report) == [("heartbeat-single-link", "warning", None)]
    assert report.exit_code == 1


def test_cut_heartbeat_link_is_a_warning_naming_the_interface(spec: ClusterSpec) -> None:
    report = run(spec, answers("hb-cut"))
    assert found(report) == [
        ("heartbeat-link-down", "warning", "node01"),
        ("heartbeat-link-down", "warning", "node02"),
    ]
    assert "knet link 0 (10.88.1.1) is down on node01" in report.findings[0].message
    assert report.findings[0].fix.startswith("check eth3 on node01")


LINK1_NODE01 = (
    "LINK ID 1 udp\n\taddr\t= 10.88.0.1\n\tstatus:\n\t\tnodeid:          1:\tlocalhost\n"
    "\t\tnodeid:          2:\tconnected\n"
)


def test_corosync_with_one_link_is_a_warning_and_critical_when_it_is_down(
    spec: ClusterSpec,
) -> None:
    seen = answers()
    edit(seen["node01"], "cfgtool", LINK1_NODE01, "")
    report = run(spec, seen)
    assert found(report) == [("heartbeat-single-link", "warning", "node01")]
    assert "runs 1 knet link, the spec has 2" in report.findings[0].message

    edit(seen["node01"], "cfgtool", "2:\tconnected", "2:\tdisconnected")
    assert found(run(spec, seen)) == [("heartbeat-down", "critical", "node01")]


def test_corosync_not_running_is_critical(spec: ClusterSpec) -> None:
    seen = answers()
    raw = seen["node02"].raw
    assert raw is not None
    raw["cfgtool"] = (1, raw["cfgtool"][1])
    report = run(spec, seen)
    assert found(report) == [("heartbeat-down", "critical", "node02")]
    assert "systemctl start corosync" in report.findings[0].fix


# --- DRBD ----------------------------------------------------------------------------------------


def test_drbd_standalone_is_split_brain(spec: ClusterSpec) -> None:
    seen = answers()
    edit(seen["node01"], "proc_drbd", "0: cs:Connected", "0: cs:StandAlone")
    report = run(spec, seen)
    assert found(report) == [("drbd-split-brain", "critical", "node01")]
    assert "drbdadm connect --discard-my-data vm-a" in report.findings[0].fix


def test_drbd_resync_and_disconnect_are_warnings(spec: ClusterSpec) -> None:
    seen = answers()
    edit(seen["node02"], "proc_drbd", "0: cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate",
         "0: cs:SyncTarget ro:Secondary/Primary ds:Inconsistent/UpToDate")  # fmt: skip
    edit(seen["node02"], "proc_drbd", "oos:0\n", "oos:0\n\tsync'ed: 42.5% (1/2)K\n")
    report = run(spec, seen)
    assert found(report) == [("drbd-not-uptodate", "warning", "node02")]
    assert "SyncTarget Inconsistent/UpToDate, 42.5% synced" in report.findings[0].message
    assert report.findings[0].fix.startswith("wait for the resync")

    seen = answers()
    edit(seen["node01"], "proc_drbd", "1: cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate",
         "1: cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown")  # fmt: skip
    report = run(spec, seen)
    assert found(report) == [("drbd-not-uptodate", "warning", "node01")]
    assert "drbdadm connect vm-b" in report.findings[0].fix


def test_vm_without_drbd_on_a_node_is_critical(spec: ClusterSpec) -> None:
    seen = answers()
    minor1 = (
        " 1: cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate C r-----\n"
        "    ns:0 nr:0 dw:0 dr:265 al:8 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0\n"
    )
    edit(seen["node02"], "proc_drbd", minor1, "")
    report = run(spec, seen)
    assert found(report) == [("vm-no-replication", "critical", "node02")]
    assert "vm-b_drbd_clone" in report.findings[0].fix


# --- clock ---------------------------------------------------------------------------------------


def clocked(spec: ClusterSpec, node02_ahead: float, round_trip: float) -> dr.Inputs:
    made = inputs(spec)
    for name, timed in made.answers.items():
        timed.sent, timed.received = 1000.0, 1000.0 + round_trip
        remote = timed.sent + round_trip / 2 + (node02_ahead if name == "node02" else 0.0)
        assert timed.answer.raw is not None
        timed.answer.raw["clock"] = (0, f"{remote:.9f}\n".encode())
    return made


def test_clock_skew_above_threshold_and_uncertainty_is_a_warning(spec: ClusterSpec) -> None:
    report = dr.diagnose(spec, clocked(spec, node02_ahead=5.0, round_trip=0.4))
    assert found(report) == [("clock-skew", "warning", None)]
    assert "differ by 5.0 s (+/- 0.4 s)" in report.findings[0].message
    assert "chrony" in report.findings[0].fix


def test_small_clock_skew_is_verified_fine(spec: ClusterSpec) -> None:
    report = dr.diagnose(spec, clocked(spec, node02_ahead=0.5, round_trip=0.4))
    assert report.findings == [] and report.skipped == []
    assert "clock-skew" in report.checks_run


def test_clock_skew_within_the_uncertainty_is_not_claimed(spec: ClusterSpec) -> None:
    # 3 s apart, but each batch took 4 s: the true skew may be anything from 0 to 7 s.
    report = dr.diagnose(spec, clocked(spec, node02_ahead=3.0, round_trip=4.0))
    assert report.findings == []
    assert "clock-skew" not in report.checks_run
    assert report.skipped[0].startswith("clock-skew: inconclusive: 3.0 s +/- 4.0 s")


def test_clock_offset_is_taken_at_the_midpoint_of_the_batch() -> None:
    answer = NodeAnswer("node01", {"clock": (0, b"1010.500000000\n")})
    offset = dr.clock_offset(dr.TimedAnswer(answer, sent=1000.0, received=1001.0))
    assert offset == dr.ClockOffset(offset_s=10.0, uncertainty_s=0.5)
    assert dr.clock_offset(dr.TimedAnswer(NodeAnswer("node01", {"clock": (0, b"")}))) is None


def test_clock_entry_is_first_and_read_through_a_real_batch() -> None:
    first = status_commands([])[0]
    assert first == ("clock", ["date", "+%s.%N"])
    sent = time.time()
    out = subprocess.run(batch_argv([first]), capture_output=True, text=True, check=True)
    timed = dr.TimedAnswer(NodeAnswer("local", parse_batch(out.stdout)), sent, time.time())
    offset = dr.clock_offset(timed)
    assert offset is not None
    assert abs(offset.offset_s) <= offset.uncertainty_s + 0.01


# --- bonds ---------------------------------------------------------------------------------------

ETH2 = "Slave Interface: eth2\nMII Status: up\n"


def test_bond_member_down_is_a_warning(spec: ClusterSpec) -> None:
    seen = answers()
    edit(seen["node01"], "bond_bond0", ETH2, "Slave Interface: eth2\nMII Status: down\n")
    report = run(spec, seen)
    assert found(report) == [("bond-degraded", "warning", "node01")]
    assert "bond0 member eth2 is down on node01" in report.findings[0].message


def test_bond_missing_a_spec_member_is_a_warning(spec: ClusterSpec) -> None:
    seen = answers()
    edit(seen["node02"], "bond_bond0", ETH2, "")
    report = run(spec, seen)
    assert found(report) == [("bond-degraded", "warning", "node02")]
    assert "lacks spec member(s) eth2" in report.findings[0].message


def test_absent_bond_is_a_warning(spec: ClusterSpec) -> None:
    seen = answers()
    raw = seen["node02"].raw
    assert raw is not None
    raw["bond_bond0"] = (1, b"")  # cat: /proc/net/bonding/bond0: No such file or directory
    report = run(spec, seen)
    assert found(report) == [("bond-degraded", "warning", "node02")]
    assert (
        report.findings[0].message == "bond0 does not exist on node02 (no /proc/net/bonding/bond0)"
    )


# --- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "mode"),
    [(AUTHKEY_PATH, 0o440), (DRBD_MASTER_PATH, 0o604), (resource_path("vm-a"), 0o644),
     (MIGRATION_KEY_PATH, 0o644), (password_file_path("node02"), 0o640)],
)  # fmt: skip
def test_readable_secret_on_a_node_is_critical(spec: ClusterSpec, path: str, mode: int) -> None:
    files = deployed_files(spec)
    files["node01"][path] = FileFact(b"", mode)
    report = dr.diagnose(spec, inputs(spec, deployed=dr.DeployView(files=files)))
    assert found(report) == [("secret-readable", "critical", "node01")]
    assert report.findings[0].fix == f"on node01: chmod go-rwx {path}"


def _spec_in(tmp_path: pathlib.Path) -> tuple[ClusterSpec, pathlib.Path]:
    data = yaml.safe_load((REPO / "examples" / "lab.yaml").read_text())
    for node in data["nodes"]:
        node["ssh"]["key_file"] = "id_ed25519"
        node["ssh"]["known_hosts"] = None
        node["bmc"]["password_file"] = f"{node['name']}.password"
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    for name in ("id_ed25519", "node01.password", "node02.password"):
        (tmp_path / name).write_text("secret\n")
        (tmp_path / name).chmod(0o600)
    report = validate_file(path)
    assert report.spec is not None
    return report.spec, path


def test_readable_local_secret_is_critical(tmp_path: pathlib.Path) -> None:
    spec, path = _spec_in(tmp_path)
    modes = dr.local_secret_modes(spec, path)
    assert modes == {str(tmp_path / n): 0o600 for n in ("id_ed25519", "node01.password",
                                                          "node02.password")}  # fmt: skip
    assert dr.check_local_secrets(modes) == []
    (tmp_path / "node02.password").chmod(0o640)
    (finding,) = dr.check_local_secrets(dr.local_secret_modes(spec, path))
    assert (finding.check, finding.severity, finding.node) == ("local-secret-readable",
                                                               "critical", None)  # fmt: skip
    assert finding.fix == f"chmod go-rwx {tmp_path / 'node02.password'}"


# --- drift ---------------------------------------------------------------------------------------


def test_drift_reports_each_managed_file_step(spec: ClusterSpec) -> None:
    steps = [
        Step("node01", "hosts", "update /etc/hosts", ()),
        Step("node02", "packages", "install drbd-utils", ()),  # not drift: not in DRIFT_PHASES
        Step("node01", "cib", "push fencing (waited for when new), then resources (CIB patch)", ()),
    ]
    view = dr.DeployView(files=deployed_files(spec), drift=steps)
    report = dr.diagnose(spec, inputs(spec, deployed=view))
    assert found(report) == [("drift", "warning", "node01"), ("drift", "warning", "node01")]
    assert [f.message for f in report.findings] == [
        "drifted: update /etc/hosts",
        "drifted: push fencing (waited for when new), then resources (CIB patch)",
    ]
    assert report.findings[0].fix == dr.DRIFT_FIX


def test_refused_plan_or_missing_facts_are_not_checked_not_passed(spec: ClusterSpec) -> None:
    refused = dr.DeployView(files=deployed_files(spec), drift_error="nodes.node02.bmc: no file")
    report = dr.diagnose(spec, inputs(spec, deployed=refused))
    assert "drift" not in report.checks_run and "secret-readable" in report.checks_run
    assert "drift: plan refused: nodes.node02.bmc: no file" in report.skipped

    report = dr.diagnose(spec, inputs(spec, deployed=dr.DeployView(error="node02: timeout")))
    assert not {"drift", "secret-readable"} & set(report.checks_run)
    assert "secret-readable: no facts: node02: timeout" in report.skipped


# --- unreachable nodes, no Pacemaker -------------------------------------------------------------


def test_unreachable_node_is_a_warning_and_the_other_is_still_checked(spec: ClusterSpec) -> None:
    seen = answers()
    seen["node02"] = NodeAnswer("node02", error="node02: cannot connect: refused")
    edit(seen["node01"], "proc_drbd", "0: cs:Connected", "0: cs:StandAlone")
    report = run(spec, seen)
    assert found(report) == [
        ("drbd-split-brain", "critical", "node01"),
        ("node-unreachable", "warning", "node02"),
    ]
    assert "ssh -p 2202 root@127.0.0.1" in report.findings[1].fix


def test_no_crm_mon_skips_the_pacemaker_checks(spec: ClusterSpec) -> None:
    seen = answers()
    for answer in seen.values():
        assert answer.raw is not None
        answer.raw["crm_mon"] = (1, b"")
    report = run(spec, seen)
    assert report.findings == []
    assert not set(dr.FENCING_IDS) & set(report.checks_run)
    assert any(s.startswith("fencing-disabled") and "crm_mon" in s for s in report.skipped)


# --- the command ---------------------------------------------------------------------------------


def test_invalid_spec_exits_3(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: {name: Not-Valid}\n")
    with pytest.raises(SpecUnknownError) as exc:
        cli_doctor.doctor_cmd.main([str(bad)], standalone_mode=False)
    assert exc.value.exit_code == 3


def test_command_prints_json_and_returns_the_exit_code(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = answers()
    edit_both(seen, "crm_mon", 'no-quorum-policy="stop"', 'no-quorum-policy="suicide"')
    report = run(spec, seen)

    async def fake(cluster: ClusterSpec, path: pathlib.Path) -> dr.DoctorReport:
        return report

    monkeypatch.setattr(dr, "doctor", fake)
    result = CliRunner().invoke(
        cli_doctor.doctor_cmd, [str(REPO / "examples" / "lab.yaml"), "--json"],
        standalone_mode=False,
    )  # fmt: skip
    assert result.exception is None and result.return_value == 1
    assert json.loads(result.output)["findings"][0]["check"] == "no-quorum-policy-risky"


def test_table_shows_problem_and_fix(spec: ClusterSpec) -> None:
    report = run(spec, answers("hb-cut"))
    console = Console(record=True, width=200)
    console.print(cli_doctor.doctor_view(report))
    text = console.export_text()
    assert "DEGRADED, 2 finding(s)" in text
    assert "heartbeat-link-down" in text and "check eth3 on node01" in text
    assert "not checked:" in text and "clock-skew" in text

    seen = answers()
    seen["node02"] = NodeAnswer("node02", error="node02: cannot connect to root@127.0.0.1:2202")
    narrow = Console(record=True, width=60)
    narrow.print(cli_doctor.doctor_view(run(spec, seen)))
    assert "…" not in narrow.export_text()  # a fix is folded, never cut


# --- the quorum device ---------------------------------------------------------------------------

QDEVICE = DATA / "qdevice"


def qdevice_answers(quorumtool: str, qdevice_tool: str) -> dict[str, NodeAnswer]:
    """The recorded healthy answers, plus the quorum device's two outputs on each node (the
    same view from both: node01's recording, with the "(local)" mark moved for node02)."""
    seen = answers("healthy")
    for name, answer in seen.items():
        assert answer.raw is not None
        text = (QDEVICE / quorumtool).read_text()
        if name == "node02":
            text = text.replace(" node01 (local)", " node01")
            text = text.replace(" node02\n", " node02 (local)\n")
        answer.raw["quorumtool"] = (0, text.encode())
        answer.raw["qdevice_tool"] = (0, (QDEVICE / qdevice_tool).read_bytes())
    return seen


@pytest.fixture(scope="module")
def qdevice_spec() -> ClusterSpec:
    report = validate_file(REPO / "examples" / "lab-qdevice.yaml")
    assert report.spec is not None
    return report.spec


def test_a_voting_quorum_device_has_no_finding(qdevice_spec: ClusterSpec) -> None:
    seen = qdevice_answers("quorumtool-voting-node01.txt", "qdevice-tool-connected.txt")
    report = dr.diagnose(qdevice_spec, inputs(qdevice_spec, seen))
    assert report.findings == [] and "qdevice-not-voting" in report.checks_run


def test_a_quorum_device_without_qnetd_is_a_warning_with_its_fix(
    qdevice_spec: ClusterSpec,
) -> None:
    seen = qdevice_answers("quorumtool-qnetd-down-node01.txt", "qdevice-tool-connect-failed.txt")
    report = dr.diagnose(qdevice_spec, inputs(qdevice_spec, seen))
    assert found(report) == [
        ("qdevice-not-voting", "warning", "node01"),
        ("qdevice-not-voting", "warning", "node02"),
    ]
    finding = report.findings[0]
    assert finding.message == (
        "corosync-qdevice on node01 is Connect failed: quorum holds while both nodes are up, "
        "but a node failure now stops the survivor's VMs"
    )
    assert finding.fix.startswith("check qnetd at 10.0.2.2:5403 (there: corosync-qnetd-tool -l)")
    # Connected to qnetd, but qnetd gives the vote to the other half: not voting either.
    seen = qdevice_answers("quorumtool-qnetd-down-node01.txt", "qdevice-tool-connected.txt")
    report = dr.diagnose(qdevice_spec, inputs(qdevice_spec, seen))
    assert "does not cast the device's vote" in report.findings[0].message


def test_a_survivor_held_by_wait_for_all_is_critical_with_both_ways_out(
    qdevice_spec: ClusterSpec,
) -> None:
    # node01 after qnetd-down-then-crash: qnetd back, 2 of 3 votes, still blocked.
    seen = qdevice_answers("quorumtool-blocked-wfa-node01.txt", "qdevice-tool-connected.txt")
    seen["node02"] = NodeAnswer("node02", error="connection refused")
    report = dr.diagnose(qdevice_spec, inputs(qdevice_spec, seen))
    held = [f for f in report.findings if f.check == "quorum-held-by-wait-for-all"]
    assert [(f.severity, f.node) for f in held] == [("critical", "node01")]
    assert held[0].message == (
        "node01 has 2 of 3 votes but is held without quorum by wait_for_all until it sees "
        "node02: it starts no VM and fences nobody"
    )
    assert "power node02 on" in held[0].fix
    assert "stonith_admin --confirm node02" in held[0].fix
    assert "corosync-cmapctl -s quorum.cancel_wait_for_all u8 1" in held[0].fix
    # Without the votes (the half that lost a split) it is not a wait_for_all hold.
    seen = qdevice_answers("quorumtool-lost-split-node02.txt", "qdevice-tool-connected.txt")
    report = dr.diagnose(qdevice_spec, inputs(qdevice_spec, seen))
    assert not any(f.check == "quorum-held-by-wait-for-all" for f in report.findings)


def test_two_node_and_a_device_in_one_file_is_critical(spec: ClusterSpec) -> None:
    files = deployed_files(spec)
    conf = "quorum {\n    provider: corosync_votequorum\n    two_node: 1\n    device {\n"
    files["node02"]["/etc/corosync/corosync.conf"] = FileFact(conf.encode(), 0o644)
    report = dr.diagnose(spec, inputs(spec, deployed=dr.DeployView(files=files)))
    assert found(report) == [("qdevice-with-two-node", "critical", "node02")]
    assert "corosync refuses to start with both" in report.findings[0].message


# --- /proc hidepid (issue 16 item 4d) --------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "hidden"),
    [("rw,nosuid,nodev,noexec,relatime", False), ("rw,relatime,hidepid=invisible", True),
     ("rw,hidepid=2,gid=4", True), ("rw,hidepid=0", False), ("rw,hidepid=off", False),
     ("rw,hidepid=noaccess", True), ("rw,hidepid=ptraceable,subset=pid", True), ("", None)],
)  # fmt: skip
def test_proc_mount_options_say_whether_processes_are_hidden(
    options: str, hidden: bool | None
) -> None:
    assert parse_hidepid(options) is hidden


def test_proc_without_hidepid_is_advice_that_leaves_the_cluster_healthy(spec: ClusterSpec) -> None:
    """fence_ipmilan's `ipmitool -P PASSWORD` is readable in /proc/PID/cmdline by any local
    process there: said, with the fix, but not a degraded cluster (nothing is broken)."""
    view = dr.DeployView(files=deployed_files(spec), proc_hidden={"node01": False, "node02": True})
    report = dr.diagnose(spec, inputs(spec, deployed=view))
    assert found(report) == [("proc-hidepid", "advice", "node01")]
    assert (report.health, report.exit_code) == ("healthy", 0)
    assert "hidepid=2" in report.findings[0].fix and "ipmitool -P" in report.findings[0].message

    seen = answers()
    edit(seen["node01"], "proc_drbd", "0: cs:Connected", "0: cs:WFConnection")
    report = dr.diagnose(spec, inputs(spec, seen, view))
    assert [f.severity for f in report.findings][-1] == "advice"  # advice last
    assert (report.health, report.exit_code) == ("degraded", 1)  # the warning grades it


def test_proc_not_reported_is_not_checked(spec: ClusterSpec) -> None:
    report = dr.diagnose(spec, inputs(spec, deployed=dr.DeployView(files=deployed_files(spec))))
    assert "proc-hidepid" not in report.checks_run
    assert "proc-hidepid: no node said how /proc is mounted" in report.skipped
