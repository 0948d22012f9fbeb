"""Apply with a quorum device: plan's steps for a fresh device, for switching a running
two_node cluster to it and back (the step order that keeps quorum with VMs running), and
what the switch, the certificates and the vote check send to the nodes, in order."""

from __future__ import annotations

import asyncio
import base64
import pathlib
from pathlib import Path
from typing import Any

import pytest

from hakvm.deploy import actions
from hakvm.deploy import phases as ph
from hakvm.deploy.steps import Call, Run, Step, Write
from hakvm.remote.connection import KeyFileError
from hakvm.remote.facts import NodeFacts, parse_batch
from hakvm.remote.quorum import NodeCerts
from hakvm.remote.session import Session
from hakvm.render.corosync import PATH as COROSYNC_CONF
from hakvm.spec.validate import validate_file
from tests.unit.fakes import FakeNode, FakeNodes
from tests.unit.test_plan import _all_steps, _env, _spec_file, converged_facts

DATA = pathlib.Path(__file__).parent / "data"
QDEVICE_DATA = DATA / "qdevice"
CA = "MIIBqnetdCA"
CERTS = NodeCerts(ca=CA, cert='Subject: "CN=lab"', valid=True, has_key=True)


def _read(name: str) -> str:
    return (QDEVICE_DATA / name).read_text()


def running(facts: dict[str, NodeFacts], *, device: bool) -> dict[str, NodeFacts]:
    """Converged facts of a cluster running two_node (device False) or the device."""
    for f in facts.values():
        f.cmap_quorum = _read("cmap-quorum-qdevice.txt" if device else "cmap-quorum-two-node.txt")
        if device:
            f.packages.add("corosync-qdevice")
            f.services_active["corosync-qdevice"] = f.services_enabled["corosync-qdevice"] = True
            f.qdevice_certs = CERTS
    return facts


def _two_node_cluster(tmp_path: Path) -> dict[str, NodeFacts]:
    return running(converged_facts(_env(_spec_file(tmp_path, "lab"), {})), device=False)


def _qdevice_cluster(tmp_path: Path) -> dict[str, NodeFacts]:
    env = _env(_spec_file(tmp_path, "lab-qdevice"), {})
    return running(converged_facts(env), device=True)


def _qdevice_env(tmp_path: Path, facts: dict[str, NodeFacts]) -> ph.PlanEnv:
    env = _env(_spec_file(tmp_path, "lab-qdevice"), facts)
    env.qnetd_ca = CA
    return env


def _summary(steps: list[Step]) -> list[tuple[str, str, str]]:
    return [(s.phase, s.node, s.title) for s in steps]


def _argvs(steps: list[Step]) -> list[tuple[str, ...]]:
    return [a.argv for s in steps for a in s.actions if isinstance(a, Run)]


def test_a_running_two_node_cluster_switches_to_the_device_without_a_restart(
    tmp_path: Path,
) -> None:
    env = _qdevice_env(tmp_path, _two_node_cluster(tmp_path))
    steps = _all_steps(env, skip=("vms",))
    assert _summary(steps) == [
        ("packages", "node01", "install corosync-qdevice"),
        ("packages", "node02", "install corosync-qdevice"),
        ("qdevice", "node01",
         "set up the qdevice certificates (CN=lab, signed by the qnetd on this machine)"),
        ("corosync", "node01", f"update {COROSYNC_CONF}"),
        ("corosync", "node02", f"update {COROSYNC_CONF}"),
        ("quorum", "node01",
         "switch corosync from two_node to the quorum device (one reload, no restart)"),
        # The agent reads the device's vote from then on (hakvm_qdevice_vote_cast).
        ("monitoring", "node01", "update /etc/hakvm/agent.json"),
        ("monitoring", "node02", "update /etc/hakvm/agent.json"),
        ("cib", "node01", "push fencing (waited for when new), then resources (CIB patch)"),
    ]  # fmt: skip
    # Never a corosync restart (it would take Pacemaker and every VM down with it).
    assert not [a for a in _argvs(steps) if a[:1] == ("systemctl",) and "corosync" in a]
    written = next(a for s in steps for a in s.actions if isinstance(a, Write))
    assert b"device {" in written.content and b"two_node: 1" not in written.content
    # The CIB drops the fence delay only after the device votes (its phase comes later).
    (cib,) = [s for s in steps if s.phase == "cib"]
    removed = [line for line in cib.diff.splitlines() if line.startswith("-  ")]
    assert len(removed) == 1 and 'name="pcmk_delay_base" value="node01:45s"' in removed[0]
    assert env.notes == []


def test_a_deployed_device_needs_nothing_and_plan_says_the_certificates_are_present(
    tmp_path: Path,
) -> None:
    env = _qdevice_env(tmp_path, _qdevice_cluster(tmp_path))
    assert _all_steps(env) == []
    assert env.notes == ["qdevice certificates: present"]


def test_certificates_from_another_qnetd_ca_are_made_again(tmp_path: Path) -> None:
    env = _qdevice_env(tmp_path, _qdevice_cluster(tmp_path))
    env.qnetd_ca = "MIIBanotherCA"  # the qnetd host was re-initialised
    (step,) = ph.quorum.qdevice(env)
    assert step.diff == (
        "node01: trusts another CA than the qnetd host's\n"
        "node02: trusts another CA than the qnetd host's\n"
    )


def test_back_from_the_device_to_two_node_without_a_restart(tmp_path: Path) -> None:
    env = _env(_spec_file(tmp_path, "lab"), _qdevice_cluster(tmp_path))
    steps = _all_steps(env, skip=("vms",))
    assert _summary(steps) == [
        ("corosync", "node01", f"update {COROSYNC_CONF}"),
        ("corosync", "node02", f"update {COROSYNC_CONF}"),
        ("quorum", "node01", "switch corosync from the quorum device back to two_node"),
        ("monitoring", "node01", "update /etc/hakvm/agent.json"),
        ("monitoring", "node02", "update /etc/hakvm/agent.json"),
        ("cib", "node01", "push fencing (waited for when new), then resources (CIB patch)"),
    ]
    assert not [a for a in _argvs(steps) if "corosync" in a]


def test_an_apply_stopped_after_the_file_was_written_still_switches(tmp_path: Path) -> None:
    """The file already says "device", corosync still runs two_node: only a reload is due."""
    facts = _qdevice_cluster(tmp_path)
    for f in facts.values():
        f.cmap_quorum = _read("cmap-quorum-two-node.txt")
        f.services_active["corosync-qdevice"] = False
    steps = _all_steps(_qdevice_env(tmp_path, facts))
    assert [s.title for s in steps] == [
        "switch corosync from two_node to the quorum device (one reload, no restart)"
    ]


def test_switching_with_a_node_offline_is_refused(tmp_path: Path) -> None:
    facts = _two_node_cluster(tmp_path)
    crm_mon = parse_batch((DATA / "status-healthy-node01.b64").read_text())["crm_mon"][1]
    text = crm_mon.decode()
    start = text.index('<node name="node02"')
    end = text.index(">", start)
    facts["node01"].crm_mon = (
        text[:start] + text[start:end].replace('online="true"', 'online="false"') + text[end:]
    )
    env = _qdevice_env(tmp_path, facts)
    ph.corosync(env)
    with pytest.raises(ph.PlanError, match="node02 is not online: switching to the quorum"):
        ph.quorum.quorum(env)


def test_a_fresh_cluster_starts_the_device_after_corosync(tmp_path: Path) -> None:
    from tests.unit.test_plan import fresh_facts

    env = _qdevice_env(tmp_path, {n: fresh_facts(n, "debian12") for n in ("node01", "node02")})
    env.qnetd_ca = ""  # a qnetd host that has no CA yet
    steps = _all_steps(env, skip=())
    phases = [s.phase for s in steps]
    assert phases.index("qdevice") < phases.index("corosync") < phases.index("quorum")
    assert [s.title for s in steps if s.phase == "quorum"] == [
        "start corosync-qdevice",
        "start corosync-qdevice",
        "wait for the quorum device's vote",
    ]
    assert ("systemctl", "restart", "corosync") in _argvs(steps)  # a first start: restart


def test_a_stopped_qdevice_is_started_and_its_vote_awaited(tmp_path: Path) -> None:
    facts = _qdevice_cluster(tmp_path)
    facts["node02"].services_active["corosync-qdevice"] = False
    steps = ph.quorum.quorum(_qdevice_env(tmp_path, facts))
    assert _summary(steps) == [
        ("quorum", "node02", "start corosync-qdevice"),
        ("quorum", "node01", "wait for the quorum device's vote"),
    ]
    assert _argvs(steps) == [("systemctl", "enable", "--no-reload", "--now", "corosync-qdevice")]


# --- what the calls send, in order -------------------------------------------------------------


def _cluster(quorumtool: str, cmap: str) -> FakeNodes:
    nodes = FakeNodes()
    for node in nodes.nodes.values():
        node.on("corosync-quorumtool", out=_read(quorumtool))
        node.on("corosync-cmapctl", out=_read(cmap))
    return nodes


def _sent(nodes: FakeNodes) -> list[str]:
    return [f"{s.node}: {' '.join(s.argv)}" for s in nodes.sent]


async def _instant(_: float) -> None:
    return None


def test_the_switch_reloads_once_after_checks_then_starts_qdevice_then_waits() -> None:
    nodes = _cluster("quorumtool-two-node-node01.txt", "cmap-quorum-qdevice.txt")
    first = nodes["node01"]
    first.rules = [r for r in first.rules if r[0] != ("corosync-quorumtool",)]
    first.on("corosync-quorumtool", out=_read("quorumtool-two-node-node01.txt"))
    first.on("corosync-quorumtool", out=_read("quorumtool-reloaded-no-qdevice-yet-node01.txt"))
    first.on("corosync-quorumtool", out=_read("quorumtool-voting-node01.txt"))
    conns = [nodes["node01"], nodes["node02"]]
    asyncio.run(actions.switch_to_qdevice(conns, "10.0.2.2", 5403, sleep=_instant))
    probe = 'bash -c exec 3<>"/dev/tcp/$0/$1" 10.0.2.2 5403'
    assert _sent(nodes) == [
        "node01: corosync-quorumtool -s",
        f"node01: timeout 10 {probe}",
        f"node02: timeout 10 {probe}",
        "node01: corosync-cfgtool -R",
        "node01: corosync-cmapctl -b quorum.",
        "node02: corosync-cmapctl -b quorum.",
        "node01: systemctl enable --no-reload corosync-qdevice",
        "node01: systemctl restart corosync-qdevice",
        "node02: systemctl enable --no-reload corosync-qdevice",
        "node02: systemctl restart corosync-qdevice",
        "node01: corosync-quorumtool -s",
        "node01: corosync-quorumtool -s",
    ]


@pytest.mark.parametrize(
    ("quorumtool", "unreachable", "why"),
    [
        ("quorumtool-lost-split-node02.txt", False, "needs every node in a quorate"),
        ("quorumtool-two-node-node01.txt", True, "qnetd at 10.0.2.2:5403 does not answer"),
    ],
)
def test_the_switch_changes_nothing_without_both_nodes_or_qnetd(
    quorumtool: str, unreachable: bool, why: str
) -> None:
    nodes = _cluster(quorumtool, "cmap-quorum-two-node.txt")
    if unreachable:
        nodes["node02"].on("timeout", rc=1)
    with pytest.raises(actions.RemoteError, match=why):
        asyncio.run(actions.switch_to_qdevice([nodes["node01"], nodes["node02"]], "10.0.2.2", 5403))
    assert not [s for s in _sent(nodes) if "cfgtool" in s or "systemctl" in s]


def test_no_vote_in_time_fails_loudly_naming_each_qdevice_state() -> None:
    nodes = _cluster("quorumtool-qnetd-down-node01.txt", "cmap-quorum-qdevice.txt")
    for node in nodes.nodes.values():
        node.on("corosync-qdevice-tool", out=_read("qdevice-tool-connect-failed.txt"))
    ticks = iter(range(0, 10_000, 100))
    with pytest.raises(actions.RemoteError) as failure:
        asyncio.run(
            actions.wait_qdevice_vote(
                [nodes["node01"], nodes["node02"]], sleep=_instant, clock=lambda: next(ticks)
            )
        )
    message = str(failure.value)
    assert "node01: Connect failed, node02: Connect failed; voting: none" in message
    assert "a node failure now stops the survivor's VMs" in message


def test_back_to_two_node_pushes_the_fence_delay_before_the_reload() -> None:
    nodes = _cluster("quorumtool-two-node-node01.txt", "cmap-quorum-two-node.txt")
    order: list[str] = []

    async def push(node: object, rendered: str, sleep: object, *, fencing_only: bool) -> None:
        order.append(f"push fencing_only={fencing_only}")

    conns = [nodes["node01"], nodes["node02"]]
    original = actions.push_cib
    actions.push_cib = push  # type: ignore[assignment]
    try:
        asyncio.run(actions.switch_to_two_node(conns, "<cib/>"))
    finally:
        actions.push_cib = original
    assert order == ["push fencing_only=True"]
    assert _sent(nodes) == [
        "node01: corosync-cfgtool -R",
        "node01: corosync-cmapctl -b quorum.",
        "node02: corosync-cmapctl -b quorum.",
        "node01: systemctl disable --no-reload --now corosync-qdevice",
        "node02: systemctl disable --no-reload --now corosync-qdevice",
    ]


def test_certificates_as_crmsh_makes_them() -> None:
    nodes = FakeNodes()
    der = {"crq": b"\x30request", "crt": b"\x30signed", "p12": b"\x30bundle"}
    ca_text = "QNet CA dump\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    nodes.qnetd_host.on("cat", out=ca_text)
    nodes.qnetd_host.on("base64", out=base64.b64encode(der["crt"]).decode())
    nodes["node01"].on("base64", out=base64.b64encode(der["crq"]).decode())
    nodes["node01"].on("base64", out=base64.b64encode(der["p12"]).decode())
    asyncio.run(actions.setup_qdevice_certificates(nodes, ["node01", "node02"], "lab"))
    db = "/etc/corosync/qdevice/net/nssdb"
    assert _sent(nodes) == [
        "qnetd: cat /etc/corosync/qnetd/nssdb/qnetd-cacert.crt",
        f"node01: rm -rf {db}",
        "node01: corosync-qdevice-net-certutil -i -c /etc/corosync/qdevice/net/qnetd-cacert.crt",
        f"node02: rm -rf {db}",
        "node02: corosync-qdevice-net-certutil -i -c /etc/corosync/qdevice/net/qnetd-cacert.crt",
        "node01: corosync-qdevice-net-certutil -r -n lab",
        f"node01: base64 -w0 {db}/qdevice-net-node.crq",
        "qnetd: corosync-qnetd-certutil -s -c "
        "/etc/corosync/qnetd/nssdb/qdevice-net-node.crq.lab -n lab",
        "qnetd: base64 -w0 /etc/corosync/qnetd/nssdb/cluster-lab.crt",
        f"node01: corosync-qdevice-net-certutil -M -c {db}/cluster-lab.crt",
        f"node01: base64 -w0 {db}/qdevice-net-node.p12",
        f"node02: corosync-qdevice-net-certutil -m -c {db}/qdevice-net-node.p12",
        "node01: systemctl try-restart corosync-qdevice",
        "node02: systemctl try-restart corosync-qdevice",
    ]
    host: FakeNode = nodes.qnetd_host
    assert host.files["/etc/corosync/qnetd/nssdb/qdevice-net-node.crq.lab"] == der["crq"]
    assert nodes["node01"].files[f"{db}/cluster-lab.crt"] == der["crt"]
    assert nodes["node02"].files[f"{db}/qdevice-net-node.p12"] == der["p12"]
    assert nodes["node02"].modes[f"{db}/qdevice-net-node.p12"] == 0o600
    # The private key travels in memory only: never in an argv.
    assert not [s for s in nodes.sent if base64.b64encode(der["p12"]).decode() in " ".join(s.argv)]


def test_every_call_of_the_quorum_phases_is_described(tmp_path: Path) -> None:
    env = _qdevice_env(tmp_path, _two_node_cluster(tmp_path))
    calls = [a for s in _all_steps(env) for a in s.actions if isinstance(a, Call)]
    assert len(calls) == 2 and all("corosync-cfgtool -R" in c.describe() or "PKCS#12"
                                   in c.describe() for c in calls)  # fmt: skip


def test_the_switch_waits_for_the_peer_to_finish_its_reload_and_fails_if_it_never_does() -> None:
    nodes = _cluster("quorumtool-voting-node01.txt", "cmap-quorum-qdevice.txt")
    late = nodes["node02"]
    late.rules = [r for r in late.rules if r[0] != ("corosync-cmapctl",)]
    late.on("corosync-cmapctl", out=_read("cmap-quorum-two-node.txt"))
    late.on("corosync-cmapctl", out=_read("cmap-quorum-qdevice.txt"))
    conns = [nodes["node01"], nodes["node02"]]
    asyncio.run(actions.switch_to_qdevice(conns, "10.0.2.2", 5403, sleep=_instant))
    assert [s for s in _sent(nodes) if "cmapctl" in s] == [
        "node01: corosync-cmapctl -b quorum.",
        "node02: corosync-cmapctl -b quorum.",
        "node02: corosync-cmapctl -b quorum.",
    ]
    never = _cluster("quorumtool-voting-node01.txt", "cmap-quorum-two-node.txt")
    ticks = iter(range(0, 10_000, 5))
    with pytest.raises(actions.RemoteError, match="node01: corosync did not take the quorum"):
        asyncio.run(
            actions.switch_to_qdevice(
                [never["node01"], never["node02"]], "10.0.2.2", 5403, sleep=_instant,
                clock=lambda: next(ticks),
            )
        )  # fmt: skip
    assert not [s for s in _sent(never) if "systemctl" in s]  # qdevice never started


def test_an_unusable_key_for_the_qnetd_host_names_its_own_field(tmp_path: Path) -> None:
    """The qnetd host is reached like a node, but its key file is quorum_device.ssh's (checked
    before any connection: the port below is closed, nothing is reached)."""

    def over_ssh(data: dict[str, Any]) -> None:
        del data["quorum_device"]["local"]
        data["quorum_device"]["ssh"] = {
            "host": "127.0.0.1", "port": 9, "user": "root",
            "key_file": str(tmp_path / "missing-key"), "known_hosts": str(tmp_path / "kh"),
        }  # fmt: skip

    (tmp_path / "kh").write_text("")
    path = _spec_file(tmp_path, "lab-qdevice", over_ssh)
    spec = validate_file(path).spec
    assert spec is not None
    with pytest.raises(KeyFileError, match=r"^quorum_device\.ssh\.key_file: cannot read "):
        asyncio.run(Session(spec, path).qnetd())
