"""`hakvm lab snapshot`: both nodes paused together, saved, resumed; restore in the right order.
`hakvm lab reimage`, which forgets them (they hold the reimaged node's old disks)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from hakvm.lab import lifecycle, nodes, snapshots
from hakvm.lab.state import NODES, Lab, LabConfig, LabStateError


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


# --- lab reimage: fresh disks and a new host key for one node; the snapshots forgotten ----------

# A public key: nothing secret (its private half was never kept).
NEW_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA5Pl0XmCTNMsNJT2ZmCNy3QdNoBsotcPOhEMLV1pCkv "
    "root@node02"
)




def _reimage_lab(lab: Lab) -> Lab:
    for node in NODES:
        nodes.node_paths(lab.run, node).dir.mkdir(parents=True)
        nodes.node_paths(lab.run, node).argv_file.write_text("[]\n")
    lab.known_hosts.write_text(
        "[127.0.0.1]:2201 ssh-ed25519 AAAAnode01\n[127.0.0.1]:2202 ssh-ed25519 AAAAold02\n"
    )
    snapshots._save_index(lab, {"bare": {}, "deployed": {}})
    return lab


def _wire_reimage(monkeypatch: pytest.MonkeyPatch, on: dict[str, bool]) -> list[str]:
    log: list[str] = []
    monkeypatch.setattr(lifecycle.preflight, "require_root", lambda: None)
    monkeypatch.setattr(lifecycle.procs, "ensure_lab_user", lambda: None)
    monkeypatch.setattr(lifecycle.nodes, "qemu_pid", lambda run, node: 1 if on[node] else None)
    monkeypatch.setattr(lifecycle.image, "cached_image", lambda key=None: type(
        "Img", (), {"root": pathlib.Path("/img/root.raw")})())  # fmt: skip
    monkeypatch.setattr(lifecycle, "_client_key", lambda lab: "ssh-ed25519 AAAAclient")

    def stop_bmc(lab: Lab, node: str) -> bool:
        log.append(f"bmc-stop {node}")
        return True

    def prepare(run: Any, config: Any, node: str, **kwargs: Any) -> str:
        log.append(f"prepare {node} from {kwargs['image_root']}")
        return NEW_KEY

    monkeypatch.setattr(lifecycle.bmcs, "stop_bmc", stop_bmc)
    monkeypatch.setattr(lifecycle.bmcs, "start_bmc",
                        lambda lab, node, user: log.append(f"bmc-start {node}") or 1)  # fmt: skip
    monkeypatch.setattr(lifecycle.nodes, "prepare_node", prepare)
    return log


def test_reimage_gives_fresh_disks_and_a_new_host_key_to_that_node_only(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _wire_reimage(monkeypatch, {"node01": True, "node02": False})
    _reimage_lab(lab)
    done = lifecycle.reimage(lab, "node02")
    assert log == ["bmc-stop node02", "prepare node02 from /img/root.raw", "bmc-start node02"]
    assert lab.known_hosts.read_text() == (
        "[127.0.0.1]:2201 ssh-ed25519 AAAAnode01\n"
        f"[127.0.0.1]:2202 {' '.join(NEW_KEY.split()[:2])}\n"
    )
    assert done.fingerprint == nodes.fingerprint(NEW_KEY) and done.fingerprint.startswith("SHA256:")
    assert done.dropped == ["bare", "deployed"] and snapshots.listing(lab) == {}


def test_reimage_refuses_a_node_that_is_on(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _wire_reimage(monkeypatch, {"node01": True, "node02": True})
    _reimage_lab(lab)
    with pytest.raises(LabStateError, match="node02 is on: power it off first"):
        lifecycle.reimage(lab, "node02")
    assert log == [] and "AAAAold02" in lab.known_hosts.read_text()
    assert set(snapshots.listing(lab)) == {"bare", "deployed"}
