"""`hakvm replace-node` refusals on the deployed lab (seconds): a node that was not reinstalled
is never replaced, and nothing is changed on either node. The replacement itself is the
`node-replacement` drill (tests/e2e/test_drills.py, extended)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import LabHandle, hakvm

pytestmark = [pytest.mark.e2e, pytest.mark.deploy]


@pytest.mark.readonly
@pytest.mark.extended  # three replace-node runs, 121 s: make test-e2e (docs/testing.md)
def test_replace_node_refuses_a_node_that_was_not_reinstalled(
    deployed: LabHandle, spec_file: Path
) -> None:
    before = deployed.check("node02", ["drbdadm", "cstate", "all"])
    for argv in (["replace-node", str(spec_file), "node02"],
                 ["replace-node", str(spec_file), "node02", "--yes"]):  # fmt: skip
        result = hakvm(*argv, timeout=600)
        assert result.returncode == 3, result.stdout + result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        # A healthy node02 looks like a replacement that already joined (its DRBD copies are
        # connected and UpToDate), so the refusal is that vm-b runs on it, not on the survivor
        # (CI run of 2026-12-01; docs/known-limits.md).
        assert len(lines) == 1 and lines[0].startswith("hakvm: replace-node: "), lines
        assert "every VM must run on the survivor" in lines[0], lines
    assert deployed.check("node02", ["drbdadm", "cstate", "all"]) == before
    # A fingerprint that is not the node's: refused before anything is read.
    wrong = hakvm("replace-node", str(spec_file), "node02", "--new-host-key", "SHA256:nope")
    assert wrong.returncode == 3 and "is it the machine you reinstalled?" in wrong.stderr
