"""Golden files: `hakvm render examples/seed.yaml` must produce exactly tests/render/golden/seed.

Regenerate after an intended change with `UPDATE_GOLDEN=1 make test-fast` and review the diff.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from pathlib import Path

import pytest

from hakvm.cli import main

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "render" / "golden"
# hakvm's agent, shipped as its own source files: compared with src/hakvm/agent instead of
# a golden copy (a copy per node and example would have to follow every change of it).
AGENT = "usr/local/lib/hakvm/hakvm_agent/"


def _agent_file(name: str) -> bool:
    return name.split("/", 1)[-1].startswith(AGENT)


def _tree(root: Path) -> dict[str, bytes]:
    tree = {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
    for name, content in list(tree.items()):
        if _agent_file(name):
            source = REPO / "src" / "hakvm" / "agent" / name.rsplit("/", 1)[1]
            assert content == source.read_bytes(), f"{name} is not {source}"
            del tree[name]
    if "manifest.json" in tree:
        manifest = json.loads(tree["manifest.json"])
        manifest["files"] = [f for f in manifest["files"] if not _agent_file(f["file"])]
        tree["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    return tree


@pytest.mark.parametrize("example", ["seed", "lab", "lab-qdevice"])
def test_render_matches_golden(example: str, tmp_path: Path) -> None:
    out = tmp_path / example
    assert main(["render", str(REPO / "examples" / f"{example}.yaml"), "-o", str(out)]) == 0
    golden = GOLDEN / example
    if os.environ.get("UPDATE_GOLDEN") == "1":
        shutil.rmtree(golden, ignore_errors=True)
        shutil.copytree(out, golden, ignore=lambda d, _: [AGENT.rsplit("/", 2)[1]]
                        if d.endswith("usr/local/lib/hakvm") else [])  # fmt: skip
        (golden / "manifest.json").write_text(_tree(golden)["manifest.json"].decode() + "\n")
    rendered, expected = _tree(out), _tree(golden)
    assert sorted(rendered) == sorted(expected), "rendered file set differs from golden"
    for name, content in rendered.items():
        assert content == expected[name], f"{name} differs from golden (UPDATE_GOLDEN=1?)"


def test_rerender_is_byte_identical(tmp_path: Path) -> None:
    spec = str(REPO / "examples" / "seed.yaml")
    assert main(["render", spec, "-o", str(tmp_path / "a")]) == 0
    assert main(["render", spec, "-o", str(tmp_path / "b")]) == 0
    cmp = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    before = _tree(tmp_path / "a")
    assert main(["render", spec, "-o", str(tmp_path / "a")]) == 0
    assert _tree(tmp_path / "a") == before


def test_no_secret_in_rendered_tree(tmp_path: Path) -> None:
    """Rendered trees hold the redaction marker, never a generated secret."""
    assert main(["render", str(REPO / "examples" / "lab.yaml"), "-o", str(tmp_path)]) == 0
    res = (tmp_path / "node01" / "etc" / "drbd.d" / "vm-a.res").read_text()
    assert 'shared-secret "REDACTED-generated-at-apply"' in res
    assert oct((tmp_path / "node01" / "etc" / "drbd.d" / "vm-a.res").stat().st_mode)[-3:] == "600"


def test_stale_files_removed(tmp_path: Path) -> None:
    spec = str(REPO / "examples" / "lab.yaml")
    assert main(["render", spec, "-o", str(tmp_path)]) == 0
    stale = tmp_path / "node01" / "etc" / "drbd.d" / "vm-a.res"
    assert stale.exists()
    text = (REPO / "examples" / "lab.yaml").read_text()
    one_vm = tmp_path / "one.yaml"
    one_vm.write_text(text.split("\nvms:\n")[0] + "\nvms: []\n")
    (tmp_path / "secret-dir").mkdir()
    # Relative secret paths resolve against the spec's directory: copy the spec beside the lab.
    one_vm_in_examples = REPO / "examples" / ".one-vm-test.yaml"
    one_vm_in_examples.write_text(one_vm.read_text())
    try:
        assert main(["render", str(one_vm_in_examples), "-o", str(tmp_path)]) == 0
    finally:
        one_vm_in_examples.unlink()
    assert not stale.exists()
