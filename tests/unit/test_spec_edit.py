"""Editing the spec file for `hakvm vm add/remove` (hakvm.spec.edit): one VM entry in or
out, every other byte of the file as it was, and nothing written unless the result is a
valid spec with exactly that change."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from hakvm.spec import edit

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = REPO / "examples" / "lab.yaml"


@pytest.fixture
def spec_path(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "lab.yaml"
    shutil.copy(LAB, path)
    return path


VM_C = edit.new_entry("vm-c", "64MiB", "1GiB", preferred_node="node02", bridges=["br0"])
VM_C_LINE = (
    "  - {name: vm-c, vcpus: 1, memory: 64MiB, disk: {size: 1GiB}, preferred_node: node02, "
    "networks: [{bridge: br0}]}\n"
)


def test_add_then_remove_round_trips_the_file_byte_for_byte(spec_path: pathlib.Path) -> None:
    original = spec_path.read_text()
    spec_path.chmod(0o640)
    added = edit.add_to_spec(spec_path, VM_C)
    text = spec_path.read_text()
    assert [v.name for v in added.vms] == ["vm-a", "vm-b", "vm-c"]
    # Exactly one line more, after the last VM, in the entries' own flow style.
    assert text == original + VM_C_LINE
    assert "# Tiny payload VMs: BIOS only" in text
    assert spec_path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in spec_path.parent.iterdir()) == ["lab.yaml"]  # no temp file
    edit.remove_from_spec(spec_path, "vm-c")
    assert spec_path.read_text() == original


BLOCK_SPEC_VMS = """\
vms:
  # web: the shop front
  - name: web
    memory: 32MiB   # tiny on purpose
    disk:
      size: 1GiB
  # db: keep this comment
  - name: db
    memory: 32MiB
    disk: {size: 1GiB}

  - name: mail
    memory: 32MiB
    disk:
      size: 1GiB
# about the next key, not about mail
allow_memory_overcommit: false
"""


def _block_spec(path: pathlib.Path) -> str:
    head = LAB.read_text().split("\nvms:\n")[0]
    path.write_text(head + "\n" + BLOCK_SPEC_VMS)
    return path.read_text()


@pytest.mark.parametrize("name", ["web", "db", "mail"])
def test_remove_cuts_only_that_entrys_lines(spec_path: pathlib.Path, name: str) -> None:
    original = _block_spec(spec_path)
    lines = original.splitlines(keepends=True)
    start = lines.index(f"  - name: {name}\n")
    end = start + 1
    while end < len(lines) and lines[end].startswith("    "):
        end += 1
    edit.remove_from_spec(spec_path, name)
    # Every other line, comments and the blank line included, is still there as it was:
    # a round-trip dumper loses "# db: keep this comment" (removing web) and the comment
    # below the list (removing mail).
    assert spec_path.read_text() == "".join(lines[:start] + lines[end:])


def test_add_to_a_block_list_matches_its_indentation(spec_path: pathlib.Path) -> None:
    original = _block_spec(spec_path)
    entry = edit.new_entry("vm-c", "64MiB", "1GiB", bridges=["br0"], autostart=False)
    report_spec = edit.add_to_spec(spec_path, entry)
    added = (
        "  - name: vm-c\n    vcpus: 1\n    memory: 64MiB\n    disk: {size: 1GiB}\n"
        "    networks: [{bridge: br0}]\n    autostart: false\n"
    )
    assert spec_path.read_text() == original.replace(
        "      size: 1GiB\n# about", f"      size: 1GiB\n{added}# about"
    )
    assert report_spec.vms[-1].autostart is False


def test_an_edit_that_changes_anything_else_is_refused(
    spec_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = spec_path.read_text()
    real = edit.spec_without_vm

    def too_much(text: str, name: str) -> str:
        return real(real(text, name), "vm-b")  # a splice that also took a neighbour

    monkeypatch.setattr(edit, "spec_without_vm", too_much)
    with pytest.raises(edit.SpecEditError, match="cannot edit this file's layout safely"):
        edit.remove_from_spec(spec_path, "vm-a")
    assert spec_path.read_text() == before


def test_removing_the_last_vm_leaves_an_empty_list(spec_path: pathlib.Path) -> None:
    edit.remove_from_spec(spec_path, "vm-a")
    spec = edit.remove_from_spec(spec_path, "vm-b")
    assert spec.vms == []
    assert spec_path.read_text().endswith("vms: []\n")
