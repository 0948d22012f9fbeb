"""`hakvm init` on the bare lab: the spec it writes from the machines validates and plans
(seconds), and applied it gives a healthy cluster (extended: a full deploy).

The first test also checks that init leaves the machines as it found them: the NICs its
link probe took up are down again, nothing was written on the nodes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import REPO, LabHandle, hakvm, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.deploy]


def _link_states(lab: LabHandle, node: str) -> dict[str, list[str]]:
    links = json.loads(lab.check(node, ["ip", "-j", "link", "show"]))
    return {link["ifname"]: sorted(link["flags"]) for link in links}


def _init(lab: LabHandle, out: Path) -> None:
    result = hakvm("init", "--lab", "--lab-dir", str(lab.state_dir), "-o", str(out), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.is_file()


@pytest.mark.extended  # CI's time: make test-e2e (docs/testing.md)
def test_init_lab_spec_validates_and_plans(lab: LabHandle, tmp_path: Path) -> None:
    lab.restore("bare")
    before = {node: _link_states(lab, node) for node in ("node01", "node02")}
    spec = tmp_path / "cluster.yaml"
    _init(lab, spec)
    assert {node: _link_states(lab, node) for node in ("node01", "node02")} == before
    data = yaml.safe_load(spec.read_text())
    for node in data["nodes"]:
        assert node["interfaces"]["bonds"]["bond0"]["members"] == ["eth1", "eth2"]
        assert list(node["interfaces"]["ethernets"]) == ["eth3"]
        assert node["storage"]["create_from"]["device"] == "/dev/vdb"
    assert hakvm("validate", str(spec)).returncode == 0
    planned = hakvm("plan", "--json", str(spec), timeout=900)
    assert planned.returncode == 0, planned.stderr
    phases = {p["phase"] for p in json.loads(planned.stdout)["phases"] if p["steps"]}
    assert {"packages", "network", "storage", "corosync", "pacemaker", "cib"} <= phases
    # A second init of the same machines proposes the same spec (nothing it did stayed).
    again = tmp_path / "again.yaml"
    _init(lab, again)
    assert yaml.safe_load(again.read_text()) == data


@pytest.mark.readonly
def test_init_refuses_a_host_key_it_was_not_told_to_trust(lab: LabHandle, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = ["init", "-i", str(lab.key), "--known-hosts", str(empty), "-o", str(tmp_path / "x.yaml")]
    for node in ("node01", "node02"):
        argv += ["--node", f"root@127.0.0.1:{lab.ssh_ports[node]}"]
    result = hakvm(*argv, timeout=300)
    assert result.returncode == 3, result.stderr
    assert "presents host key SHA256:" in result.stderr
    assert "--accept-new-host-keys" in result.stderr
    assert empty.read_text() == "" and not (tmp_path / "x.yaml").exists()


@pytest.mark.extended
def test_init_then_apply_gives_a_healthy_cluster(lab: LabHandle, tmp_path: Path) -> None:
    """Day one on the lab: init, validate, apply, status healthy (a second full deploy in the
    session: extended)."""
    lab.restore("bare")
    spec = tmp_path / "cluster.yaml"
    _init(lab, spec)
    (REPO / ".hakvm" / "e2e-init-spec.yaml").write_text(spec.read_text())  # for the record
    assert hakvm("validate", str(spec)).returncode == 0
    applied = hakvm("apply", str(spec), timeout=3600)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    wait_for("a healthy cluster", lambda: hakvm("status", str(spec)).returncode == 0, 900)
