"""`hakvm lab` error handling: one line, exit 2 for bad input, 3 for a missing lab."""

from __future__ import annotations

import pathlib

import pytest

from hakvm.cli import main


@pytest.mark.parametrize(
    "args",
    [
        ["cut", "bond-c"],
        ["kill", "node03"],
        ["heal", "eth0"],
        ["status", "--bogus"],
    ],
)
def test_bad_input_exits_2(
    args: list[str], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lab", "--lab-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip()


@pytest.mark.parametrize("args", [["status"], ["kill", "node01"], ["cut", "hb"], ["heal"]])
def test_no_lab_exits_3(
    args: list[str], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["lab", "--lab-dir", str(tmp_path / "none"), *args])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "lab up" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_down_without_lab_is_fine(tmp_path: pathlib.Path) -> None:
    assert main(["lab", "--lab-dir", str(tmp_path / "none"), "down"]) == 0


def test_bad_port_exits_2(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert main(["lab", "--lab-dir", str(tmp_path), "up", "--ssh-port", "22"]) == 2
