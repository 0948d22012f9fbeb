"""No two hakvm runs at once, on the deployed lab (issue 16 item 6): a second writer is
refused naming the first (`--wait 0`), `--wait` gets the lock once the first is done, and a
writer that is killed releases the nodes with its connection. Each writer is `apply --stop-after
packages` on the deployed cluster (no change, seconds on the lab)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import STATE_DIR, LabHandle, hakvm

pytestmark = [pytest.mark.e2e, pytest.mark.deploy]

LOCK = "/run/hakvm/lock"
HOLDER = "/run/hakvm/lock.holder"
WRITER = ("apply", "--stop-after", "packages")


def _start(spec_file: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hakvm.cli", *WRITER, str(spec_file), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, HAKVM_STATE_DIR=str(STATE_DIR)),
    )  # fmt: skip


def _holds_both(lab: LabHandle, run: subprocess.Popen[str], timeout: float = 120) -> bool:
    """True once `run` holds the lock of both nodes (node02 is taken last; its holder file
    names the run's pid); False if it ended first. Reads the holder file only: probing the
    lock with flock would itself take it for a moment."""
    deadline = time.monotonic() + timeout
    while run.poll() is None and time.monotonic() < deadline:
        holder = lab.run("node02", ["cat", HOLDER]).stdout
        if f"(pid {run.pid} on " in holder and run.poll() is None:
            return True
        time.sleep(0.2)
    return False


def _free(lab: LabHandle) -> bool:
    return all(lab.run(n, ["flock", "-n", LOCK, "true"]).returncode == 0 for n in lab.ssh_ports)


@pytest.mark.readonly
@pytest.mark.extended  # three applies on the lab, about 2 min: make test-e2e (docs/testing.md)
def test_a_second_writer_is_refused_naming_the_first_then_waits_for_it(
    deployed: LabHandle, spec_file: Path
) -> None:
    for _ in range(3):  # a first run that finished before it was seen holding: again
        first = _start(spec_file)
        if not _holds_both(deployed, first):
            first.communicate(timeout=600)
            continue
        second = hakvm(*WRITER, str(spec_file), "--wait", "0", timeout=300)
        waiter = _start(spec_file, "--wait", "600")
        _, first_err = first.communicate(timeout=600)
        if first.returncode == 0 and second.returncode != 3:
            waiter.communicate(timeout=600)
            continue  # the first was done before the second asked
        break
    else:
        pytest.fail("the first apply never held the lock long enough to be seen")
    assert first.returncode == 0, first_err
    assert second.returncode == 3, second.stderr
    (line,) = [x for x in second.stderr.splitlines() if "another hakvm run" in x]
    assert line.startswith("hakvm: node01: another hakvm run holds this node: hakvm apply ")
    assert f"(pid {first.pid} on " in line and "--wait SECONDS" in line
    _, waiter_err = waiter.communicate(timeout=600)
    assert waiter.returncode == 0, waiter_err  # it waited for the first, then ran
    assert _free(deployed)  # both runs ended: nobody holds the nodes


@pytest.mark.extended  # CI's time: make test-e2e (docs/testing.md)
def test_a_killed_writer_releases_the_nodes(deployed: LabHandle, spec_file: Path) -> None:
    run = _start(spec_file)
    try:
        assert _holds_both(deployed, run), run.communicate(timeout=600)
        run.kill()  # no clean-up at all: only its TCP connections close
        run.wait(30)
        deadline = time.monotonic() + 30
        while not _free(deployed):
            assert time.monotonic() < deadline, "a killed run still holds the node lock"
            time.sleep(0.5)
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate(timeout=60)
