"""Drills on real nodes always heal (issue 16 item 7): each fault kind interrupted at its
worst moment (Ctrl-C right after the fault landed, or the drill cancelled while it waits)
ends with that fault undone; the run heals after every scenario; `hakvm drill --heal`
removes what it finds on the shared fake node, and nothing on a clean one."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Callable
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import pytest

from hakvm.drill import run as drill_run
from hakvm.drill import scenarios
from hakvm.drill.faults import BMC_TABLE, CUT_TABLE, Healed, LabFaults, NodeFaults
from hakvm.drill.faults import delete_table_script as deleted
from hakvm.drill.harness import Cluster, DrillResult
from hakvm.remote.drbd import parse_adjust_dry_run
from hakvm.remote.facts import parse_batch
from hakvm.remote.pacemaker import ClusterState, parse_crm_mon
from hakvm.spec.models import ClusterSpec
from hakvm.spec.validate import validate_file
from tests.unit.fakes import Answer, FakeNode, FakeNodes

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = REPO / "examples" / "lab.yaml"
DATA = pathlib.Path(__file__).parent / "data"
NFT = ["nft", "-f", "-"]


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    report = validate_file(LAB)
    assert report.spec is not None
    return report.spec


def _healthy() -> ClusterState:
    """crm_mon recorded on a healthy lab: vm-a on node01, vm-b on node02."""
    batch = parse_batch((DATA / "status-healthy-node01.b64").read_text())
    return parse_crm_mon(batch["crm_mon"][1].decode())


class Stub(Cluster):
    """A healthy cluster that answers from a recording, over the shared fake nodes; with
    `hang`, Pacemaker's state never comes (a drill waiting for the recovery)."""

    def __init__(self, spec: ClusterSpec, nodes: FakeNodes | None = None) -> None:
        super().__init__(spec, LAB)
        self.nodes = nodes or FakeNodes()
        self.hang = False

    async def state(self, name: str) -> ClusterState | None:
        if self.hang:
            await asyncio.Event().wait()
        return _healthy()

    async def conn(self, name: str) -> FakeNode:  # type: ignore[override]
        return self.nodes[name]

    async def drop(self, name: str) -> None:
        return None

    async def drbd(self, node: str, vm: str) -> None:
        return None


class Recorder:
    """Faults that record what they do; `interrupt` names the one that raises Ctrl-C just
    after it took effect (the change landed, the call never returned)."""

    kind = "nodes"

    def __init__(self, stub: Stub | None = None, interrupt: str = "") -> None:
        self.calls: list[str] = []
        self.stub = stub
        self.interrupt = interrupt

    async def _did(self, what: str) -> None:
        self.calls.append(what)
        if what.split(maxsplit=1)[0] == self.interrupt:
            raise KeyboardInterrupt

    async def crash(self, node: str) -> None:
        await self._did(f"crash {node}")

    async def cut_heartbeat(self) -> None:
        await self._did("cut_heartbeat")

    async def cut_bond_member(self) -> None:
        await self._did("cut_bond_member")

    async def partition(self) -> None:
        await self._did("partition")
        if self.stub is not None:
            self.stub.hang = True  # the drill now waits for a recovery

    async def heal(self) -> None:
        self.calls.append("heal")

    async def bmc_down(self, node: str) -> None:
        await self._did(f"bmc_down {node}")

    async def bmc_up(self, node: str) -> None:
        self.calls.append(f"bmc_up {node}")

    async def clear(self) -> Healed:
        self.calls.append("clear")
        return Healed(["lab: link hb healed"])


@pytest.fixture
def no_witness(monkeypatch: pytest.MonkeyPatch) -> None:
    """The acknowledged-write witness is not what these tests are about."""

    async def start(cluster: object, node: str, vm: str, say: object) -> Any:
        return SimpleNamespace(stop=asyncio.Event(), node=node)

    async def nothing(*_: object, **__: object) -> None:
        return None

    for name in ("wait_acks", "finish_witness", "check_healthy_again"):
        monkeypatch.setattr(scenarios, name, nothing)
    monkeypatch.setattr(scenarios, "start_witness", start)
    monkeypatch.setattr(scenarios, "POLL_S", 0.01)


def _quiet(_: str) -> None:
    return None


# --- each fault kind, interrupted at its worst moment ----------------------------------------


def test_fence_failure_interrupted_right_after_the_bmc_block_unblocks_it(
    spec: ClusterSpec, no_witness: None
) -> None:
    """The BMC is blocked before the victim is reached: Ctrl-C there left fencing disabled."""
    faults = Recorder(interrupt="crash")
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(scenarios.fence_failure(Stub(spec), faults, 60, _quiet))  # type: ignore[arg-type]
    assert faults.calls == ["bmc_down node02", "crash node02", "bmc_up node02"]


def test_fence_failure_on_real_nodes_removes_the_bmc_table_when_interrupted(
    spec: ClusterSpec, no_witness: None
) -> None:
    def answer(node: FakeNode, argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str]:
        if argv[:2] == ("sh", "-c") and "sysrq" in argv[2]:
            raise KeyboardInterrupt  # the victim's power-off, as Ctrl-C arrives
        return 0, ""

    stub = Stub(spec, FakeNodes(answer=answer))
    faults = NodeFaults(spec, stub)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(scenarios.fence_failure(stub, faults, 60, _quiet))
    node01 = [s.stdin for s in stub.nodes.sent if s.node == "node01" and s.argv == NFT]
    assert "udp dport 6231 drop" in node01[0]  # node02's BMC blocked on its fencer...
    assert node01[1:] == [deleted(BMC_TABLE)]  # ...and unblocked


def test_a_stopped_lab_bmc_is_started_again_when_interrupted(
    spec: ClusterSpec, no_witness: None, tmp_path: pathlib.Path
) -> None:
    lab = LabFaults(tmp_path)
    ran: list[str] = []

    def lab_command(*args: str) -> str:
        ran.append(" ".join(args))
        if args[0] == "kill":
            raise KeyboardInterrupt
        return ""

    lab._lab = lab_command  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(scenarios.fence_failure(Stub(spec), lab, 60, _quiet))
    assert ran == ["bmc-stop node02", "kill node02 --json", "bmc-start node02"]


def test_a_partition_is_healed_when_the_drill_is_cancelled(
    spec: ClusterSpec, no_witness: None
) -> None:
    """Ctrl-C under asyncio.run cancels the drill while it waits for the recovery."""
    stub = Stub(spec)
    faults = Recorder(stub)

    async def run() -> None:
        drill = asyncio.create_task(scenarios.heartbeat_partition(stub, faults, 60, _quiet))  # type: ignore[arg-type]
        while "partition" not in faults.calls:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        drill.cancel()
        with pytest.raises(asyncio.CancelledError):
            await drill

    asyncio.run(run())
    assert faults.calls == ["partition", "heal"]


@pytest.mark.parametrize(
    ("scenario", "cut"),
    [(scenarios.heartbeat_link_loss, "cut_heartbeat"),
     (scenarios.bond_member_loss, "cut_bond_member")],
)  # fmt: skip
def test_a_cut_interrupted_as_it_lands_is_healed(
    spec: ClusterSpec, no_witness: None, scenario: Any, cut: str
) -> None:
    faults = Recorder(interrupt=cut)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(scenario(Stub(spec), faults, 60, _quiet))
    assert faults.calls == [cut, "heal"]


def test_a_slowed_resync_gets_its_configured_rate_back_when_interrupted(
    spec: ClusterSpec, no_witness: None
) -> None:
    def answer(node: FakeNode, argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str]:
        if argv[:2] == ("drbdadm", "invalidate"):
            raise KeyboardInterrupt  # right after the resync rate was lowered
        return 0, ""

    stub = Stub(spec, FakeNodes(answer=answer))
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(scenarios.node_crash_during_resync(stub, Recorder(), 60, _quiet))  # type: ignore[arg-type]
    assert stub.nodes["node01"].argvs == [
        ("drbdadm", "disk-options", "--c-plan-ahead=0", "--resync-rate=2M", "vm-b"),
        ("drbdadm", "invalidate", "vm-b"),
        ("drbdadm", "adjust", "vm-b"),
    ]


# --- the run heals after each scenario, however it ended ------------------------------------


@pytest.mark.parametrize("ending", ["passed", "ctrl-c"])
def test_the_run_clears_every_fault_after_each_scenario(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    faults = Recorder()
    said: list[str] = []

    async def drill(cluster: Cluster, f: Recorder, bound: float, say: object) -> DrillResult:
        await f.partition()
        if ending == "ctrl-c":
            raise KeyboardInterrupt
        return DrillResult("heartbeat-partition")

    async def settled(self: Cluster, timeout: float, say: object) -> float:
        return 0.0

    monkeypatch.setattr(drill_run, "faults_for", lambda *_, **__: faults)
    monkeypatch.setattr(drill_run, "DRILLS", {"heartbeat-partition": drill})
    monkeypatch.setattr(Cluster, "wait_settled", settled)
    call = drill_run.run_drills(
        spec, LAB, ["heartbeat-partition"], lab_dir=pathlib.Path("/nonexistent"), bound=60,
        say=said.append, inject="nodes", yes_really=True, witness_vm="vm-b",
    )  # fmt: skip
    if ending == "ctrl-c":
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(call)
    else:
        asyncio.run(call)
    assert faults.calls == ["partition", "clear"]
    assert "healed: lab: link hb healed" in said


# --- what a clear finds and undoes ------------------------------------------------------------


def test_lab_clear_heals_links_and_starts_both_bmcs(tmp_path: pathlib.Path) -> None:
    lab = LabFaults(tmp_path)
    ran: list[str] = []
    status = {
        "links": {"hb": "cut", "bond-a": "up", "bond-b": "up"},
        "nodes": {"node01": {"bmc": "running", "frozen": True}, "node02": {"bmc": "stopped"}},
    }

    def lab_command(*args: str) -> str:
        ran.append(" ".join(args))
        return json.dumps(status) if args[0] == "status" else ""

    lab._lab = lab_command  # type: ignore[method-assign]
    healed = asyncio.run(lab.clear())
    assert ran == ["status --json", "heal", "bmc-start node01", "thaw node01", "bmc-start node02"]
    assert healed.undone == [
        "lab: link hb healed", "lab: node01 thawed", "lab: node02's BMC started"
    ]


def _traces(node: FakeNode, argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str]:
    """node01 as an interrupted drill leaves it; node02 clean but for a resource whose adjust
    would do more than options (Pacemaker's to handle)."""
    dirty = node.name == "node01"
    answers: dict[tuple[str, ...], tuple[int, str]] = {
        ("nft", "list", "tables"): (0, "table inet filter\n" + (
            f"table inet {CUT_TABLE}\ntable inet {BMC_TABLE}\n" if dirty else "")),
        ("ip", "-o", "link", "show", "dev", "eth1"): (
            0, f"3: eth1: <BROADCAST,MULTICAST,SLAVE{'' if dirty else ',UP,LOWER_UP'}> mtu 1500"),
        ("pgrep", "-f", "HAKVMWI[T]"): (0, "4242\n") if dirty else (1, ""),
        ("drbdadm", "-d", "adjust", "vm-a"): (
            0, "drbdsetup-84 disk-options 0 --set-defaults --c-plan-ahead=20\n" if dirty else ""),
        ("drbdadm", "-d", "adjust", "vm-b"): (
            0, "" if dirty else "drbdsetup-84 connect vm-b ipv4:10.88.0.2:7789 ...\n"),
    }  # fmt: skip
    return answers.get(argv, (0, ""))


def _clean(node: FakeNode, argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str]:
    if argv == ("ip", "-o", "link", "show", "dev", "eth1"):
        return 0, "3: eth1: <BROADCAST,MULTICAST,SLAVE,UP,LOWER_UP> mtu 1500"
    return (1, "") if argv[0] == "pgrep" else (0, "")


READS = [("nft", "list", "tables"), ("pgrep",), ("ip", "-o"), ("drbdadm", "-d")]


def _changes(nodes: FakeNodes) -> list[tuple[str, tuple[str, ...], str]]:
    """What was sent to change a node (every command but the ones that only look)."""
    sent = [(s.node, tuple(s.argv), s.stdin) for s in nodes.sent]
    return [(n, a, i) for n, a, i in sent if not any(a[: len(r)] == r for r in READS)]


HealCli = Callable[[Answer], tuple[FakeNodes, int, str]]


@pytest.fixture
def heal_cli(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> HealCli:
    """`hakvm drill --heal` (not the lab) against fake nodes answering with `answer`."""
    from hakvm.cli import main

    def heal(answer: Answer) -> tuple[FakeNodes, int, str]:
        nodes = FakeNodes(answer=answer)

        async def fake_connect_all(found: object, spec_dir: object) -> list[FakeNode]:
            return [nodes["node01"], nodes["node02"]]

        monkeypatch.setattr("hakvm.remote.session.connect_all", fake_connect_all)
        monkeypatch.setattr("hakvm.cli.drill.node_locks", lambda *_, **__: nullcontext())
        capsys.readouterr()
        code = main(["drill", str(LAB), "--heal", "--lab-dir", str(tmp_path)])
        return nodes, code, capsys.readouterr().out

    return heal


def test_drill_heal_removes_every_trace_it_finds(heal_cli: HealCli) -> None:
    nodes, code, out = heal_cli(_traces)
    assert code == 0
    assert out.splitlines() == [
        f"node01: removed nftables table inet {CUT_TABLE}",
        f"node01: removed nftables table inet {BMC_TABLE}",
        "node01: bond member eth1 set up again",
        "node01: stopped witness process(es) left behind: pid 4242",
        "node01: DRBD vm-a: configured options restored (disk-options)",
        "node02: DRBD vm-b: left alone (an adjust would also run connect)",
    ]
    assert _changes(nodes) == [
        ("node01", ("nft", "-f", "-"), deleted(CUT_TABLE)),
        ("node01", ("nft", "-f", "-"), deleted(BMC_TABLE)),
        ("node01", ("ip", "link", "set", "dev", "eth1", "up"), ""),
        ("node01", ("kill", "--", "4242"), ""),
        ("node01", ("drbdadm", "adjust", "vm-a"), ""),
    ]


def test_drill_heal_on_a_clean_cluster_changes_nothing(heal_cli: HealCli) -> None:
    nodes, code, out = heal_cli(_clean)
    assert (code, out) == (0, "no trace of a drill on the nodes\n")
    assert _changes(nodes) == []
    assert len(nodes.sent) > 0  # it did look


def test_drill_heal_takes_no_scenario(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hakvm.cli import main

    assert main(["drill", str(LAB), "--heal", "--all", "--lab-dir", str(tmp_path)]) == 2
    assert "--heal runs no drill" in capsys.readouterr().err


def test_the_dry_run_of_adjust_is_read_as_subcommands() -> None:
    text = (
        "drbdsetup-84 disk-options 0 --set-defaults --resync-rate=100M\n"
        "/lib/drbd/drbdsetup-84 net-options vm-a --set-defaults --shared-secret=x\n"
        "drbdmeta 0 v08 /dev/hakvm/vm-a internal apply-al\n\n"
    )
    assert parse_adjust_dry_run(text) == ["disk-options", "net-options", "other"]
    assert parse_adjust_dry_run("") == []
