"""`hakvm lab snapshot`: both nodes paused together, saved, resumed; restore in the right order."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from hakvm.lab import snapshots
from hakvm.lab.state import Lab, LabConfig, LabStateError


class FakeQmp:
    def __init__(self, node: str, log: list[str], fail: str = "") -> None:
        self.node, self.log, self.fail = node, log, fail

    def command(self, name: str, /, **arguments: Any) -> object:
        what = arguments.get("command-line", name)
        self.log.append(f"{self.node}: {what}")
        if self.fail and str(what).startswith(self.fail):
            return "Error: no space left"
        return {} if name != "human-monitor-command" else ""


@pytest.fixture
def lab(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    monkeypatch.setenv("HAKVM_LAB_RUN_BASE", str(tmp_path / "run"))
    lab = Lab(tmp_path / "lab")
    lab.claim()
    lab.save(LabConfig())
    lab.run.dir.mkdir(parents=True)
    return lab


def _wire(monkeypatch: pytest.MonkeyPatch, on: dict[str, bool], fail: str = "") -> list[str]:
    log: list[str] = []
    monkeypatch.setattr(snapshots, "_qmp", lambda lab, node: FakeQmp(node, log, fail))
    monkeypatch.setattr(snapshots.nodes, "qemu_pid", lambda run, node: 1 if on[node] else None)

    def start(run: Any, node: str, user: Any = None, *, paused: bool = False) -> int:
        log.append(f"{node}: start paused={paused}")
        on[node] = True
        return 1

    monkeypatch.setattr(snapshots.nodes, "start_node", start)
    monkeypatch.setattr(
        snapshots.nodes, "set_link",
        lambda run, node, link, up: log.append(f"{node}: link {link} {'up' if up else 'down'}"),
    )  # fmt: skip
    monkeypatch.setattr(snapshots.procs, "ensure_lab_user", lambda: None)
    monkeypatch.setattr(snapshots.bmcs, "start_bmc", lambda lab, node, user: 1)
    monkeypatch.setattr(snapshots.repo, "start_repo", lambda lab, port, user: 1)
    monkeypatch.setattr(snapshots.ssh, "wait_for_ssh", lambda *a, **k: 0.0)
    monkeypatch.setattr(
        snapshots.subprocess, "run",
        lambda argv, **k: log.append("clock " + argv[-1].split()[0])
        or snapshots.subprocess.CompletedProcess(argv, 0, "", ""),
    )  # fmt: skip
    return log


def test_save_pauses_both_before_either_saves_and_always_resumes(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _wire(monkeypatch, {"node01": True, "node02": True})
    snapshots.save(lab, "deployed")
    assert log[:2] == ["node01: stop", "node02: stop"]
    assert sorted(log[2:4]) == ["node01: savevm deployed", "node02: savevm deployed"]
    assert log[4:] == ["node01: cont", "node02: cont"]
    assert "deployed" in snapshots.listing(lab)

    log = _wire(monkeypatch, {"node01": True, "node02": True}, fail="savevm")
    with pytest.raises(LabStateError, match="no space left"):
        snapshots.save(lab, "again")
    assert log[-2:] == ["node01: cont", "node02: cont"]  # never left paused
    assert "again" not in snapshots.listing(lab)


def test_save_needs_both_nodes_running(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    _wire(monkeypatch, {"node01": True, "node02": False})
    with pytest.raises(LabStateError, match="node02 is off"):
        snapshots.save(lab, "x")


def test_restore_loads_both_then_links_then_resumes_then_clocks(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    _wire(monkeypatch, {"node01": True, "node02": True})
    snapshots.save(lab, "bare")
    lab.save_cut_links({"hb"})  # cut after the save: the restore brings it back up
    log = _wire(monkeypatch, {"node01": True, "node02": False})  # node02 off (lab kill)
    snapshots.restore(lab, "bare")
    assert log[:2] == ["node01: stop", "node02: start paused=True"]
    assert sorted(log[2:4]) == ["node01: loadvm bare", "node02: loadvm bare"]
    links = log[4:10]
    assert all(" up" in line for line in links) and len(links) == 6
    assert log[10:12] == ["node01: cont", "node02: cont"]
    assert [line for line in log if line.startswith("clock")] == ["clock date", "clock date"]
    assert lab.cut_links() == set()


def test_restore_of_an_unknown_snapshot_names_the_known_ones(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    _wire(monkeypatch, {"node01": True, "node02": True})
    snapshots.save(lab, "bare")
    with pytest.raises(LabStateError, match=r"no lab snapshot 'nope' \(snapshots: bare\)"):
        snapshots.restore(lab, "nope")


@pytest.mark.parametrize("name", ["", "a b", "../x", "x;quit", "x\nquit", "-x", "a" * 41])
def test_names_that_could_reach_the_monitor_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="snapshot name"):
        snapshots.check_name(name)
