"""`hakvm_cluster_status` gives `hakvm status`'s verdict: the recorded node answers
(tests/unit/data/status-*.b64, and states derived from them by editing exactly what a failure
changes) go through both `ops.status.assess` (both nodes' answers) and each node's agent (its
own answer only); the worst of the agents' verdicts is status's exit code, every time."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hakvm.agent import health, parsers
from hakvm.ops.status import assess
from hakvm.remote.probes import NodeAnswer
from hakvm.spec.models import ClusterSpec
from tests.unit.agent_samples import DATA, lab_config, lab_spec
from tests.unit.recorded import answers, edit

Answers = dict[str, NodeAnswer]


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return lab_spec()


def agent_verdict(node: str, answer: NodeAnswer) -> health.Verdict:
    """What the agent on `node` concludes from its own tools' answers."""
    cfg = lab_config(node)
    text = answer.text("crm_mon")
    try:
        mon = parsers.parse_crm_mon(text) if text.strip() else None
    except ValueError:
        mon = None
    _, links = parsers.parse_cfgtool(answer.text("cfgtool"))
    bonds = {b: parsers.parse_bonding(answer.text(f"bond_{b}"))
             for b in cfg.bonds if answer.text(f"bond_{b}")}  # fmt: skip
    names = {vm.drbd_minor: vm.drbd_resource for vm in cfg.vms}
    drbd = parsers.parse_proc_drbd(answer.text("proc_drbd"), names)
    return health.assess(cfg, mon, links, bonds, drbd)


def cluster_verdict(seen: Answers) -> int:
    """max by (job) (hakvm_cluster_status): a node that does not answer writes nothing."""
    return max(agent_verdict(n, a).status for n, a in seen.items() if a.error is None)


def both(key: str, old: str, new: str) -> Callable[[Answers], None]:
    def change(seen: Answers) -> None:
        for answer in seen.values():
            edit(answer, key, old, new)

    return change


def on(node: str, key: str, old: str, new: str) -> Callable[[Answers], None]:
    return lambda seen: edit(seen[node], key, old, new)


def node02_crashed(seen: Answers) -> None:
    """node02 lost and fenced: node01's own crm_mon (recordings/agent/), its links down, its
    DRBD waiting for the peer; node02 does not answer."""
    assert seen["node01"].raw is not None
    text = (DATA / "agent" / "crm_mon-node02-fenced.xml").read_text()
    seen["node01"].raw["crm_mon"] = (0, text.encode())
    for _ in range(2):
        edit(seen["node01"], "cfgtool", "2:\tconnected", "2:\tdisconnected")
    for _ in range(2):
        edit(seen["node01"], "proc_drbd", "cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate",
             "cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown")  # fmt: skip
    seen["node02"] = NodeAnswer("node02", error="connection refused")


def vm_failed(seen: Answers) -> None:
    text = (DATA / "agent" / "crm_mon-failed-monitor.xml").read_text()
    for answer in seen.values():
        assert answer.raw is not None
        answer.raw["crm_mon"] = (0, text.encode())


VM_A_RUNNING = 'VirtualDomain" role="Started" target_role="Started" active="true"'
VM_A_STOPPED = 'VirtualDomain" role="Stopped" target_role="Started" active="false"'
NODE02 = '<node name="node02" id="2" online="true" standby="false"'
SYNC = ("oos:0\n\tsync'ed: 42.5% (1/2)K\n\tfinish: 0:01:05 speed: 1 (1) K/sec\n")

CASES: list[tuple[str, str, Callable[[Answers], None] | None, int]] = [
    ("healthy", "healthy", None, 0),
    ("heartbeat link cut", "hb-cut", None, 1),
    ("fencing disabled", "healthy", both("crm_mon", 'stonith-enabled="true"',
                                         'stonith-enabled="false"'), 2),
    ("maintenance mode", "healthy", both("crm_mon", 'maintenance-mode="false"',
                                         'maintenance-mode="true"'), 1),
    ("node02 in standby", "healthy", both("crm_mon", NODE02, NODE02.replace(
        'standby="false"', 'standby="true"')), 1),
    ("vm-a stopped", "healthy", both("crm_mon", VM_A_RUNNING, VM_A_STOPPED), 2),
    ("vm-a failed", "healthy", vm_failed, 2),
    ("DRBD StandAlone on node01", "healthy", on("node01", "proc_drbd", "0: cs:Connected",
                                                 "0: cs:StandAlone"), 2),
    ("DRBD resync towards node02", "healthy", lambda seen: (
        on("node02", "proc_drbd", "0: cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate",
           "0: cs:SyncTarget ro:Secondary/Primary ds:Inconsistent/UpToDate")(seen),
        on("node02", "proc_drbd", "oos:0\n", SYNC)(seen)), 1),
    ("bond member down on node02", "healthy", on("node02", "bond_bond0",
        "Slave Interface: eth2\nMII Status: up", "Slave Interface: eth2\nMII Status: down"), 1),
    ("node02 crashed and fenced", "healthy", node02_crashed, 1),
    ("no quorum", "healthy", both("crm_mon", 'with_quorum="true"', 'with_quorum="false"'), 2),
]  # fmt: skip


@pytest.mark.parametrize(("recorded", "change", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_agents_give_the_verdict_of_hakvm_status(
    spec: ClusterSpec, recorded: str, change: Callable[[Answers], None] | None, expected: int
) -> None:
    seen = answers(recorded)
    if change is not None:
        change(seen)
    report = assess(spec, seen)
    assert report.exit_code == expected, report.problems
    assert cluster_verdict(seen) == expected


def test_a_cut_link_is_seen_by_both_agents() -> None:
    seen = answers("hb-cut")
    verdicts = {n: agent_verdict(n, a) for n, a in seen.items()}
    assert {n: v.status for n, v in verdicts.items()} == {"node01": 1, "node02": 1}
    assert verdicts["node01"].problems == ["node01: knet link 0 (10.88.1.1) down"]


def test_a_node_without_pacemaker_reports_degraded_not_critical() -> None:
    seen = answers("healthy")
    assert seen["node02"].raw is not None
    seen["node02"].raw["crm_mon"] = (102, b"")  # crm_mon: not connected
    verdict = agent_verdict("node02", seen["node02"])
    assert verdict.status == 1
    assert verdict.problems == ["node02: Pacemaker's state (crm_mon) unavailable"]


@pytest.mark.parametrize(
    ("recorded", "vote", "status"),
    [("voting", 1, health.HEALTHY), ("qnetd-down", 0, health.DEGRADED)],
)
def test_the_quorum_devices_vote_is_read_from_quorumtool(
    recorded: str, vote: int, status: int
) -> None:
    """With a quorum device in the spec, a node whose corosync-qdevice casts no vote is
    degraded, as `hakvm status` says (its next failure stops the survivor's VMs), and
    hakvm_qdevice_vote_cast follows quorumtool's V/NV; without one, nothing is said."""
    from dataclasses import replace

    from hakvm.agent import hakvm_metrics
    from hakvm.agent.exposition import render

    quorum = parsers.parse_quorumtool(
        (DATA / "qdevice" / f"quorumtool-{recorded}-node01.txt").read_text()
    )
    cfg = replace(lab_config("node01"), qdevice=True)
    assert health.qdevice_flags(cfg, quorum) == (("A", "V", "NMW") if vote else ("A", "NV", "NMW"))
    verdict = health.Verdict()
    health._qdevice(cfg, quorum, verdict)
    assert verdict.status == status
    assert verdict.problems == ([] if vote else [
        "node01: the quorum device casts no vote: a node failure now stops the survivor's VMs"
    ])  # fmt: skip
    text = render([hakvm_metrics.qdevice(cfg, quorum)])
    assert f'hakvm_qdevice_vote_cast{{node="node01"}} {vote}' in text
    without = replace(cfg, qdevice=False)
    assert health.qdevice_flags(without, quorum) is None
    assert "hakvm_qdevice_vote_cast{" not in render([hakvm_metrics.qdevice(without, quorum)])
