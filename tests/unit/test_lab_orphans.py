"""A lab whose state dir was deleted without `lab destroy` (a removed clone) leaves its runtime
dir, gigabytes of node disks, in /var/lib/hakvm-lab: `lab up` names it and the command that
removes it, and that command removes only it."""

from __future__ import annotations

import pathlib

import pytest

from hakvm.cli import main
from hakvm.lab import lifecycle
from hakvm.lab.state import Lab, LabStateError, Runtime, orphaned_runtimes, run_dir_for


@pytest.fixture
def base(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv("HAKVM_LAB_RUN_BASE", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    return tmp_path / "run"


def _runtime(lab_dir: pathlib.Path, *, owner: str | None = None, disk: int = 0) -> pathlib.Path:
    run = run_dir_for(lab_dir)
    (run / "node01").mkdir(parents=True)
    (run / "node01" / "disk.qcow2").write_bytes(b"x" * disk)
    Runtime(run).owner_file.write_text(f"{lab_dir if owner is None else owner}\n")
    return run


def test_only_a_runtime_whose_named_state_dir_is_gone_is_orphaned(
    base: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    live = tmp_path / "live" / ".hakvm" / "lab"
    live.mkdir(parents=True)
    (live / "lab.json").write_text("{}")
    _runtime(live)
    gone = tmp_path / "removed clone" / ".hakvm" / "lab"
    orphan = _runtime(gone)
    # Named after another dir than it claims: not judged (nor is a runtime without the file).
    _runtime(tmp_path / "other", owner=str(tmp_path / "elsewhere"))
    (base / "0123456789abcdef").mkdir()
    assert orphaned_runtimes() == [(orphan, gone)]


def test_lab_up_names_the_orphan_and_the_command_that_removes_only_it(
    base: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gone = tmp_path / "removed clone" / ".hakvm" / "lab"
    orphan = _runtime(gone, disk=3 << 20)
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "lab.json").write_text("{}")
    kept_run = _runtime(kept)

    def no_build(*_args: object, **_kwargs: object) -> None:
        raise LabStateError("stopped here by the test")

    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(lifecycle, "up", no_build)
    with pytest.raises(SystemExit):
        main(["lab", "--lab-dir", str(tmp_path / "new"), "up"])
    err = " ".join(capsys.readouterr().err.split())
    assert f"{orphan} holds 0.0 GiB of node disks of the lab {gone}" in err
    assert f"hakvm lab --lab-dir '{gone}' destroy" in err
    assert str(kept_run) not in err

    lifecycle.destroy(Lab(gone))
    assert not orphan.exists() and kept_run.is_dir() and (kept / "lab.json").is_file()
    assert orphaned_runtimes() == []
