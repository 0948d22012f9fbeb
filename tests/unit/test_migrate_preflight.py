"""migrate preflight: Pacemaker's view of the target's disk (the resync flag and the drbd
agent's promotion score, which the CIB's <vm>_needs_good_data rule reads)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hakvm.ops.migrate import MoveError, _wait_good_data
from tests.unit.fakes import FakeNode, Reply


def AttrConn(snapshots: list[dict[str, str]]) -> FakeNode:
    """A node answering `crm_attribute --query` from successive attribute snapshots (two
    queries per snapshot: the resync flag, then the promotion score)."""

    def answer(node: FakeNode, argv: tuple[str, ...], stdin: bytes | None) -> Reply:
        assert argv[0] == "crm_attribute" and "--query" in argv
        attrs = snapshots[min((len(node.sent) - 1) // 2, len(snapshots) - 1)]
        name = argv[argv.index("--name") + 1]
        if name in attrs:
            return 0, attrs[name] + "\n"
        return 105, "", "Error performing operation: No such device or address"

    return FakeNode("node01", answer)


def _wait(conn: FakeNode, timeout: float) -> None:
    asyncio.run(_wait_good_data(conn, "node01", "vm-b", timeout, interval=0))


def test_whole_copy_passes_at_once() -> None:
    conn = AttrConn([{"master-vm-b_drbd": "10000"}])
    _wait(conn, 0)
    assert len(conn.sent) == 2


def test_score_trailing_a_finished_resync_is_waited_for() -> None:
    low, good = {"master-vm-b_drbd": "10"}, {"master-vm-b_drbd": "10000"}
    conn = AttrConn([low, low, good])
    _wait(conn, 30)
    assert len(conn.sent) == 6


def test_resync_flag_refuses() -> None:
    conn = AttrConn([{"master-vm-b_drbd": "10000", "hakvm-resyncing-vm-b": "1"}])
    with pytest.raises(MoveError, match="node01 is still resyncing vm-b"):
        _wait(conn, 0)


@pytest.mark.parametrize("attrs", [{}, {"master-vm-b_drbd": "10"}, {"master-vm-b_drbd": "x"}])
def test_low_or_missing_score_refuses(attrs: dict[str, str]) -> None:
    with pytest.raises(MoveError, match=r"would not place vm-b on node01.*below 1000"):
        _wait(AttrConn([attrs]), 0)


def test_the_score_wait_covers_one_drbd_monitor_interval() -> None:
    from hakvm.ops.migrate import good_data_wait
    from hakvm.spec.validate import validate_file

    report = validate_file(Path(__file__).resolve().parents[2] / "examples" / "lab.yaml")
    assert report.spec is not None
    # The lab monitors DRBD every 60 s (Unpromoted 61 s): 45 s refused a move in the bench.
    assert good_data_wait(report.spec) > report.spec.cluster.timing.drbd_monitor_interval_s + 1


def test_libvirts_downtime_and_downtime_net_from_the_job_completed_event() -> None:
    """`virsh event --event job-completed` prints the job's typed parameters one per line;
    downtime_net is there only when libvirt could take the hosts' clock difference out."""
    from hakvm.ops.migrate import downtimes

    event = (
        "event 'job-completed' for domain 'vm-a':\n\toperation: 2\n\ttime_elapsed: 5025\n"
        "\ttime_elapsed_net: 5001\n\tdowntime: 160\n\tdowntime_net: 136\n\tsetup_time: 9\n"
        "events received: 1\n"
    )
    assert downtimes(event) == (160, 136)
    assert downtimes(event.replace("\tdowntime_net: 136\n", "")) == (160, None)
    assert downtimes("") == (None, None)
