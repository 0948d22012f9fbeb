"""`hakvm status` assessment, replayed from real answers recorded on the lab (healthy, and
with the dedicated heartbeat link cut), plus states derived from them by editing exactly
the attribute a failure changes."""

from __future__ import annotations

import pathlib

import pytest

from hakvm.ops.status import QdeviceStatus, assess
from hakvm.remote.probes import NodeAnswer, parse_bonding, parse_cfgtool
from hakvm.spec.models import FenceAction
from tests.unit.recorded import answers, edit

DATA = pathlib.Path(__file__).parent / "data"
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec():  # type: ignore[no-untyped-def]
    from hakvm.spec.validate import validate_file

    report = validate_file(REPO / "examples" / "lab.yaml")
    assert report.spec is not None
    return report.spec


def test_healthy_lab(spec) -> None:  # type: ignore[no-untyped-def]
    report = assess(spec, answers("healthy"))
    assert (report.health, report.exit_code, report.problems) == ("healthy", 0, [])
    assert report.quorate and report.stonith_enabled
    assert {n.name: n.state for n in report.nodes} == {"node01": "online", "node02": "online"}
    assert all(len(n.links) == 2 and all(lk.peer_connected for lk in n.links) for n in report.nodes)
    assert {vm.name: vm.running_on for vm in report.vms} == {"vm-a": ["node01"], "vm-b": ["node02"]}
    drbd = report.vms[0].drbd
    assert [(d.node, d.disk, d.peer_disk) for d in drbd] == [
        ("node01", "UpToDate", "UpToDate"),
        ("node02", "UpToDate", "UpToDate"),
    ]
    assert report.nodes[0].bonds[0].members_up == ["eth1", "eth2"]


def test_cut_heartbeat_link_is_degraded_not_critical(spec) -> None:  # type: ignore[no-untyped-def]
    report = assess(spec, answers("hb-cut"))
    assert (report.health, report.exit_code) == ("degraded", 1)
    assert "node01: knet link 0 (10.88.1.1) down" in report.problems


def test_unreachable_node_is_degraded_while_vms_run(spec) -> None:  # type: ignore[no-untyped-def]
    seen = answers("healthy")
    seen["node02"] = NodeAnswer("node02", error="connection refused")
    report = assess(spec, seen)
    assert report.exit_code == 1
    assert report.problems == ["node02 unreachable over SSH: connection refused"]


def test_stopped_vm_and_disabled_fencing_are_critical(spec) -> None:  # type: ignore[no-untyped-def]
    seen = answers("healthy")
    for answer in seen.values():
        edit(answer, "crm_mon", 'stonith-enabled="true"', 'stonith-enabled="false"')
    report = assess(spec, seen)
    assert report.exit_code == 2
    assert "fencing is disabled (stonith-enabled=false): split-brain risk" in report.problems


def test_drbd_standalone_is_critical_and_resync_degraded(spec) -> None:  # type: ignore[no-untyped-def]
    seen = answers("healthy")
    edit(seen["node01"], "proc_drbd", "0: cs:Connected", "0: cs:StandAlone")
    report = assess(spec, seen)
    assert report.exit_code == 2
    assert any("vm-a: DRBD StandAlone on node01" in p for p in report.problems)

    seen = answers("healthy")
    edit(seen["node02"], "proc_drbd", "0: cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate",
         "0: cs:SyncTarget ro:Secondary/Primary ds:Inconsistent/UpToDate")  # fmt: skip
    progress = "oos:0\n\tsync'ed: 42.5% (1/2)K\n\tfinish: 0:01:05 speed: 1 (1) K/sec\n"
    edit(seen["node02"], "proc_drbd", "oos:0\n", progress)
    report = assess(spec, seen)
    assert report.exit_code == 1
    vm_a = next(d for d in report.vms[0].drbd if d.node == "node02")
    assert (vm_a.sync_percent, vm_a.sync_eta_s) == (42.5, 65)


def test_parsers_on_degraded_text() -> None:
    links = parse_cfgtool(
        "Local node ID 2, transport knet\nLINK ID 0 udp\n\taddr\t= 10.88.1.2\n\tstatus:\n"
        "\t\tnodeid:          1:\tdisconnected\n\t\tnodeid:          2:\tlocalhost\n",
        2,
    )
    assert [(lk.link, lk.address, lk.peer_connected) for lk in links] == [(0, "10.88.1.2", False)]
    bond = parse_bonding(
        "bond0",
        "MII Status: up\n\nSlave Interface: eth1\nMII Status: down\n\n"
        "Slave Interface: eth2\nMII Status: up\n",
    )
    assert (bond.members_up, bond.members_down) == (["eth2"], ["eth1"])


def test_documented_schema_matches_the_model() -> None:
    """docs/status.schema.json is what `hakvm status --schema` prints (regenerate it with
    `hakvm status --schema SPEC > docs/status.schema.json` when the report changes)."""
    import json

    from hakvm.ops.status import StatusReport

    documented = json.loads((REPO / "docs" / "status.schema.json").read_text())
    assert documented == StatusReport.model_json_schema()


def test_stale_resync_flag_is_degraded(spec) -> None:  # type: ignore[no-untyped-def]
    """DRBD's resync flag left on an UpToDate node keeps the VM from failing over there."""
    flag = '<attribute name="hakvm-resyncing-vm-b" value="1"/>\n      '
    node01_attrs = '<node name="node01">\n      <attribute name="master-vm-a_drbd"'
    seen = answers("healthy")
    for answer in seen.values():
        flagged = node01_attrs.replace("<attribute", flag + "<attribute")
        edit(answer, "crm_mon", node01_attrs, flagged)
    report = assess(spec, seen)
    assert report.exit_code == 1
    assert report.problems == [
        "vm-b cannot fail over to node01: stale hakvm-resyncing-vm-b there with DRBD UpToDate "
        "(attrd_updater --node node01 --name hakvm-resyncing-vm-b --delete)"
    ]

    # While node01 really is the resync target, the flag is right: only the resync shows.
    edit(seen["node01"], "proc_drbd", "1: cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate",
         "1: cs:SyncTarget ro:Primary/Primary ds:Inconsistent/UpToDate")  # fmt: skip
    report = assess(spec, seen)
    assert not any("stale" in p for p in report.problems), report.problems


def test_quorum_device_vote_per_node() -> None:
    """status --json: each node's qdevice connection and vote (node01's recordings of
    corosync-quorumtool -s and corosync-qdevice-tool -s, in tests/unit/data/qdevice)."""
    from hakvm.spec.validate import validate_file
    from tests.unit.test_doctor import qdevice_answers

    report = validate_file(REPO / "examples" / "lab-qdevice.yaml")
    assert report.spec is not None
    voting = assess(
        report.spec, qdevice_answers("quorumtool-voting-node01.txt", "qdevice-tool-connected.txt")
    )
    assert voting.exit_code == 0, voting.problems
    assert [(n.name, n.qdevice) for n in voting.nodes] == [
        (name, QdeviceStatus(connected=True, vote_cast=True, state="Connected"))
        for name in ("node01", "node02")
    ]
    down = assess(
        report.spec,
        qdevice_answers("quorumtool-qnetd-down-node01.txt", "qdevice-tool-connect-failed.txt"),
    )
    assert (down.health, down.quorate) == ("degraded", True)
    assert down.problems == [
        f"{n}: the quorum device is Connect failed: a node failure now stops the survivor's VMs"
        for n in ("node01", "node02")
    ]
    assert down.nodes[0].qdevice == QdeviceStatus(
        connected=False, vote_cast=False, state="Connect failed"
    )
    # The survivor of qnetd-down-then-crash once qnetd is back: status names the hold and
    # the ways out (the same words as doctor's quorum-held-by-wait-for-all).
    held = qdevice_answers("quorumtool-blocked-wfa-node01.txt", "qdevice-tool-connected.txt")
    held["node02"] = NodeAnswer("node02", error="connection refused")
    blocked = assess(report.spec, held)
    assert blocked.health == "critical"
    assert any(
        p.startswith("node01 has 2 of 3 votes but is held without quorum by wait_for_all "
                     "until it sees node02: it starts no VM and fences nobody: power "
                     "node02 on") and "cancel_wait_for_all" in p
        for p in blocked.problems
    ), blocked.problems  # fmt: skip
    # Without a quorum device in the spec, no node reports one.
    assert all(n.qdevice is None for n in assess(spec_of("lab"), answers("healthy")).nodes)


def spec_of(example: str):  # type: ignore[no-untyped-def]
    from hakvm.spec.validate import validate_file

    report = validate_file(REPO / "examples" / f"{example}.yaml")
    assert report.spec is not None
    return report.spec


def test_a_node_fenced_off_is_degraded_with_how_to_power_it_on(spec) -> None:  # type: ignore[no-untyped-def]
    """fencing.action off: a fenced node stays off, and status says how to bring it back."""
    fencing = spec.cluster.fencing.model_copy(update={"action": FenceAction.OFF})
    off = spec.model_copy(update={"cluster": spec.cluster.model_copy(update={"fencing": fencing})})
    seen = answers("healthy")
    seen["node02"] = NodeAnswer("node02", error="connection timed out")
    edit(seen["node01"], "crm_mon", '<node name="node02" id="2" online="true"',
         '<node name="node02" id="2" online="false"')  # fmt: skip
    hint = (
        "node02 stays powered off after fencing (fencing.action off): power it on through "
        "its BMC, or `stonith_admin --unfence node02` on a node that is up"
    )
    assert hint in assess(off, seen).problems
    assert hint not in assess(spec, seen).problems  # reboot: it comes back by itself
    # Answering over SSH (Pacemaker stopped there, say): it is not powered off.
    seen["node02"] = answers("healthy")["node02"]
    assert not [p for p in assess(off, seen).problems if "stays powered off" in p]
