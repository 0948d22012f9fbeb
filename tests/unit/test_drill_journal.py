"""A failover's components from the survivor's events (drill/journal.py): the events as the
alert agent writes them (tests/unit/serve_states.py), the fault placed through a clock offset."""

from __future__ import annotations

import asyncio
import time

from hakvm.drill.journal import components
from hakvm.remote.events import ClockOffset, Recorded, parse_events, recorded
from tests.unit.fakes import FakeNode
from tests.unit.serve_states import T0, crash_events, event


def test_components_on_the_survivors_clock() -> None:
    # node01's clock runs 100 s ahead of this machine's; the fault was at T0 - 10 here.
    record = Recorded(parse_events("\n".join(crash_events())), ClockOffset(100.0, 0.05))
    found = components(
        record, fault_unix=T0 - 110, victim="node02", survivor="node01", vms=["vm-b"]
    )
    # On node01's clock the fault was at T0 - 10: lost at T0 + 25, fenced T0 + 45, vm-b T0 + 80.
    assert (found.detected_s, found.fenced_s, found.started_s) == (35.0, 55.0, {"vm-b": 90.0})
    assert found.as_dict()["clock"] == "node01's (Pacemaker alert timestamps)"
    # A fault 100 s later (T0 + 90 on node01's clock): the loss, the fencing and vm-b's
    # start all came before it, and none is taken for its recovery.
    later = components(record, fault_unix=T0 - 10, victim="node02", survivor="node01",
                       vms=["vm-b", "vm-a"])  # fmt: skip
    assert (later.detected_s, later.fenced_s, later.started_s) == (None, None, {})


def test_powering_a_node_on_is_not_its_fencing() -> None:
    """stonith_admin --unfence (fencing.action off) records a fencing event with task "on"."""
    lines = [line for line in crash_events() if '"fencing"' not in line]
    lines.append(event(T0 + 45, "fencing", target="node02", task="on", rc=0, desc="OK"))
    record = Recorded(parse_events("\n".join(lines)), ClockOffset(0.0, 0.05))
    found = components(record, fault_unix=T0 - 10, victim="node02", survivor="node01",
                       vms=["vm-b"])  # fmt: skip
    assert found.fenced_s is None and found.detected_s == 35.0


def test_no_event_after_the_fault_is_none_not_zero() -> None:
    record = Recorded(parse_events("\n".join(crash_events())), ClockOffset(0.0, 0.05))
    found = components(record, fault_unix=T0 + 500, victim="node02", survivor="node01",
                       vms=["vm-b"])  # fmt: skip
    assert (found.detected_s, found.fenced_s, found.started_s) == (None, None, {})


def test_recorded_reads_the_clock_between_two_local_readings() -> None:
    node = FakeNode("node01").on("date", out="1764150000.250000000\n")
    node.on("sh", out="\n".join(crash_events()) + "\n")
    before = time.time()
    found = asyncio.run(recorded(node))
    after = time.time()
    assert len(found.events) == len(crash_events())
    assert 0 <= found.clock.uncertainty_s <= (after - before) / 2
    # The node's clock minus this machine's, read between the two local readings.
    assert 1764150000.25 - after <= found.clock.offset_s <= 1764150000.25 - before
    assert node.argvs[0] == ("date", "+%s.%N")


def test_the_journal_is_read_again_until_every_vms_start_is_written(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The alert agent writes a start seconds after it (lab, 2026-12-02): the first read
    lacks it, the drill reads again instead of reporting no start."""
    import pathlib

    from hakvm.drill import harness
    from hakvm.spec.validate import validate_file

    spec = validate_file(pathlib.Path(__file__).resolve().parents[2] / "examples" / "lab.yaml")
    assert spec.spec is not None
    node = FakeNode("node01").on("date", out=f"{T0:.9f}\n")
    node.on("sh", out="\n".join(crash_events()[:-2]) + "\n")  # vm-b's start not yet there
    node.on("sh", out="\n".join(crash_events()) + "\n")

    class Survivor(harness.Cluster):
        async def conn(self, name: str):  # type: ignore[no-untyped-def,override]
            return node

    async def no_sleep(_: float) -> None:
        return None

    monkeypatch.setattr(harness.asyncio, "sleep", no_sleep)
    cluster = Survivor(spec.spec, pathlib.Path("lab.yaml"))
    found = asyncio.run(cluster.journal("node01", fault_unix=T0 - 10, victim="node02",
                                        vms=["vm-b"]))  # fmt: skip
    assert found is not None
    assert sum(a[0] == "sh" for a in node.argvs) == 2
    assert set(found["started_s"]) == {"vm-b"}
