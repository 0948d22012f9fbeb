"""apply's package phase for real: a node missing a package gets it from the lab repository
(the image build's .deb cache served on host loopback; nodes have no route out)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, LabHandle, lab_spec

pytestmark = pytest.mark.e2e


@pytest.mark.extended  # CI's time: make test-e2e (docs/testing.md)
def test_package_phase_installs_missing_package_from_lab_repo(
    deployed: LabHandle, tmp_path: Path
) -> None:
    lab = deployed
    lab.check("node01", ["dpkg", "--remove", "bridge-utils"])
    listed = lab.run("node01", ["dpkg-query", "-W", "-f=${db:Status-Status}", "bridge-utils"])
    assert listed.stdout.strip() != "installed"

    env = dict(os.environ, HAKVM_STATE_DIR=str(REPO / ".hakvm" / "e2e-state"))
    result = subprocess.run(
        [sys.executable, "-m", "hakvm.cli", "apply", "--json", "--stop-after", "packages",
         str(lab_spec(lab, tmp_path))],
        capture_output=True, text=True, timeout=900, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    steps = [s for p in report["phases"] for s in p["steps"]]
    assert [s["node"] for s in steps] == ["node01"], steps
    assert "bridge-utils" in steps[0]["title"]
    status = lab.check("node01", ["dpkg-query", "-W", "-f=${db:Status-Status}", "bridge-utils"])
    assert status.strip() == "installed"
    # It came from the lab repository on host loopback (10.0.2.2), the only source there is.
    history = lab.check("node01", ["cat", "/etc/apt/sources.list"])
    assert "http://10.0.2.2:" in history
    assert "bridge-utils" in lab.check("node01", ["cat", "/var/log/apt/history.log"])
    # Nothing to do on a second run.
    again = subprocess.run(
        [sys.executable, "-m", "hakvm.cli", "apply", "--json", "--stop-after", "packages",
         str(lab_spec(lab, tmp_path))],
        capture_output=True, text=True, timeout=900, check=False, env=env,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changes"] == 0
