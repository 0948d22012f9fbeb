"""`hakvm render -o DIR` never writes or deletes outside DIR: not through a symlink (DIR
itself, a directory or a file in it), not by following a `.hakvm-rendered` marker it did not
write. Each case plants the trap, runs render and checks that the directory outside is
byte for byte and stat for stat what it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hakvm.cli import main
from hakvm.errors import ExitCode
from hakvm.render.tree import MARKER, MARKER_HEADER

REPO = Path(__file__).resolve().parents[2]
SPEC = str(REPO / "examples" / "lab.yaml")


def _snapshot(root: Path) -> dict[str, tuple[bytes | str, int, int]]:
    """Every entry under root: content (or link target), mode, mtime."""
    out: dict[str, tuple[bytes | str, int, int]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        body: bytes | str = (
            os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else ""
        )
        out[str(path.relative_to(root))] = (body, st.st_mode, st.st_mtime_ns)
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory render must never touch, with a file in it."""
    victim = tmp_path / "outside"
    (victim / "etc").mkdir(parents=True)
    (victim / "victim").write_text("precious\n")
    (victim / "etc" / "hosts.block").write_text("precious too\n")
    return victim


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An existing output directory beside `outside`."""
    path = tmp_path / "out"
    path.mkdir()
    return path


def _render(out: Path) -> int:
    return int(main(["render", SPEC, "-o", str(out)]))


def _refused(out: Path, outside: Path, capsys: pytest.CaptureFixture[str], what: str) -> None:
    before = _snapshot(outside)
    assert _render(out) == ExitCode.INPUT
    err = capsys.readouterr().err
    assert what in err and "Traceback" not in err
    assert _snapshot(outside) == before


def test_output_dir_that_is_a_symlink_is_refused(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.symlink_to(outside)
    _refused(out, outside, capsys, "is a symlink")


def test_a_symlinked_directory_inside_is_refused(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    (out / "node01").mkdir(parents=True)
    (out / "node01" / "etc").symlink_to(outside / "etc")
    _refused(out, outside, capsys, "node01/etc is a symlink")


def test_a_symlinked_file_inside_is_refused(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    (out / "node01" / "etc" / "hakvm").mkdir(parents=True)
    (out / "node01" / "etc" / "hakvm" / "hosts.block").symlink_to(outside / "victim")
    _refused(out, outside, capsys, "hosts.block is a symlink")
    (out / "node01" / "etc" / "hakvm" / "hosts.block").unlink()
    (out / "manifest.json").symlink_to(outside / "victim")
    _refused(out, outside, capsys, "manifest.json is a symlink")


def test_a_marker_that_is_a_symlink_is_refused(
    out: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (out / MARKER).symlink_to(outside / "victim")
    _refused(out, outside, capsys, ".hakvm-rendered is a symlink")


@pytest.mark.parametrize(
    "listing",
    [
        "../outside/victim\n",  # no header: not hakvm's
        MARKER_HEADER + "../outside/victim\n",
        MARKER_HEADER + "{outside}/victim\n",  # absolute
        MARKER_HEADER + "node01/../../outside/victim\n",
    ],
)
def test_a_planted_marker_deletes_nothing(
    out: Path, outside: Path, capsys: pytest.CaptureFixture[str], listing: str
) -> None:
    (out / MARKER).write_text(listing.format(outside=outside))
    _refused(out, outside, capsys, "was not written by hakvm")


def test_a_marker_entry_through_a_symlink_deletes_nothing(
    out: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (out / "old").symlink_to(outside)
    (out / MARKER).write_text(MARKER_HEADER + "old/victim\n")
    _refused(out, outside, capsys, "old is a symlink")


def test_a_hard_link_is_replaced_not_written_through(tmp_path: Path, outside: Path) -> None:
    out = tmp_path / "out"
    assert _render(out) == 0
    target = out / "node01" / "etc" / "hakvm" / "hosts.block"
    target.unlink()
    os.link(outside / "victim", target)
    before = _snapshot(outside)
    assert _render(out) == 0
    assert (outside / "victim").read_text() == "precious\n"
    assert {k: v[0] for k, v in _snapshot(outside).items()} == {k: v[0] for k, v in before.items()}
    assert target.read_text().startswith("# BEGIN hakvm")


def test_rerender_cleans_only_its_own_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _render(out) == 0
    marker = (out / MARKER).read_text()
    assert marker.startswith(MARKER_HEADER)
    assert "manifest.json\n" in marker and "node01/etc/hakvm/hosts.block\n" in marker
    mine = out / "node01" / "notes.txt"
    mine.write_text("the admin's\n")
    stale = out / "node01" / "etc" / "old.conf"
    stale.write_text("x\n")
    (out / MARKER).write_text(marker + "node01/etc/old.conf\n")
    assert _render(out) == 0
    assert mine.exists() and not stale.exists()
    assert not list(out.rglob("*.hakvm-tmp"))
