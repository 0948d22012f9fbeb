"""`hakvm drill` leaves each scenario's final result on both nodes, where their agent exports it
(hakvm_drill_recovery_seconds, hakvm_drill_passed): the file is what the collector reads, and
a node that does not answer neither fails the drill nor stops the other node's copy."""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import pytest

from hakvm.agent import collector, hakvm_metrics, layout
from hakvm.agent.exposition import render
from hakvm.drill import run as drill_run
from hakvm.drill.faults import Healed
from hakvm.drill.harness import Cluster, DrillResult
from hakvm.remote.connection import RemoteError
from hakvm.spec.models import ClusterSpec
from tests.unit.agent_samples import lab_spec, samples
from tests.unit.fakes import FakeNode

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return lab_spec()


class FakeCluster(Cluster):
    def __init__(self, spec: ClusterSpec, down: tuple[str, ...] = ()) -> None:
        super().__init__(spec, REPO / "examples" / "lab.yaml")
        self.nodes = {n: FakeNode(n) for n in ("node01", "node02")}
        self.down = down
        self.dropped: list[str] = []

    async def conn(self, name: str) -> Any:
        if name in self.down:
            raise RemoteError(f"{name}: connection refused")
        return self.nodes[name]

    async def drop(self, name: str) -> None:
        self.dropped.append(name)


def _result() -> DrillResult:
    result = DrillResult("node-crash", recovery_s=93.4)
    result.check("recovery", True, "vm-b responsive on node01 after 93.4s")
    result.check("no split-brain", True, "")
    return result


def test_the_result_lands_on_both_nodes_as_the_collector_reads_it(
    spec: ClusterSpec, tmp_path: pathlib.Path
) -> None:
    cluster = FakeCluster(spec)
    assert asyncio.run(cluster.record(_result())) == []
    path = f"{layout.DRILLS_DIR}/node-crash.json"
    for node in cluster.nodes.values():
        assert node.modes[path] == 0o644
        (tmp_path / "node-crash.json").write_bytes(node.files[path])
        data = json.loads(node.files[path])
        assert (data["scenario"], data["passed"], data["recovery_s"]) == ("node-crash", True,
                                                                           93.4)  # fmt: skip
        text = render(hakvm_metrics.drills(collector.read_drills(str(tmp_path))))
        found = samples(text)
        assert found[("hakvm_drill_recovery_seconds",
                      frozenset({("scenario", "node-crash")}))] == 93.4  # fmt: skip
        assert found[("hakvm_drill_passed", frozenset({("scenario", "node-crash")}))] == 1


def test_a_node_that_does_not_answer_is_skipped(spec: ClusterSpec) -> None:
    cluster = FakeCluster(spec, down=("node02",))
    assert asyncio.run(cluster.record(_result())) == ["node02"]
    assert cluster.dropped == ["node02"]
    assert f"{layout.DRILLS_DIR}/node-crash.json" in cluster.nodes["node01"].files


def test_run_drills_records_each_final_result(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[FakeCluster] = []

    def cluster(*args: Any) -> FakeCluster:
        made.append(FakeCluster(spec, down=("node02",)))
        return made[-1]

    async def settled(self: Cluster, timeout: float, say: Any) -> float:
        return 0.0

    async def drill(c: Any, faults: Any, bound: float, say: Any) -> DrillResult:
        return _result()

    class Faults:
        kind = "lab"

        async def clear(self) -> Healed:  # the run's heal after each scenario: nothing left
            return Healed()

    monkeypatch.setattr(drill_run, "Cluster", cluster)
    monkeypatch.setattr(drill_run, "faults_for", lambda *a, **k: Faults())
    monkeypatch.setattr(FakeCluster, "wait_settled", settled)
    monkeypatch.setitem(drill_run.DRILLS, "node-crash", drill)
    said: list[str] = []
    results = asyncio.run(drill_run.run_drills(
        spec, REPO / "examples" / "lab.yaml", ["node-crash"], lab_dir=REPO, bound=600,
        say=said.append,
    ))  # fmt: skip
    assert [r.scenario for r in results] == ["node-crash"]
    assert f"{layout.DRILLS_DIR}/node-crash.json" in made[0].nodes["node01"].files
    assert "node02 did not take the drill's result (node-crash); its metrics miss it" in said
