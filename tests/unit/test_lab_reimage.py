"""`hakvm lab reimage NODE`: a powered-off node gets fresh disks and a new host key; the lab's
known_hosts changes for it only, its BMC is held stopped meanwhile, the snapshots (which
hold its old disks) are forgotten."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from hakvm.lab import lifecycle, nodes, snapshots
from hakvm.lab.state import NODES, Lab, LabConfig, LabStateError

# A public key: nothing secret (its private half was never kept).
NEW_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA5Pl0XmCTNMsNJT2ZmCNy3QdNoBsotcPOhEMLV1pCkv "
    "root@node02"
)


@pytest.fixture
def lab(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    monkeypatch.setenv("HAKVM_LAB_RUN_BASE", str(tmp_path / "run"))
    lab = Lab(tmp_path / "lab")
    lab.claim()
    lab.save(LabConfig())
    for node in NODES:
        nodes.node_paths(lab.run, node).dir.mkdir(parents=True)
        nodes.node_paths(lab.run, node).argv_file.write_text("[]\n")
    lab.known_hosts.write_text(
        "[127.0.0.1]:2201 ssh-ed25519 AAAAnode01\n[127.0.0.1]:2202 ssh-ed25519 AAAAold02\n"
    )
    snapshots._save_index(lab, {"bare": {}, "deployed": {}})
    return lab


def _wire(monkeypatch: pytest.MonkeyPatch, on: dict[str, bool]) -> list[str]:
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
    log = _wire(monkeypatch, {"node01": True, "node02": False})
    done = lifecycle.reimage(lab, "node02")
    assert log == ["bmc-stop node02", "prepare node02 from /img/root.raw", "bmc-start node02"]
    assert lab.known_hosts.read_text() == (
        "[127.0.0.1]:2201 ssh-ed25519 AAAAnode01\n"
        f"[127.0.0.1]:2202 {' '.join(NEW_KEY.split()[:2])}\n"
    )
    assert done.fingerprint == nodes.fingerprint(NEW_KEY) and done.fingerprint.startswith("SHA256:")
    assert done.dropped == ["bare", "deployed"] and snapshots.listing(lab) == {}


def test_reimage_refuses_a_node_that_is_on(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _wire(monkeypatch, {"node01": True, "node02": True})
    with pytest.raises(LabStateError, match="node02 is on: power it off first"):
        lifecycle.reimage(lab, "node02")
    assert log == [] and "AAAAold02" in lab.known_hosts.read_text()
    assert set(snapshots.listing(lab)) == {"bare", "deployed"}
