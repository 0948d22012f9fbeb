"""Pure parts of `hakvm drill`: victim choice, fencing history, refusing non-lab nodes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib

import pytest

from hakvm.drill.faults import LabFaults, NodeFaults, faults_for
from hakvm.drill.harness import Cluster, DrillError, DrillResult, busiest, fence_successes
from hakvm.remote.facts import parse_batch
from hakvm.remote.pacemaker import ClusterState, parse_crm_mon
from hakvm.spec.models import FenceAction
from hakvm.spec.validate import validate_file
from tests.unit.fakes import FakeNode, FakeNodes, next_answer

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def spec():  # type: ignore[no-untyped-def]
    report = validate_file(REPO / "examples" / "lab.yaml")
    assert report.spec is not None
    return report.spec


def test_busiest_node_and_tie_break(spec) -> None:  # type: ignore[no-untyped-def]
    assert busiest({"vm-a": ["node01"], "vm-b": ["node01"]}, spec) == "node01"
    # One VM each: the node fence-race protection would not keep (node01 is preferred).
    assert busiest({"vm-a": ["node01"], "vm-b": ["node02"]}, spec) == "node02"


def _recorded_crm_mon() -> str:
    """crm_mon XML recorded on a healthy lab: vm-a on node01, vm-b on node02."""
    return parse_batch((DATA / "status-healthy-node01.b64").read_text())["crm_mon"][1].decode()


def test_fence_successes_from_recorded_crm_mon() -> None:
    text = _recorded_crm_mon().replace(
        "</nodes>",
        '</nodes><fence_history><fence_event action="reboot" target="node02" '
        'delegate="node01" client="pacemaker-controld" origin="node01" status="success" '
        'completed="2026-11-26 06:10:00Z"/><fence_event action="reboot" target="node02" '
        'delegate="node01" status="failed" completed="2026-11-26 06:09:00Z"/></fence_history>',
        1,
    )
    state = parse_crm_mon(text)
    assert fence_successes(state, "node02") == {"2026-11-26 06:10:00Z"}
    assert fence_successes(state, "node01") == set()
    assert fence_successes(None, "node02") == set()


def _faults(spec, lab_dir: pathlib.Path, **kw):  # type: ignore[no-untyped-def]
    cluster = Cluster(spec, REPO / "examples" / "lab.yaml")
    return faults_for(spec, cluster, lab_dir, **{"inject": "auto", "yes_really": False, **kw})


def test_real_nodes_need_yes_really(spec, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DrillError, match=r"not the lab .*add --yes-really"):
        _faults(spec, tmp_path)  # no lab.json there
    (tmp_path / "lab.json").write_text(json.dumps({"ssh_port": 2301}))
    with pytest.raises(DrillError, match=r"nodes\.node01\.ssh is not the lab"):
        _faults(spec, tmp_path)
    with pytest.raises(DrillError, match="--inject lab"):
        _faults(spec, tmp_path, inject="lab")
    assert isinstance(_faults(spec, tmp_path, yes_really=True), NodeFaults)


def test_the_lab_gets_lab_faults_unless_nodes_asked(spec, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    ports = {"ssh_port": 2201}
    (tmp_path / "lab.json").write_text(json.dumps(ports))
    assert isinstance(_faults(spec, tmp_path), LabFaults)
    with pytest.raises(DrillError, match=r"--inject nodes.*--yes-really"):
        _faults(spec, tmp_path, inject="nodes")
    assert isinstance(_faults(spec, tmp_path, inject="nodes", yes_really=True), NodeFaults)


def test_a_failed_invariant_fails_the_drill() -> None:
    result = DrillResult("node-crash")
    result.check("recovered within bound", True, "")
    assert result.passed
    result.check("acknowledged writes", False, "3 missing")
    assert not result.passed and result.as_dict()["passed"] is False


class ScriptedCluster(Cluster):
    """Health, idleness and clean-ups from a script instead of the nodes."""

    def __init__(self, spec, health: list[tuple[bool, list[str], list[str]]], idle: list[bool]):  # type: ignore[no-untyped-def]
        super().__init__(spec, REPO / "examples" / "lab.yaml")
        self.health, self.idle, self.cleanups = health, idle, 0

    async def healthy(self) -> tuple[bool, list[str]]:
        ok, problems, failures = next_answer(self.health)
        self.only_failures = failures
        return ok, problems

    async def cleanup(self) -> None:
        self.cleanups += 1

    async def wait_idle(self, timeout: float) -> bool:
        return next_answer(self.idle)


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    async def instant(_: float) -> None:
        return None

    monkeypatch.setattr("hakvm.drill.scenarios.asyncio.sleep", instant)


def test_failed_actions_alone_are_recorded_and_cleaned_once(spec, no_sleep) -> None:  # type: ignore[no-untyped-def]
    failure = "vm-b_drbd monitor on node01 Timed Out"
    degraded = (False, [f"1 failed action(s): {failure}"], [failure])
    cluster = ScriptedCluster(spec, [degraded, degraded, (True, [], [])], [True])
    cleared: list[str] = []
    assert asyncio.run(cluster.wait_healthy(60, lambda _: None, cleared)) >= 0
    assert (cleared, cluster.cleanups) == ([failure], 1)
    # Without the caller asking, failed actions keep the cluster unhealthy.
    cluster = ScriptedCluster(spec, [degraded], [True])
    assert asyncio.run(cluster.wait_healthy(0.01, lambda _: None)) == -1
    assert cluster.cleanups == 0


def test_settled_needs_idle_then_healthy_then_still_idle(spec, no_sleep) -> None:  # type: ignore[no-untyped-def]
    moving = (False, ["vm-b is not running"], [])
    cluster = ScriptedCluster(spec, [moving, (True, [], [])], [True, True, False, True, True])
    assert asyncio.run(cluster.wait_settled(60, lambda _: None)) >= 0
    assert cluster.idle == [True]  # idle, unhealthy; idle, healthy, busy again; idle, healthy, idle
    stuck = ScriptedCluster(spec, [(True, [], [])], [False])
    assert asyncio.run(stuck.wait_settled(60, lambda _: None)) == -1
    assert stuck.problems == ["Pacemaker still had actions pending after 60s"]


def _with_fencing(target: str) -> str:
    """The recorded healthy crm_mon, plus one successful fencing of `target`."""
    return _recorded_crm_mon().replace(
        "</nodes>",
        f'</nodes><fence_history><fence_event action="reboot" target="{target}" '
        'delegate="node02" origin="node02" status="success" '
        'completed="2026-11-26 23:50:00Z"/></fence_history>',
        1,
    )


class PartitionRace(Cluster):
    """A heartbeat partition whose fence race the wrong node wins: node02 (the victim the
    delay should sacrifice) shoots node01 first. Each node answers as it would then; the
    same object injects the faults."""

    def __init__(self, spec) -> None:  # type: ignore[no-untyped-def]
        super().__init__(spec, REPO / "examples" / "lab.yaml")
        self.before = parse_crm_mon(_recorded_crm_mon())
        self.node01_shot = parse_crm_mon(_with_fencing("node01"))
        self.cut = self.rebooted = False
        self.healed = 0
        self.dropped: list[str] = []

    async def state(self, name: str) -> ClusterState | None:
        if not self.cut:
            return self.before
        if name == "node01" and not self.rebooted:
            return None  # fenced: it does not answer
        return self.node01_shot

    async def drop(self, name: str) -> None:
        self.dropped.append(name)

    async def partition(self) -> None:
        self.cut = True

    async def heal(self) -> None:
        self.healed += 1


def test_a_lost_fence_race_fails_the_partition_drill(spec, no_sleep, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from hakvm.drill import scenarios as drill

    race = PartitionRace(spec)
    witness_read_on: list[str] = []

    async def start(cluster, node, vm, say):  # type: ignore[no-untyped-def]
        return vm

    async def acks(w) -> None:  # type: ignore[no-untyped-def]
        return None

    async def finish(cluster, w, reader, result) -> None:  # type: ignore[no-untyped-def]
        witness_read_on.append(reader)

    async def healthy_again(cluster, result, timeout, say) -> None:  # type: ignore[no-untyped-def]
        race.rebooted = True  # node01 came back from its fencing

    monkeypatch.setattr(drill, "start_witness", start)
    monkeypatch.setattr(drill, "wait_acks", acks)
    monkeypatch.setattr(drill, "finish_witness", finish)
    monkeypatch.setattr(drill, "check_healthy_again", healthy_again)
    result = asyncio.run(drill.heartbeat_partition(race, race, 30, lambda _: None))  # type: ignore[arg-type]
    failed = {i.name: i.detail for i in result.invariants if not i.ok}
    assert not result.passed
    assert "node02 fenced node01" in failed["preferred survivor won the fence race"]
    assert failed["exactly one node fenced"] == "fenced during the partition: ['node01']"
    assert result.timeline.at("node01 fenced by node02 (race lost)") is not None
    assert result.recovery_s is None  # no recovery is claimed for the wrong survivor
    # The writer's node (node02) survived: the acks are read there; links are healed.
    assert witness_read_on == ["node02"] and race.healed >= 1 and race.dropped == ["node01"]


class RollingLab(Cluster):
    """Rolling maintenance on a cluster where an earlier drill left every VM on node02.
    Placement follows the moves the drill makes; each reboot is seen leaving, then back."""

    def __init__(self, spec) -> None:  # type: ignore[no-untyped-def]
        super().__init__(spec, REPO / "examples" / "lab.yaml")
        self.where = {"vm-a": "node02", "vm-b": "node02"}
        self.events: list[str] = []
        self.rebooting: str | None = None
        self.polls = 0

    async def placement(self, name: str) -> dict[str, list[str]]:
        return {vm: [node] for vm, node in self.where.items()}

    async def conn(self, name: str):  # type: ignore[no-untyped-def]
        lab = self

        def reboot(node: FakeNode, argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str]:
            assert argv == ("systemctl", "reboot")
            lab.events.append(f"reboot {name}")
            lab.rebooting, lab.polls = name, 0
            return 0, ""

        return FakeNode(name, reboot)

    async def drop(self, name: str) -> None:
        return None

    async def state(self, name: str):  # type: ignore[no-untyped-def]
        from types import SimpleNamespace

        self.polls += 1
        nodes = {
            n: SimpleNamespace(online=not (n == self.rebooting and self.polls == 1))
            for n in ("node01", "node02")
        }
        return SimpleNamespace(nodes=nodes)

    async def wait_settled(self, timeout: float, say) -> float:  # type: ignore[no-untyped-def]
        return 1.0


def _stub_rejoin(monkeypatch: pytest.MonkeyPatch) -> None:
    """What rolling maintenance does after each reboot (undrain, standby off, healthy) passes."""
    from hakvm.drill import scenarios as drill
    from hakvm.ops import migrate

    async def anything(*_: object) -> bool:
        return True

    monkeypatch.setattr(migrate, "undrain", anything)
    monkeypatch.setattr(drill, "_wait_out_of_standby", anything)
    monkeypatch.setattr(drill, "check_healthy_again", anything)


def test_rolling_maintenance_moves_a_vm_live_off_every_node(spec, no_sleep, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from hakvm.drill import scenarios as drill
    from hakvm.ops import migrate

    lab = RollingLab(spec)

    async def fake_migrate(spec, spec_path, vm, target, progress):  # type: ignore[no-untyped-def]
        lab.events.append(f"migrate {vm} to {target}")
        source, lab.where[vm] = lab.where[vm], target
        return migrate.MoveResult(vm, source, target, "live", 1.0, downtime_ms=5)

    async def fake_drain(spec, spec_path, node, progress):  # type: ignore[no-untyped-def]
        lab.events.append(f"drain {node}")
        result = migrate.DrainResult(node, standby=True)
        for vm in [v for v, n in lab.where.items() if n == node]:
            result.moves.append(await fake_migrate(spec, spec_path, vm, lab.other(node), None))
        return result

    _stub_rejoin(monkeypatch)
    monkeypatch.setattr(migrate, "migrate", fake_migrate)
    monkeypatch.setattr(migrate, "drain", fake_drain)
    result = asyncio.run(drill.rolling_maintenance(lab, lab, 600, lambda _: None))  # type: ignore[arg-type]
    # node01 ran nothing: a VM is moved there first, so its drain really migrates one.
    assert lab.events[:3] == ["migrate vm-a to node01", "drain node01", "migrate vm-a to node02"]
    assert lab.events.index("reboot node01") < lab.events.index("drain node02")
    assert result.passed, [(i.name, i.detail) for i in result.invariants if not i.ok]
    assert result.timeline.at("set-up: vm-a moved to node01 (live)") is not None
    drained = {i.name: i.detail for i in result.invariants if "drained" in i.name}
    assert drained == {"node01 drained live": "1 move(s)", "node02 drained live": "2 move(s)"}


def test_a_drain_that_moved_nothing_proves_nothing(spec, no_sleep, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from hakvm.drill import scenarios as drill
    from hakvm.ops import migrate

    lab = RollingLab(spec)

    async def no_moves(spec, spec_path, node, progress):  # type: ignore[no-untyped-def]
        return migrate.DrainResult(node, standby=True)

    async def placed(cluster, node, result, say, *, why, at=0.0) -> None:  # type: ignore[no-untyped-def]
        return None

    _stub_rejoin(monkeypatch)
    monkeypatch.setattr(migrate, "drain", no_moves)
    monkeypatch.setattr(drill, "_place_a_vm_on", placed)
    result = asyncio.run(drill.rolling_maintenance(lab, lab, 600, lambda _: None))  # type: ignore[arg-type]
    failed = {i.name: i.detail for i in result.invariants if not i.ok}
    assert failed == {"node01 drained live": "0 move(s)", "node02 drained live": "0 move(s)"}


class ReplacementLab(Cluster):
    """node02 dies and is reinstalled: node01 fences it on the second poll and runs both VMs;
    every answer the drill reads is scripted here."""

    def __init__(self, spec) -> None:  # type: ignore[no-untyped-def]
        super().__init__(spec, REPO / "examples" / "lab.yaml")
        self.events: list[str] = []
        self.polls = 0
        self.pids_after = {"vm-a": "node01:11", "vm-b": "node01:22"}

    async def state(self, name: str):  # type: ignore[no-untyped-def]
        self.polls += 1
        text = (DATA / "status-healthy-node01.b64").read_text()
        state = parse_crm_mon(parse_batch(text)["crm_mon"][1].decode())
        for vm in ("vm-a", "vm-b"):
            state.resources[vm].active_on = ["node01"]
        if self.polls >= 2:
            from hakvm.remote.pacemaker import FenceEvent

            state.fencing.append(FenceEvent("reboot", "node02", "node01", "success", "now"))
        return state

    async def placement(self, name: str) -> dict[str, list[str]]:
        return {"vm-a": ["node01"], "vm-b": ["node01"]}

    async def qemu_pids(self) -> dict[str, str]:
        if any(e.startswith("replace-node") for e in self.events):
            return self.pids_after
        return {"vm-a": "node01:11", "vm-b": "node01:22"}

    async def drbd(self, node: str, vm: str):  # type: ignore[no-untyped-def]
        from hakvm.remote.drbd import DrbdResource

        return DrbdResource(vm, 0, "Connected", "Primary", "Primary", "UpToDate", "UpToDate")

    async def drop(self, name: str) -> None:
        self.events.append(f"drop {name}")


class ReplacementFaults(LabFaults):
    def __init__(self, log: list[str]) -> None:
        super().__init__(pathlib.Path("/nonexistent"))
        self.log = log

    async def run(self, *args: str) -> str:
        self.log.append("lab " + " ".join(args))
        return '{"at": 1764150854.5}' if "--json" in args else ""


def _replacement(spec, monkeypatch, *, restarted: bool = False):  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from hakvm.drill import replacement
    from hakvm.ops import replace

    lab = ReplacementLab(spec)
    if restarted:
        lab.pids_after = {"vm-a": "node01:99", "vm-b": "node01:22"}
    faults = ReplacementFaults(lab.events)

    async def start(cluster, node, vm, say):  # type: ignore[no-untyped-def]
        lab.events.append(f"witness on {node} ({vm})")
        return SimpleNamespace(vm=vm)

    async def acks(w) -> None:  # type: ignore[no-untyped-def]
        return None

    async def finish(cluster, w, reader, result) -> None:  # type: ignore[no-untyped-def]
        lab.events.append(f"witness read on {reader}")
        result.check("acknowledged writes", True, "")

    async def check(ssh, known):  # type: ignore[no-untyped-def]
        return SimpleNamespace(state="trusted", fingerprint="SHA256:new")

    async def replace_node(spec, spec_path, node, say):  # type: ignore[no-untyped-def]
        lab.events.append(f"replace-node {node}")
        report = replace.ReplaceReport(node, "node01", untouched=not restarted)
        report.timeline = [(3.0, "node02 online in the cluster"), (40.0, "vm-a: resync done")]
        report.resync_s = {"vm-a": 30.0, "vm-b": 31.0}
        return report

    monkeypatch.setattr(replacement, "start_witness", start)
    monkeypatch.setattr(replacement, "wait_acks", acks)
    monkeypatch.setattr(replacement, "finish_witness", finish)
    monkeypatch.setattr(replacement.hostkeys, "check", check)
    monkeypatch.setattr(replace, "replace_node", replace_node)
    monkeypatch.setattr(replacement, "POLL_S", 0)
    result = asyncio.run(replacement.replace_and_check(lab, faults, 600, lambda _: None))
    return lab, result


def test_node_replacement_kills_reinstalls_then_replaces_with_the_witness_writing(
    spec, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    lab, result = _replacement(spec, monkeypatch)
    assert lab.events == [
        "lab bmc-stop node02", "lab kill node02 --json", "drop node02", "lab reimage node02",
        "lab bmc-start node02", "lab start node02 --wait",
        "witness on node01 (vm-a)", "replace-node node02", "witness read on node02",
    ]  # fmt: skip
    assert result.passed, [(i.name, i.detail) for i in result.invariants if not i.ok]
    assert result.timeline.at("node02 fenced") is not None
    assert result.timeline.at("vm-b running on node01") is not None
    assert any("replace-node: vm-a: resync done" in e["event"] for e in result.timeline.as_dict())
    detail = {i.name: i.detail for i in result.invariants}
    assert detail["replace-node"] == "resync from node01: vm-a 30.0s, vm-b 31.0s"


def test_node_replacement_fails_when_a_vm_restarted(spec, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _, result = _replacement(spec, monkeypatch, restarted=True)
    failed = {i.name: i.detail for i in result.invariants if not i.ok}
    assert set(failed) == {"no VM stopped"} and "node01:99" in failed["no VM stopped"]


def test_node_replacement_is_for_the_lab_and_only_when_named(spec) -> None:  # type: ignore[no-untyped-def]
    from hakvm.drill import replacement
    from hakvm.drill.scenarios import ALL, DRILLS

    assert "node-replacement" in DRILLS and "node-replacement" not in ALL
    nodes = NodeFaults(spec, FakeNodes())
    with pytest.raises(DrillError, match="only on the lab"):
        asyncio.run(replacement.replace_and_check(Cluster(spec, REPO / "x.yaml"), nodes, 1,
                                                  lambda _: None))  # fmt: skip


class FencedOff(Cluster):
    """node01 up and answering; node02 as node01's crm_mon shows it (fenced: offline, clean)."""

    def __init__(self, spec, node02_unclean: bool = False) -> None:  # type: ignore[no-untyped-def]
        super().__init__(spec, REPO / "examples" / "lab.yaml")
        self.node01 = FakeNode("node01")
        self.node02_unclean = node02_unclean

    async def state(self, name: str) -> ClusterState | None:
        if name != "node01":
            return None  # node02 is off: no answer
        state = parse_crm_mon(_recorded_crm_mon())
        node02 = state.nodes["node02"]
        state.nodes["node02"] = dataclasses.replace(
            node02, online=False, unclean=self.node02_unclean
        )
        return state

    async def conn(self, name: str):  # type: ignore[no-untyped-def]
        assert name == "node01", name
        return self.node01


def _off(spec):  # type: ignore[no-untyped-def]
    fencing = spec.cluster.fencing.model_copy(update={"action": FenceAction.OFF})
    return spec.model_copy(update={"cluster": spec.cluster.model_copy(update={"fencing": fencing})})


def test_fencing_action_off_powers_the_fenced_node_on_through_its_fence_device(spec) -> None:  # type: ignore[no-untyped-def]
    cluster = FencedOff(_off(spec))
    assert asyncio.run(cluster.power_on_fenced(lambda _: None)) == ["node02"]
    assert cluster.node01.argvs == [("stonith_admin", "--unfence", "node02", "--timeout=150")]
    # Still unclean: its fencing has not ended; nothing is powered on.
    cluster = FencedOff(_off(spec), node02_unclean=True)
    assert asyncio.run(cluster.power_on_fenced(lambda _: None)) == []
    assert cluster.node01.argvs == []
    # reboot (the default): the node comes back by itself.
    cluster = FencedOff(spec)
    assert asyncio.run(cluster.power_on_fenced(lambda _: None)) == []
    assert cluster.node01.argvs == []


def test_node_hang_freezes_the_victim_and_never_leaves_it_hung(spec, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """node-hang injects faults.hang into node-crash's body, and thaws the victim however
    the drill ends (a failed fencing must not leave a lab node hung)."""
    from hakvm.drill import scenarios

    ran: list[str] = []
    lab = LabFaults(tmp_path)

    def lab_command(*args: str) -> str:
        ran.append(" ".join(args))
        return '{"node": "node02", "at": 1764150854.5}' if "--json" in args else ""

    lab._lab = lab_command  # type: ignore[method-assign]

    async def body(cluster, result, *, inject, victim, **_):  # type: ignore[no-untyped-def]
        await inject(victim)
        raise DrillError("fencing never came")

    async def victim() -> str:
        return "node02"

    monkeypatch.setattr(scenarios, "_crash_and_recover", body)
    cluster = Cluster(spec, REPO / "examples" / "lab.yaml")
    monkeypatch.setattr(cluster, "victim", victim)
    with pytest.raises(DrillError):
        asyncio.run(scenarios.node_hang(cluster, lab, 600, lambda _: None))
    assert ran == ["freeze node02 --json", "thaw node02"]
    assert "node-hang" in scenarios.ALL


def test_a_real_node_hangs_by_a_panic_that_leaves_it_on(spec) -> None:  # type: ignore[no-untyped-def]
    from hakvm.drill.faults import FaultError
    from hakvm.remote.connection import RemoteError

    class Panics(FakeNode):
        async def run(self, argv, **kw):  # type: ignore[no-untyped-def]
            await super().run(argv, **kw)
            raise RemoteError("connection lost")  # the panic takes the SSH session with it

    nodes = FakeNodes("node01", "node02")
    panics = Panics("node02", log=nodes["node02"].sent)
    nodes.nodes["node02"] = panics
    faults = NodeFaults(spec, nodes)
    assert isinstance(asyncio.run(faults.hang("node02")), float)
    assert panics.argvs == [
        ("sh", "-c", "sysctl -qw kernel.panic=0 && echo c > /proc/sysrq-trigger")
    ]
    asyncio.run(faults.unhang("node02"))  # only its fencing brings it back
    assert len(panics.argvs) == 1
    # A node that answers did not go down: the drill says so instead of waiting its bound.
    with pytest.raises(FaultError, match=r"node01 answered .* it did not go down"):
        asyncio.run(faults.hang("node01"))


def test_the_clock_starts_at_the_faults_own_moment() -> None:
    """A drill's t=0 is the injector's reading at the fault (`lab kill --json`'s `at`), not
    the moment before a command that first imports the whole CLI."""
    import time

    from hakvm.drill.harness import fault_moment

    before = time.monotonic()
    assert fault_moment(None, before) == before
    two_s_ago = fault_moment(time.time() - 2.0, before)
    assert abs(time.monotonic() - two_s_ago - 2.0) < 0.1


def test_the_victim_can_be_named(spec, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """--victim: a node failure takes down the node named, whatever runs where (the
    benchmark crashes each node in turn)."""
    from hakvm.drill.run import run_drills

    cluster = Cluster(spec, REPO / "examples" / "lab.yaml", victim="node01")
    assert asyncio.run(cluster.victim()) == "node01"  # no node asked
    with pytest.raises(DrillError, match="--victim node03: no such node"):
        asyncio.run(run_drills(spec, REPO / "examples" / "lab.yaml", ["node-crash"],
                               lab_dir=tmp_path, bound=60, say=lambda _: None,
                               victim="node03"))  # fmt: skip
