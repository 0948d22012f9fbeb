"""What `hakvm status` asks the nodes, counted on the shared fake node: one login and one
batch per node, Pacemaker's state (crm_mon) from one node unless the other's own view is
needed (a partition, the first node down), no drbdadm run twice, no drbdsetup on DRBD 8.4,
and `--watch` refreshing on the connections it opened first. The reports must stay what
the full answers of both nodes give (`assess` of the recordings)."""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from hakvm.ops import status as st
from hakvm.remote.probes import NodeAnswer
from hakvm.remote.session import Session
from hakvm.spec.models import ClusterSpec
from tests.unit.fakes import FakeNodes
from tests.unit.recorded import answers, batch_commands, batch_entries, edit, replaying

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = REPO / "examples" / "lab.yaml"


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    from hakvm.spec.validate import validate_file

    report = validate_file(LAB)
    assert report.spec is not None
    return report.spec


def cluster(
    monkeypatch: pytest.MonkeyPatch, recorded: dict[str, NodeAnswer]
) -> FakeNodes:
    """Two fake nodes answering every batch from `recorded`; the session builds them."""
    nodes = FakeNodes()
    for name, answer in recorded.items():
        nodes[name].answer = replaying(answer)
    monkeypatch.setattr(Session, "fresh", lambda self, name: nodes[name])
    return nodes


def batches(nodes: FakeNodes, name: str) -> list[list[str]]:
    """The entries of each batch `name` was sent, in order."""
    return [batch_entries(argv) for argv in nodes[name].argvs if batch_entries(argv)]


def programs(nodes: FakeNodes) -> Iterator[str]:
    """Every command word any batch ran (as the batch's shell would eval it)."""
    for node in nodes.nodes.values():
        for argv in node.argvs:
            yield from batch_commands(argv)


def partitioned() -> dict[str, NodeAnswer]:
    """Both heartbeat links cut: each node's partition is quorate (two_node), is its own DC
    and sees the other offline."""
    seen = answers("healthy")
    edit(seen["node01"], "crm_mon", '<node name="node02" id="2" online="true"',
         '<node name="node02" id="2" online="false"')  # fmt: skip
    edit(seen["node02"], "crm_mon", '<node name="node01" id="1" online="true"',
         '<node name="node01" id="1" online="false"')  # fmt: skip
    edit(seen["node01"], "crm_mon", 'name="node02" id="2" with_quorum="true"',
         'name="node01" id="1" with_quorum="true"')  # fmt: skip
    return seen


def test_status_logs_in_once_per_node_and_reads_crm_mon_once(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = cluster(monkeypatch, answers("healthy"))
    report = asyncio.run(st.status(spec, LAB))
    assert report == st.assess(spec, answers("healthy"))  # both nodes' crm_mon: the same
    assert report.health == "healthy" and report.seen_from == "node01"
    assert [n.quorate for n in report.nodes] == [True, True]
    assert {n: nodes[n].connects for n in ("node01", "node02")} == {"node01": 1, "node02": 1}
    assert [len(batches(nodes, n)) for n in ("node01", "node02")] == [1, 1]
    assert [n for n in ("node01", "node02") if "crm_mon" in batches(nodes, n)[0]] == ["node01"]
    assert len(nodes.sent) == 2  # nothing but the two batches
    ran = " ".join(programs(nodes))
    # Names and minors: udev's by-res links (read by the shell: no `find`), drbdadm's dump
    # only without them (one per node).
    assert ran.count('"$p"/drbd/by-res/*/*') == 2 and "find" not in ran.split()
    assert ran.count("drbdadm dump all") == 2
    assert "sh-resources" not in ran and "sh-minor" not in ran
    assert ran.count("exec drbdsetup status --json") == 2  # not on 8.4: see test_remote_drbd
    assert "date" not in ran.split()  # the clock is doctor's


def test_a_quorum_device_is_asked_in_the_same_one_batch_per_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a quorum_device, each node's one batch also asks its qdevice vote and its
    connection to qnetd (corosync-quorumtool -s, corosync-qdevice-tool -s)."""
    from hakvm.spec.validate import validate_file
    from tests.unit.test_doctor import qdevice_answers

    path = REPO / "examples" / "lab-qdevice.yaml"
    spec = validate_file(path).spec
    assert spec is not None
    nodes = cluster(monkeypatch, qdevice_answers("quorumtool-voting-node01.txt",
                                                 "qdevice-tool-connected.txt"))  # fmt: skip
    report = asyncio.run(st.status(spec, path))
    for name in ("node01", "node02"):
        (batch,) = batches(nodes, name)
        assert {"quorumtool", "qdevice_tool"} <= set(batch), batch
    assert [(n.qdevice and n.qdevice.vote_cast) for n in report.nodes] == [True, True]
    assert report.health == "healthy"


def test_a_partition_asks_the_other_node_its_own_view(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = cluster(monkeypatch, partitioned())
    report = asyncio.run(st.status(spec, LAB))
    assert report == st.assess(spec, partitioned())
    assert report.problems[0].startswith("split partition: two nodes each claim a quorate DC")
    assert batches(nodes, "node02")[1] == ["crm_mon"]  # its own view, asked second
    assert [n.connects for n in nodes.nodes.values()] == [1, 1]


def test_the_first_node_down_leaves_one_batch_with_crm_mon_on_the_second(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = cluster(monkeypatch, answers("healthy"))
    nodes["node01"].unreachable = "connection refused"
    report = asyncio.run(st.status(spec, LAB))
    assert (report.exit_code, report.seen_from) == (1, "node02")
    assert report.problems == ["node01 unreachable over SSH: node01: connection refused"]
    assert [n.reachable for n in report.nodes] == [False, True]
    assert batches(nodes, "node01") == [] and len(batches(nodes, "node02")) == 1
    assert "crm_mon" in batches(nodes, "node02")[0]


def test_the_first_node_logged_in_runs_crm_mon_without_waiting_for_the_other(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = cluster(monkeypatch, answers("healthy"))
    nodes["node01"].login_s = 0.2
    report = asyncio.run(st.status(spec, LAB))
    same = st.assess(spec, answers("healthy")).model_copy(update={"seen_from": "node02"})
    assert report == same  # node02's view: the same as node01's
    assert [s.node for s in nodes.sent] == ["node02", "node01"]  # sent before node01 was in
    assert ["crm_mon" in b for n in ("node01", "node02") for b in batches(nodes, n)] == [
        False, True
    ]


def test_a_preferred_viewer_keeps_crm_mon_though_it_logs_in_last(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = cluster(monkeypatch, answers("healthy"))
    nodes["node01"].login_s = 0.2

    async def gathered() -> dict[str, NodeAnswer]:
        async with Session(spec, LAB) as session:
            return await st.gather(session, prefer="node01")

    assert st.assess(spec, asyncio.run(gathered())).seen_from == "node01"
    assert [len(batches(nodes, n)) for n in ("node01", "node02")] == [1, 1]
    assert "crm_mon" in batches(nodes, "node01")[0]


def test_a_batch_lost_on_the_viewer_asks_the_other_and_drops_the_connection(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = cluster(monkeypatch, answers("healthy"))
    nodes["node01"].on("sh", rc=255, err="Connection lost")
    report = asyncio.run(st.status(spec, LAB))
    assert (report.seen_from, report.nodes[0].reachable) == ("node02", False)
    assert report.nodes[1].quorate is True  # its own view, read in a second batch
    assert [b for b in batches(nodes, "node02")] == [
        ["cfgtool", "proc_drbd", "drbd_json", "drbd_devices", "bond_bond0"], ["crm_mon"]
    ]


def test_a_node_the_view_shows_online_is_in_its_quorate_partition(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not asked its own crm_mon, node02 is quorate as the view it is a member of."""
    seen = answers("healthy")
    for answer in seen.values():
        edit(answer, "crm_mon", 'with_quorum="true"', 'with_quorum="false"')
    nodes = cluster(monkeypatch, seen)
    report = asyncio.run(st.status(spec, LAB))
    assert report == st.assess(spec, seen)  # not quorate: node02 was asked, as before
    assert report.exit_code == 2 and [n.quorate for n in report.nodes] == [False, False]
    assert batches(nodes, "node02")[1] == ["crm_mon"]


def test_watch_refreshes_on_the_connections_it_opened(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = cluster(monkeypatch, answers("healthy"))
    reports: list[st.StatusReport] = []

    class Enough(Exception):
        pass

    def show(report: st.StatusReport) -> None:
        reports.append(report)
        if len(reports) == 2:  # node02 drops its connection before the third refresh
            nodes["node02"].on("sh", rc=255, err="Connection lost")
        if len(reports) == 4:
            raise Enough

    with pytest.raises(Enough):
        asyncio.run(st.watch(spec, LAB, 0.001, show))
    assert [r.health for r in reports] == ["healthy", "healthy", "degraded", "degraded"]
    assert nodes["node01"].connects == 1  # one login for four refreshes
    assert nodes["node02"].connects == 2  # again only after its connection was lost
    assert nodes.dropped == [] and all(n.closed for n in nodes.nodes.values())
    crm_mon = [sum("crm_mon" in b for b in batches(nodes, n)) for n in ("node01", "node02")]
    assert crm_mon == [4, 0]


@pytest.mark.parametrize("as_json", [True, False])
def test_status_watch_command_uses_one_session(
    spec: ClusterSpec,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    as_json: bool,
) -> None:
    from hakvm.cli import main

    nodes = cluster(monkeypatch, answers("healthy"))
    real = nodes["node01"].answer
    assert real is not None

    def until_ctrl_c(node, argv, stdin):  # type: ignore[no-untyped-def]
        if len(batches(nodes, "node01")) > 3:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C, during the fourth refresh
        return real(node, argv, stdin)

    nodes["node01"].answer = until_ctrl_c
    sleeps: list[float] = []

    async def no_wait(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    monkeypatch.setattr(time, "sleep", sleeps.append)
    # Python keeps SIGINT ignored when started so (a shell's background job): the test's
    # Ctrl-C then never came and the watch ran forever (a local make test, 2026-12-01).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = main(["status", "--watch", "2", *(["--json"] if as_json else []), str(LAB)])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 0
    assert [n.connects for n in nodes.nodes.values()] == [1, 1]
    assert sleeps == [2.0, 2.0, 2.0]
    out = capsys.readouterr().out
    if as_json:  # one report per line
        assert [json.loads(line)["health"] for line in out.splitlines()] == ["healthy"] * 3
    else:
        assert "HEALTHY" in out and "vm-b" in out


def test_status_imports_no_other_command_family() -> None:
    """`hakvm status` loads neither the deploy planner, the renderers (jinja2), the drills
    nor the lab: a second of CPU on a loaded host before the first login."""
    code = (
        "import sys; from hakvm.cli import main; main(['status', '--help']); "
        "print(' '.join(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = result.stdout.split()
    heavy = ("hakvm.deploy", "hakvm.render", "hakvm.drill", "hakvm.lab", "hakvm.ops.doctor",
             "jinja2")  # fmt: skip
    assert [m for m in loaded if m.startswith(heavy)] == []
    assert "hakvm.ops.status" in loaded


def test_status_reads_the_resync_flag_the_renderers_write() -> None:
    from hakvm.render import drbd
    from hakvm.spec import derive

    assert derive.resync_attribute("vm-b") == drbd.resync_attribute("vm-b")
