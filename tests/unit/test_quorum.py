"""The quorum device as the nodes report it: corosync-quorumtool, corosync-qdevice-tool,
cmapctl, the qdevice certificates and the CIB's fence delays (tests/unit/data/qdevice)."""

from __future__ import annotations

import pathlib

import pytest

from hakvm.agent import exposition, hacluster
from hakvm.agent import parsers as agent_parsers
from hakvm.remote.quorum import (
    NodeCerts,
    check_certs,
    fence_delays,
    node_certs,
    parse_qdevice_state,
    parse_quorumtool,
    pem_body,
    runtime_quorum,
)
from hakvm.render import cib
from tests.render.examples import example_data, render_context

DATA = pathlib.Path(__file__).parent / "data" / "qdevice"


def _read(name: str) -> str:
    return (DATA / name).read_text()


def test_both_nodes_voting() -> None:
    view = parse_quorumtool(_read("quorumtool-voting-node01.txt"))
    assert view is not None and view.quorate
    assert (view.nodes, view.expected_votes, view.quorum) == (2, 3, 2)
    assert {"Quorate", "WaitForAll", "Qdevice"} == view.flags
    assert [(m.name, m.qdevice_alive, m.qdevice_vote) for m in view.members] == [
        ("node01", True, True),
        ("node02", True, True),
    ]
    assert view.local is not None and view.local.nodeid == 1
    assert view.device_voting and view.device_configured_votes == 1


def test_recorded_the_survivor_of_a_crash_keeps_quorum_with_the_device() -> None:
    # Recorded on the lab (node02, node01 crashed: node-crash-with-qdevice, 2026-12-02).
    view = parse_quorumtool(_read("quorumtool-survivor-node02.txt"))
    assert view is not None and view.quorate
    assert (view.nodes, view.expected_votes, view.total_votes, view.quorum) == (1, 3, 2, 2)
    assert [(m.name, m.local, m.qdevice_vote) for m in view.members] == [("node02", True, True)]
    assert view.device_voting and view.device_configured_votes == 1


def test_qnetd_down_keeps_quorum_but_no_vote() -> None:
    view = parse_quorumtool(_read("quorumtool-qnetd-down-node01.txt"))
    assert view is not None and view.quorate
    assert not view.device_voting and view.device_configured_votes == 1
    assert all(m.qdevice_alive and m.qdevice_vote is False for m in view.members)


def test_the_half_without_the_vote_is_inquorate() -> None:
    lost = parse_quorumtool(_read("quorumtool-lost-split-node02.txt"))
    won = parse_quorumtool(_read("quorumtool-won-split-node01.txt"))
    assert lost is not None and won is not None
    assert (lost.quorate, lost.nodes, lost.device_voting) == (False, 1, False)
    assert (won.quorate, won.nodes, won.device_voting) == (True, 1, True)


def test_only_a_node_with_the_votes_but_not_quorate_is_held_by_wait_for_all() -> None:
    # Partly recorded on the lab (node01 alone once qnetd was back: qnetd-down-then-crash):
    # 2 of 3 votes, quorum 2, "Activity blocked": wait_for_all, re-armed on the loss of quorum.
    held = parse_quorumtool(_read("quorumtool-blocked-wfa-node01.txt"))
    assert held is not None and held.held_by_wait_for_all
    # The half that lost a split is blocked too, but for want of votes (1 of 3): not held.
    others = [
        "quorumtool-lost-split-node02.txt", "quorumtool-voting-node01.txt",
        "quorumtool-survivor-node02.txt", "quorumtool-two-node-node01.txt",
        "quorumtool-qnetd-down-node01.txt", "quorumtool-won-split-node01.txt",
    ]  # fmt: skip
    for name in others:
        view = parse_quorumtool(_read(name))
        assert view is not None and not view.held_by_wait_for_all, name


def test_two_node_has_no_qdevice_column() -> None:
    view = parse_quorumtool(_read("quorumtool-two-node-node01.txt"))
    assert view is not None and "2Node" in view.flags
    assert [(m.name, m.votes, m.qdevice_vote) for m in view.members] == [
        ("node01", 1, None),
        ("node02", 1, None),
    ]
    assert view.device_votes is None
    assert parse_quorumtool("Cannot initialize QUORUM service\n") is None


def test_qdevice_tool_state() -> None:
    assert parse_qdevice_state(_read("qdevice-tool-connected.txt")) == "Connected"
    assert parse_qdevice_state(_read("qdevice-tool-connect-failed.txt")) == "Connect failed"
    assert parse_qdevice_state("") is None


def test_runtime_quorum_from_cmap() -> None:
    qdevice = runtime_quorum(_read("cmap-quorum-qdevice.txt"))
    two_node = runtime_quorum(_read("cmap-quorum-two-node.txt"))
    assert qdevice is not None and (qdevice.device, qdevice.two_node) == (True, False)
    assert two_node is not None and (two_node.device, two_node.two_node) == (False, True)
    assert runtime_quorum("") is None


CA = "-----BEGIN CERTIFICATE-----\nMIIB\nAAAA\n-----END CERTIFICATE-----\n"
DUMP = 'Certificate:\n    Data:\n        Subject: "CN=lab"'


def _certs(**changes: object) -> NodeCerts:
    fields: dict[str, object] = {"ca": "MIIBAAAA", "cert": DUMP, "valid": True, "has_key": True}
    fields.update(changes)
    return NodeCerts(**fields)  # type: ignore[arg-type]


def test_certificates_present_only_when_whole_and_the_same() -> None:
    assert pem_body("Certificate Nickname ...\n" + CA) == "MIIBAAAA"
    outputs = {
        "qdevice_ca": (0, CA.encode()),
        "qdevice_cert": (0, DUMP.encode()),
        "qdevice_valid": (0, b"certutil: certificate is valid\n"),
        "qdevice_keys": (0, b"<0> rsa      abc   NSS Certificate DB:Cluster Cert\n"),
    }
    assert node_certs(outputs) == _certs()
    both = {"node01": _certs(), "node02": _certs()}
    assert check_certs(both, "lab", "MIIBAAAA").present
    assert check_certs(both, "lab", None).present  # qnetd host not read: nodes agree
    assert check_certs(both, "lab", "OTHERCA").why == [
        "node01: trusts another CA than the qnetd host's",
        "node02: trusts another CA than the qnetd host's",
    ]
    assert check_certs(both, "other", None).why[0] == (
        "node01: the certificate is for 'lab', not 'other'"
    )
    missing = {"node01": _certs(), "node02": node_certs({})}
    assert check_certs(missing, "lab", None).why == [
        "node02: no qdevice NSS database with the qnetd CA"
    ]
    keyless = {"node01": _certs(), "node02": _certs(has_key=False)}
    assert not check_certs(keyless, "lab", None).present
    differ = {"node01": _certs(), "node02": _certs(cert=DUMP + "serial 2")}
    assert check_certs(differ, "lab", None).why == ["the nodes hold different certificates"]


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("lab", ["node01_fence: pcmk_delay_base=node01:45s"]),
        ("lab-qdevice", []),
    ],
)
def test_fence_delays_of_a_cib(example: str, expected: list[str]) -> None:
    text = cib.cib_xml(render_context(example_data(example)))
    assert fence_delays(text) == expected
    data = example_data("lab")
    data["cluster"]["fencing"] = {"race_protection": "priority-fencing-delay"}
    priority = fence_delays(cib.cib_xml(render_context(data)))
    assert "priority-fencing-delay=45s" in priority


def test_the_metrics_show_the_quorum_device_vote() -> None:
    """The node agent's ha_cluster_exporter series (agent/hacluster.py) carry the device's
    vote as the exporter does: member node_id 0 with 1 vote while it is cast, 0 when qnetd is
    down (the exporter's expression then reads its name as "(votes"), and the votes counted
    with it."""
    voting, down = (
        hacluster.quorum(agent_parsers.parse_quorumtool(_read(f"quorumtool-{name}-node01.txt")))
        for name in ("voting", "qnetd-down")
    )

    def sample(families: list[exposition.Family], name: str, **labels: str) -> float:
        family = next(f for f in families if f.name == name)
        return next(v for lab, v in family.samples.items() if labels.items() <= dict(lab).items())

    votes, members = "ha_cluster_corosync_quorum_votes", "ha_cluster_corosync_member_votes"
    assert sample(voting, members, node="Qdevice", node_id="0") == 1
    assert sample(down, members, node_id="0") == 0
    assert [sample(f, votes, type="total_votes") for f in (voting, down)] == [3, 2]
    assert sample(down, votes, type="expected_votes") == 3
