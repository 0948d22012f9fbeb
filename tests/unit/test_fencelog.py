"""The fencer's operations from pacemaker.log: the lines recorded on the lab's survivors during
the recovery benchmark of 2026-12-03 (tests/unit/data/fencelog), fetched with `GREP`."""

from __future__ import annotations

import pathlib
import re
import subprocess

import pytest

from hakvm.remote.fencelog import GREP, fence_operations, last_fencing_of

DATA = pathlib.Path(__file__).parent / "data" / "fencelog"


def test_a_delayed_fencing_carries_its_delay_and_its_whole_time() -> None:
    ops = fence_operations((DATA / "node02-pacemaker.log").read_text())
    assert [(op.target, op.delay_s, op.executioner, op.result) for op in ops] == [
        ("node01", 0.0, "node02", "OK (complete)"),
        ("node01", 45.0, "node02", "OK (complete)"),
    ]
    assert ops[0].took_s == pytest.approx(61.896)  # 08:49:10.632 -> 08:50:12.528
    assert ops[1].took_s == pytest.approx(52.664)  # 45 s of it the delay
    assert all(op.ok for op in ops)


def test_the_last_fencing_of_a_target() -> None:
    text = (DATA / "node01-pacemaker.log").read_text()
    last = last_fencing_of(text, "node02")
    assert last is not None and last.took_s == pytest.approx(29.184)
    assert last_fencing_of(text, "node01") is None


def test_grep_selects_exactly_the_three_lines_an_operation_logs() -> None:
    pattern = re.compile(GREP[2])
    lines = (DATA / "node02-pacemaker.log").read_text().splitlines()
    assert all(pattern.search(line) for line in lines)
    # The agent's own exit line and an unrelated fencer line are not selected.
    assert not pattern.search(
        "Dec 03 09:08:27.576 node02 pacemaker-fenced    [783] (log_async_result) \tnotice: "
        "Operation 'reboot' [2941] targeting node01 using node01_fence returned 0 | call 4"
    )
    assert not pattern.search(
        "Dec 03 08:49:11.012 node02 pacemaker-fenced    [1687] (can_fence_host_with_device) "
        "\tinfo: node01_fence is eligible to fence (reboot) node01: static-list"
    )


def test_grep_reads_past_the_nul_bytes_a_power_loss_leaves(tmp_path: pathlib.Path) -> None:
    lines = (DATA / "node02-pacemaker.log").read_bytes().splitlines(keepends=True)
    log = tmp_path / "pacemaker.log"
    log.write_bytes(b"".join([*lines[:2], b"\0" * 4096, *lines[2:]]))  # crashed, then back
    found = subprocess.run([*GREP[:-1], str(log)], capture_output=True, check=True).stdout
    assert [op.delay_s for op in fence_operations(found.decode())] == [0.0, 45.0]


def test_midnight_an_unanswered_request_and_a_failure() -> None:
    # Made-up times around the recorded lines' shape: a request before midnight answered
    # after it, a failed result, and a request the log holds no result for (yet).
    text = "\n".join([
        "Dec 03 23:59:50.000 n2 pacemaker-fenced [1] (handle_fence_request) \tnotice: Client "
        "pacemaker-controld.1 wants to fence (off) node01 using any device",
        "Dec 04 00:00:20.500 n2 pacemaker-fenced [1] (finalize_op) \terror: Operation 'off' "
        "targeting node01 by node02 for pacemaker-controld.1@node02: Timer expired | id=1",
        "garbage that is no log line",
        "Dec 04 00:01:00.000 n2 pacemaker-fenced [1] (handle_fence_request) \tnotice: Client "
        "pacemaker-controld.1 wants to fence (reboot) node01 using any device",
    ])  # fmt: skip
    failed, pending = fence_operations(text)
    assert failed.took_s == pytest.approx(30.5) and not failed.ok
    assert failed.result == "Timer expired"
    assert pending.ended_at is None and pending.took_s is None and not pending.ok
    assert last_fencing_of(text, "node01") == pending


def test_a_power_on_through_the_fence_device_is_not_the_last_fencing() -> None:
    """node02's fencer on 2026-12-04 (bench fence-action): node01 fenced with reboot, with off
    (the drill then powered it on: `stonith_admin --unfence`, an "on"), twice each. The last
    fencing is the off of 12:34:55.908, which took 23.3 s, not the 6.1 s "on" after it."""
    text = (DATA / "node02-off-2026-12-04.log").read_text()
    assert [op.action for op in fence_operations(text)] == ["reboot", "off", "on"] * 2
    last = last_fencing_of(text, "node01")
    assert last is not None and last.action == "off"
    assert last.took_s == pytest.approx(23.348)  # 12:34:55.908 -> 12:35:19.256
