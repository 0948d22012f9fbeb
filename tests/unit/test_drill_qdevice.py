"""The quorum device's drills, their logic against scripted clusters (the shared bodies of
scenarios.py, tested in test_drill.py, are stand-ins here): which node each one fails, what
it must see, and the verdicts when the cluster does or does not behave."""

from __future__ import annotations

import asyncio
import functools
import json
import pathlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hakvm.drill import faults, scenarios
from hakvm.drill import qdevice as qd
from hakvm.drill.harness import Cluster, DrillError, DrillResult
from hakvm.drill.timeline import Fenced, QuorumLost, VmsStopped
from hakvm.ops.status import StatusReport, assess
from hakvm.remote.pacemaker import ClusterState, FenceEvent, NodeState, ResourceState
from hakvm.remote.probes import NodeAnswer
from hakvm.render import cib
from hakvm.spec.models import ClusterSpec
from hakvm.spec.validate import validate_file
from tests.render.examples import example_data, render_context
from tests.unit.fakes import FakeNode, next_answer
from tests.unit.test_doctor import qdevice_answers

REPO = pathlib.Path(__file__).resolve().parents[2]
QDEVICE_DATA = pathlib.Path(__file__).parent / "data" / "qdevice"
NODES = ("node01", "node02")


def _spec(example: str) -> ClusterSpec:
    report = validate_file(REPO / "examples" / f"{example}.yaml")
    assert report.spec is not None
    return report.spec


def state(
    *,
    quorate: bool = True,
    online: tuple[str, ...] = NODES,
    vms: dict[str, str] | None = None,
    fenced: tuple[tuple[str, str], ...] = (),
    policy: str = "stop",
) -> ClusterState:
    """A crm_mon view: which nodes are online, where each VM runs, fencings (target, when),
    the no-quorum-policy."""
    placed = {"vm-a": "node01", "vm-b": "node02"} if vms is None else vms
    return ClusterState(
        dc="node01",
        quorate=quorate,
        nodes={n: NodeState(n, n in online, False, False, False, n == "node01") for n in NODES},
        resources={
            vm: ResourceState(vm, "ocf:heartbeat:VirtualDomain", [node] if node else [])
            for vm, node in placed.items()
        },
        fencing=[FenceEvent("reboot", t, "x", "success", when) for t, when in fenced],
        no_quorum_policy=policy,
    )


class Scripted(Cluster):
    """Each node's crm_mon answers come from a list (the last one stays); `conn` gives fake
    nodes that answer cibadmin with `cib_text`, QEMU pid files and corosync-quorumtool."""

    def __init__(self, example: str, views: dict[str, list[ClusterState | None]]) -> None:
        super().__init__(_spec(example), REPO / "examples" / f"{example}.yaml")
        self.views = views
        self.cib_text = cib.cib_xml(render_context(example_data(example)))
        self.pids = {"node01": {"vm-a": "101"}, "node02": {"vm-b": "202"}}
        self.quorumtool: list[str] = []
        # node -> its scheduler's log (journalctl), one per read (the last stays)
        self.scheduler_logs: dict[str, list[str]] = {}
        self.dropped: list[str] = []
        self.off: list[str] = []  # unreachable in `report`

    async def state(self, name: str) -> ClusterState | None:
        views = self.views[name]
        return next_answer(views)

    async def conn(self, name: str):  # type: ignore[no-untyped-def]
        node = FakeNode(name)
        node.on("cibadmin", out=self.cib_text)
        for vm, pid in self.pids.get(name, {}).items():
            node.on("cat", f"/run/libvirt/qemu/{vm}.pid", out=pid)
        node.on("cat", rc=1)
        node.on("journalctl", out=next_answer(self.scheduler_logs.get(name, [""])))
        if self.quorumtool:  # one answer per connection, the last one stays
            text = next_answer(self.quorumtool)
            node.on("corosync-quorumtool", out=(QDEVICE_DATA / text).read_text())
        return node

    async def drop(self, name: str) -> None:
        self.dropped.append(name)

    async def wait_healthy(self, timeout: float, say, cleared=None) -> float:  # type: ignore[no-untyped-def]
        return 1.0

    async def report(self) -> StatusReport:
        """`hakvm status` on recorded answers: each node's quorumtool the current one, the
        nodes in `self.off` unreachable."""
        text = self.quorumtool[0] if self.quorumtool else "quorumtool-voting-node01.txt"
        seen = qdevice_answers(text, "qdevice-tool-connected.txt")
        for name in self.off:
            seen[name] = NodeAnswer(name, error="connection refused")
        return assess(self.spec, seen)


class Faults:
    """Records what was injected; `then` runs a callback after each injection."""

    kind = "lab"

    def __init__(self, then: Callable[[str], None] | None = None) -> None:
        self.done: list[str] = []
        self.then = then or (lambda _: None)

    async def _do(self, what: str) -> None:
        self.done.append(what)
        self.then(what)

    async def crash(self, node: str) -> None:
        await self._do(f"crash {node}")

    async def qnetd_down(self) -> None:
        await self._do("qnetd down")

    async def qnetd_up(self) -> None:
        await self._do("qnetd up")

    async def isolate(self, node: str) -> None:
        await self._do(f"isolate {node}")

    async def power_on(self, node: str) -> None:
        await self._do(f"power on {node}")

    async def heal(self) -> None:
        await self._do("heal")


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    async def instant(_: float) -> None:
        return None

    monkeypatch.setattr("hakvm.drill.qdevice.asyncio.sleep", instant)
    monkeypatch.setattr("hakvm.drill.qdevice.POLL_S", 0)
    monkeypatch.setattr("hakvm.drill.qdevice.VOTE_GONE_S", 5.0)


def _say(_: str) -> None:
    return None


# --- which drills, and refusals -----------------------------------------------------------------


def test_all_runs_the_quorum_device_drills_only_with_a_device() -> None:
    names = set(scenarios.QDEVICE_DRILLS)
    assert names == {"qnetd-down", "partition-with-qdevice", "node-crash-with-qdevice",
                     "isolated-node", "qnetd-down-then-crash"}  # fmt: skip
    assert not names & set(scenarios.scenarios_for(_spec("lab")))
    assert names <= set(scenarios.scenarios_for(_spec("lab-qdevice")))
    assert scenarios.scenarios_for(_spec("lab-qdevice"))[:8] == list(scenarios.SCENARIOS[:8])
    # Named only, as without a device: node-replacement reinstalls a lab node.
    assert all("node-replacement" not in scenarios.scenarios_for(_spec(example))
               for example in ("lab", "lab-qdevice"))  # fmt: skip


# --- what a drill's `finally` and `hakvm drill --heal` undo -------------------------------------


@pytest.mark.parametrize("qnetd", ["stopped", "running", None])
def test_lab_clear_starts_a_qnetd_a_drill_stopped(
    tmp_path: pathlib.Path, qnetd: str | None
) -> None:
    lab = faults.LabFaults(tmp_path)
    ran: list[str] = []
    status: dict[str, Any] = {"links": {"hb": "up"}, "nodes": {"node01": {"bmc": "running"}}}
    if qnetd is not None:  # a lab from before the quorum device has none
        status["qnetd"] = {"state": qnetd}

    def lab_command(*args: str) -> str:
        ran.append(" ".join(args))
        return json.dumps(status) if args[0] == "status" else ""

    lab._lab = lab_command  # type: ignore[method-assign]
    healed = asyncio.run(lab.clear())
    started = qnetd == "stopped"
    assert ran[-1] == ("qnetd-start" if started else "bmc-start node01")
    assert healed.undone == (["lab: qnetd started"] if started else [])


def test_a_node_clear_removes_the_qnetd_rule_it_finds() -> None:
    node = FakeNode("node02").on("nft", "list", out=f"table inet {faults.QNETD_TABLE}\n")
    undone = asyncio.run(faults.clear_node(node, None))
    assert undone == [f"node02: removed nftables table inet {faults.QNETD_TABLE}"]
    assert node.sent[-1].stdin == faults.delete_table_script(faults.QNETD_TABLE)


@pytest.mark.parametrize("name", sorted(scenarios.QDEVICE_DRILLS))
def test_each_refuses_a_spec_without_a_device_before_touching_anything(name: str) -> None:
    cluster = Scripted("lab", {n: [state()] for n in NODES})
    faults = Faults()
    with pytest.raises(DrillError, match=f"drill {name}: the spec has no quorum_device"):
        asyncio.run(scenarios.DRILLS[name](cluster, faults, 60, _say))  # type: ignore[arg-type]
    assert faults.done == []


# --- partition, node crash: no delay ------------------------------------------------------------


def _bodies(**bodies: Callable[..., Awaitable[Any]]) -> qd.Bodies:
    async def unused(*_: object, **__: object) -> Any:
        raise AssertionError("not this body")

    names = ("recover", "partition", "quiet", "place")
    return qd.Bodies(**{k: bodies.get(k, unused) for k in names})  # type: ignore[arg-type]


def test_partition_loses_the_non_tie_breaker_and_needs_no_delay() -> None:
    before = state()
    after = state(vms={"vm-a": "node01", "vm-b": "node01"}, fenced=(("node02", "t1"),))
    cluster = Scripted("lab-qdevice", {"node01": [before, before, after], "node02": [before]})
    seen: dict[str, str] = {}

    async def partition(cluster, faults, bound, say, result, *, victim):  # type: ignore[no-untyped-def]
        seen["victim"] = victim
        result.timeline.mark(12.0, Fenced(victim))
        cluster.pids["node01"]["vm-b"] = "303"  # node02's VM now runs on node01 too
        return result

    result = asyncio.run(
        qd.partition_with_qdevice(_bodies(partition=partition), cluster, Faults(), 600, _say)  # type: ignore[arg-type]
    )
    assert seen == {"victim": "node02"}  # tie_breaker: lowest keeps node01
    assert result.passed, [(i.name, i.detail) for i in result.invariants if not i.ok]
    assert {i.name for i in result.invariants} == {
        "no fence delay configured", "fenced without a delay",
        "the winning half's VMs kept running", "the losing half fenced nobody",
    }  # fmt: skip


def test_a_delay_left_in_the_cib_or_a_restarted_winner_vm_fails_the_partition() -> None:
    cluster = Scripted("lab-qdevice", {n: [state()] for n in NODES})
    cluster.cib_text = cib.cib_xml(render_context(example_data("lab")))  # static delay 45 s

    async def partition(cluster, faults, bound, say, result, *, victim):  # type: ignore[no-untyped-def]
        result.timeline.mark(200.0, Fenced(victim))  # after a retry: beyond stonith-timeout
        cluster.pids["node01"]["vm-a"] = "999"
        return result

    result = asyncio.run(
        qd.partition_with_qdevice(_bodies(partition=partition), cluster, Faults(), 600, _say)  # type: ignore[arg-type]
    )
    failed = {i.name: i.detail for i in result.invariants if not i.ok}
    assert failed["no fence delay configured"] == "node01_fence: pcmk_delay_base=node01:45s"
    assert failed["fenced without a delay"] == (
        "node02 fenced 200.0s after the fault (crm_mon, polled every 5 s; stonith-timeout 150s)"
    )
    assert "'vm-a': '101'" in failed["the winning half's VMs kept running"]


def test_the_survivors_record_of_the_fencing_is_preferred_to_the_poll() -> None:
    result = qd.DrillResult("node-crash-with-qdevice")
    result.timeline.mark(151.2, Fenced("node01"))  # the poll: up to 5 s late
    result.journal = {"fenced_s": 138.936}  # lab run of 2026-12-02
    qd.check_no_delay(result, [], "node01", 150)
    assert result.passed
    assert result.invariants[-1].detail == (
        "node01 fenced 138.936s after the fault (the survivor's record; stonith-timeout 150s)"
    )


def test_node_crash_with_a_device_crashes_the_node_a_static_delay_protects() -> None:
    cluster = Scripted("lab-qdevice", {n: [state()] for n in NODES})
    calls: list[str] = []

    async def place(cluster, node, result, say, *, why, at=0.0):  # type: ignore[no-untyped-def]
        calls.append(f"place {node}")

    async def recover(cluster, result, *, bound, say, inject, victim, heal=None):  # type: ignore[no-untyped-def]
        calls.append(f"recover {victim}")
        await inject(victim)
        result.timeline.mark(25.0, Fenced(victim))

    faults = Faults()
    bodies = _bodies(place=place, recover=recover)
    result = asyncio.run(qd.node_crash_with_qdevice(bodies, cluster, faults, 600, _say))  # type: ignore[arg-type]
    assert calls == ["place node01", "recover node01"] and faults.done == ["crash node01"]
    assert result.passed


# --- isolated node ------------------------------------------------------------------------------


def _isolated(cluster: Scripted, faults: Faults, fenced: bool = True) -> DrillResult:
    async def place(cluster, node, result, say, *, why, at=0.0):  # type: ignore[no-untyped-def]
        return None

    async def recover(cluster, result, *, bound, say, inject, victim, heal=None):  # type: ignore[no-untyped-def]
        await inject(victim)
        loop = asyncio.get_running_loop()
        for _ in range(20):  # the watcher runs meanwhile (asyncio.sleep is patched away)
            done = loop.create_future()
            loop.call_soon(done.set_result, None)
            await done
        if fenced:
            result.timeline.mark(30.0, Fenced(victim))
        await heal()

    return asyncio.run(
        qd.isolated_node(_bodies(place=place, recover=recover), cluster, faults, 600, _say)  # type: ignore[arg-type]
    )


def test_the_isolated_node_is_seen_losing_quorum_and_stopping_its_vms(no_sleep: None) -> None:
    # node01 (the tie-breaker's) as it sees itself: quorate, then alone without quorum with its
    # VM still up, then stopped, then gone (fenced).
    alone = ("node01",)
    stopped = state(quorate=False, online=alone, vms={"vm-a": "", "vm-b": "node02"})
    node01 = [state(), state(), state(quorate=False, online=alone), stopped, None]
    node02 = [state(), state(vms={"vm-a": "node02", "vm-b": "node02"}, fenced=(("node01", "t"),))]
    cluster = Scripted("lab-qdevice", {"node01": node01, "node02": node02})
    faults = Faults()
    result = _isolated(cluster, faults)
    assert faults.done[0] == "isolate node01" and "heal" in faults.done
    assert result.timeline.at(QuorumLost("node01")) is not None
    assert result.timeline.at(VmsStopped("node01")) is not None
    assert result.passed, [(i.name, i.detail) for i in result.invariants if not i.ok]


STOPPING = "the isolated node stopped its VMs, or was stopping them when fenced"


def _fenced_while_stopping(scheduler_logs: list[str], fenced: bool = True) -> DrillResult:
    """node01 loses quorum with both VMs still up and is gone (fenced, unless not `fenced`)
    before they stop; `scheduler_logs`: its journal, one per read (the last stays)."""
    alone = ("node01",)
    both = {"vm-a": "node01", "vm-b": "node01"}
    node01 = [state(vms=both), state(quorate=False, online=alone, vms=both), None]
    node02 = [state(vms=both), state(vms={"vm-a": "node02", "vm-b": "node02"},
                                     fenced=(("node01", "t"),))]  # fmt: skip
    cluster = Scripted("lab-qdevice", {"node01": node01, "node02": node02})
    cluster.scheduler_logs["node01"] = scheduler_logs
    return _isolated(cluster, Faults(), fenced)


def test_fenced_while_stopping_passes_on_its_schedulers_record(no_sleep: None) -> None:
    # Recorded on the lab: node01's scheduler, isolated (isolated-node drill, 2026-12-02).
    result = _fenced_while_stopping([(QDEVICE_DATA / "schedulerd-isolated-node01.txt").read_text()])
    assert result.timeline.at(VmsStopped("node01")) is None  # never seen stopped: fenced first
    assert result.passed, [(i.name, i.detail) for i in result.invariants if not i.ok]
    detail = next(i.detail for i in result.invariants if i.name == STOPPING)
    assert detail == (
        "node01 was fenced while stopping vm-a, vm-b (its scheduler: stop due to no quorum)"
    )


def test_the_stops_read_while_the_node_ran_count_when_its_power_cut_lost_them(
    no_sleep: None,
) -> None:
    # make test, 2026-12-04: node01 fenced 25 s after it lost quorum, and its journal read
    # after the reboot held no stop (journald had not synced them): read live, they count.
    recorded = (QDEVICE_DATA / "schedulerd-isolated-node01.txt").read_text()
    result = _fenced_while_stopping([recorded, ""])  # live, then after the rejoin
    assert result.passed, [(i.name, i.detail) for i in result.invariants if not i.ok]
    marks = [str(m) for _, m in result.timeline.marks]
    stops = "node02_fence, vm-a, vm-a_drbd:1, vm-b, vm-b_drbd:1"
    assert f"node01's scheduler: stop {stops} due to no quorum" in marks, marks
    # Neither read has them: fenced under no-quorum-policy=stop, the fence stopped them
    # (make test, 2026-12-05: fenced 13.8 s after its quorum loss, nothing of it logged);
    # not fenced, the drill fails, naming the VMs.
    result = _fenced_while_stopping(["", ""])
    detail = next(i.detail for i in result.invariants if i.name == STOPPING)
    assert result.passed and detail.startswith("node01 was fenced "), detail
    assert detail.endswith(
        "before it logged a stop, under no-quorum-policy=stop (no decision of its scheduler "
        "read): the fence stopped vm-a, vm-b"
    ), detail
    result = _fenced_while_stopping(["", ""], fenced=False)
    failed = {i.name: i.detail for i in result.invariants if not i.ok}
    assert failed[STOPPING] == "node01: no stop of vm-a, vm-b for lack of quorum in its journal"


def _until_the_transition(recorded: str) -> str:
    """The scheduler's log cut where the power cut came: its run started, no stop logged."""
    return recorded.split(" notice: Actions:", maxsplit=1)[0]


def test_fenced_while_its_scheduler_ran_without_quorum_passes_under_policy_stop(
    no_sleep: None,
) -> None:
    # make test, 2026-12-05: node01 fenced 13 s after it lost quorum; its TCG scheduler had
    # logged the start of its run without quorum, and the power cut lost the rest.
    started = _until_the_transition((QDEVICE_DATA / "schedulerd-isolated-node01.txt").read_text())
    assert "Fencing and resource management disabled" in started and "Stop" not in started
    result = _fenced_while_stopping([started, ""])  # live, then after the rejoin
    assert result.passed, [(i.name, i.detail) for i in result.invariants if not i.ok]
    detail = next(i.detail for i in result.invariants if i.name == STOPPING)
    assert detail.endswith(
        "before it logged a stop, under no-quorum-policy=stop (its scheduler seen running "
        "without quorum): the fence stopped vm-a, vm-b"
    ), detail
    assert "node01's scheduler: running without quorum" in [
        str(m) for _, m in result.timeline.marks
    ]


def test_a_run_without_quorum_is_not_enough_under_another_policy_or_once_stops_are_logged(
    no_sleep: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = (QDEVICE_DATA / "schedulerd-isolated-node01.txt").read_text()
    started = _until_the_transition(recorded)
    with monkeypatch.context() as patched:  # freeze keeps a partition's VMs: no stop coming
        patched.setattr(sys.modules[__name__], "state", functools.partial(state, policy="freeze"))
        result = _fenced_while_stopping([started, ""])
    failed = {i.name: i.detail for i in result.invariants if not i.ok}
    assert failed == {STOPPING: "node01: no stop of vm-a, vm-b for lack of quorum in its journal"}
    # Its transition logged without vm-b's stop: that is a decision, and it fails.
    without_vm_b = "\n".join(line for line in recorded.splitlines() if " vm-b " not in line)
    result = _fenced_while_stopping([without_vm_b])
    failed = {i.name: i.detail for i in result.invariants if not i.ok}
    assert failed == {STOPPING: "node01: no stop of vm-b for lack of quorum in its journal"}


def test_fenced_without_a_stop_for_lack_of_quorum_fails(no_sleep: None) -> None:
    recorded = (QDEVICE_DATA / "schedulerd-isolated-node01.txt").read_text()
    without_vm_b = "\n".join(line for line in recorded.splitlines() if " vm-b " not in line)
    result = _fenced_while_stopping([without_vm_b])
    failed = {i.name: i.detail for i in result.invariants if not i.ok}
    assert failed == {STOPPING: "node01: no stop of vm-b for lack of quorum in its journal"}


# --- qnetd down, then a crash --------------------------------------------------------------------


def _qnetd_then_crash(started_without_quorum: bool) -> tuple[DrillResult, Faults]:
    cluster = Scripted("lab-qdevice", {"node01": [], "node02": []})
    cluster.quorumtool = ["quorumtool-voting-node01.txt", "quorumtool-qnetd-down-node01.txt"]
    phase = {"now": "before", "crashed": ""}

    def survivor_views(s: str, victim: str) -> dict[str, list[ClusterState | None]]:
        wrong = state(quorate=False, online=(s,), vms={"vm-a": s, "vm-b": s})
        stopped = state(quorate=False, online=(s,), vms={"vm-a": "", "vm-b": ""})
        return {
            "crashed": [state(quorate=False, online=(s,)), wrong if started_without_quorum
                        else stopped],
            "healed": [stopped],  # qnetd back: still blocked (wait_for_all)
            "powered": [state(vms={"vm-a": s, "vm-b": victim})],  # rejoined, both running
        }  # fmt: skip

    views: dict[str, list[ClusterState | None]] = {"before": [state()]}

    async def node_state(name: str) -> ClusterState | None:
        if name == phase["crashed"]:
            return None
        script = views[phase["now"]]
        return next_answer(script)

    cluster.state = node_state  # type: ignore[method-assign]

    def then(what: str) -> None:
        if what.startswith("crash "):
            victim = what.split()[1]
            phase["now"], phase["crashed"] = "crashed", victim
            cluster.off = [victim]
            views.update(survivor_views(cluster.other(victim), victim))
        elif what == "heal":
            phase["now"] = "healed"
            # Recorded on the lab: the survivor once qnetd was back (2 of 3, blocked).
            cluster.quorumtool = ["quorumtool-blocked-wfa-node01.txt"]
        elif what.startswith("power on "):
            phase["now"], phase["crashed"] = "powered", ""
            cluster.off = []

    faults = Faults(then)
    bound = 0.5 if started_without_quorum else 600  # it never stops them: the bound ends it
    placed: list[str] = []

    async def place(cluster, node, result, say, *, why, at=0.0):  # type: ignore[no-untyped-def]
        placed.append(node)

    bodies = _bodies(place=place)
    result = asyncio.run(qd.qnetd_down_then_crash(bodies, cluster, faults, bound, _say))  # type: ignore[arg-type]
    assert placed == [cluster.other(faults.done[1].split()[1])]  # the survivor gets a VM first
    return result, faults


def test_qnetd_down_then_a_crash_leaves_the_survivor_blocked_until_the_node_is_back(
    no_sleep: None,
) -> None:
    result, faults = _qnetd_then_crash(started_without_quorum=False)
    # one VM each: node01 crashed; qnetd back is not enough (wait_for_all): node01 powered on
    assert faults.done == ["qnetd down", "crash node01", "heal", "power on node01"]
    assert result.passed, [(i.name, i.detail) for i in result.invariants if not i.ok]
    names = [i.name for i in result.invariants]
    assert names == [
        "quorum kept without qnetd", "the survivor lost quorum", "the survivor stopped its VMs",
        "still blocked once qnetd was back (wait_for_all)",
        "hakvm status names the wait_for_all hold",
        "nobody fenced without quorum", "nothing started without quorum",
        "recovered once node01 was back", "healthy again",
    ]  # fmt: skip
    blocked = next(i.detail for i in result.invariants if "wait_for_all" in i.name)
    assert blocked == (
        "node02: device voting True, 2 of 3 votes, quorate False, flags ['Qdevice', 'WaitForAll']"
    )
    named = next(i.detail for i in result.invariants if i.name.startswith("hakvm status"))
    assert named.startswith(
        "node02 has 2 of 3 votes but is held without quorum by wait_for_all until it sees node01"
    )
    events = [m.text for _, m in result.timeline.marks]
    assert events.index("the quorum device stopped voting") < events.index(
        "fault injected (node-crash) on node01"
    )


def test_a_vm_still_shown_on_the_lost_node_is_not_running_again() -> None:
    # The survivor's crm_mon keeps "vm-b Started node02 (UNCLEAN)" until node02 is fenced.
    lost = state(online=("node01",), vms={"vm-a": "node01", "vm-b": "node02"})
    assert lost.running_on_members("vm-b") == []
    assert lost.running_on_members("vm-a") == ["node01"]
    assert state(vms={"vm-b": "node02"}).running_on_members("vm-b") == ["node02"]


def test_a_survivor_that_runs_vms_without_quorum_fails_the_drill(no_sleep: None) -> None:
    result, _ = _qnetd_then_crash(started_without_quorum=True)
    failed = {i.name: i.detail for i in result.invariants if not i.ok}
    assert failed["nothing started without quorum"] == "started: ['vm-a']"
    assert "the survivor stopped its VMs" in failed


# --- quiet faults keep quorum --------------------------------------------------------------------


def test_a_quiet_fault_that_costs_quorum_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    async def instant(_: float) -> None:
        return None

    monkeypatch.setattr("hakvm.drill.scenarios.asyncio.sleep", instant)
    monkeypatch.setattr(scenarios, "QUIET_WATCH_S", 0.05)
    cluster = Scripted("lab-qdevice", {n: [state()] for n in NODES})

    async def healthy() -> tuple[bool, list[str]]:
        cluster.inquorate = ["node02"]
        return False, ["the partition seen from node02 has no quorum"]

    cluster.healthy = healthy  # type: ignore[method-assign]

    async def healthy_again(timeout: float, say, cleared=None) -> float:  # type: ignore[no-untyped-def]
        return 1.0

    cluster.wait_healthy = healthy_again  # type: ignore[method-assign]
    drill = scenarios.DRILLS["qnetd-down"]
    result = asyncio.run(drill(cluster, Faults(), 60, _say))  # type: ignore[arg-type]
    failed = {i.name: i.detail for i in result.invariants if not i.ok}
    assert failed == {"quorum kept": "without quorum: ['node02']"}
