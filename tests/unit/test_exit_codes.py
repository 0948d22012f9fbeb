"""Bad input never crashes, and every command exits as docs/exit-codes.md says.

Every command that reads a spec, against a corpus of malformed specs: the documented code,
exactly one line (no traceback). Then a valid spec whose nodes do not answer, names that
are not in the spec, bad command lines; and a fuzz of the spec loader over mutated specs.
The expected codes are read from the documented tables, which must match hakvm.errors.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hakvm.cli import main
from hakvm.errors import ExitCode, MonitorCode
from hakvm.spec.loader import SpecLoadError, load_spec_file, load_spec_text
from hakvm.spec.validate import validate_file

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "examples" / "lab.yaml"


def documented() -> dict[str, dict[str, int]]:
    """docs/exit-codes.md's two tables: {"commands"|"monitoring": {meaning: code}}."""
    tables: list[dict[str, int]] = []
    current: dict[str, int] | None = None
    for line in (REPO / "docs" / "exit-codes.md").read_text().splitlines():
        row = re.match(r"^\| (\d+) \| (.+) \|$", line)
        if row:
            if current is None:
                current = {}
                tables.append(current)
            current[row[2]] = int(row[1])
        elif not line.startswith("|"):
            current = None
    commands, monitoring = tables
    return {"commands": commands, "monitoring": monitoring}


def code_for(table: str, meaning: str) -> int:
    (code,) = [c for m, c in documented()[table].items() if m.startswith(meaning)]
    return code


BAD_INPUT = code_for("commands", "bad input")
NOT_READY = code_for("commands", "the cluster or lab is not in a state")
UNKNOWN = code_for("monitoring", "unknown")


def test_the_documented_tables_are_the_codes_hakvm_uses() -> None:
    tables = documented()
    assert sorted(tables["commands"].values()) == [
        ExitCode.OK, ExitCode.FAILED, ExitCode.INPUT, ExitCode.STATE
    ]  # fmt: skip
    assert sorted(tables["monitoring"].values()) == [
        MonitorCode.HEALTHY, MonitorCode.DEGRADED, MonitorCode.CRITICAL, MonitorCode.UNKNOWN
    ]  # fmt: skip
    assert (BAD_INPUT, NOT_READY, UNKNOWN) == (ExitCode.INPUT, ExitCode.STATE, MonitorCode.UNKNOWN)


# --- every command x malformed specs ----------------------------------------------------------

# argv after the spec path, and which table the command's code comes from
COMMANDS: dict[str, tuple[list[str], list[str], str]] = {
    "validate": (["validate"], [], "commands"),
    "render": (["render"], ["-o", "{tmp}/out"], "commands"),
    "export pcs": (["export", "pcs"], [], "commands"),
    "export crmsh": (["export", "crmsh"], [], "commands"),
    "plan": (["plan"], [], "commands"),
    "apply": (["apply"], [], "commands"),
    "demo": (["demo"], [], "commands"),
    "migrate": (["migrate"], ["vm-a"], "commands"),
    "drain": (["drain"], ["node02"], "commands"),
    "undrain": (["undrain"], ["node02"], "commands"),
    "drill": (["drill"], ["--all"], "commands"),
    "vm add": (["vm", "add"], ["vm-c", "--memory", "64MiB", "--disk", "1GiB", "--no-apply"],
               "commands"),
    "vm remove": (["vm", "remove"], ["vm-a"], "commands"),
    "replace-node": (["replace-node"], ["node02"], "commands"),
    "status": (["status"], [], "monitoring"),
    "doctor": (["doctor"], [], "monitoring"),
    "vm list": (["vm", "list"], [], "monitoring"),
}  # fmt: skip


def _nested(depth: int) -> str:
    return "cluster: " + "[" * depth + "]" * depth + "\n"


def _laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i, name in enumerate("bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + 'abcdefgh'[i]] * 10)}]")
    return "\n".join(lines) + "\n"


Maker = Callable[[Path], Path]


def _file(text: str | bytes) -> Maker:
    def make(tmp: Path) -> Path:
        path = tmp / "spec.yaml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    return make


def _lab_with(old: str, new: str) -> Maker:
    return _file(LAB.read_text().replace(old, new, 1))


MALFORMED: dict[str, Maker] = {
    "missing": lambda tmp: tmp / "missing.yaml",
    "directory": lambda tmp: tmp,
    "dev-zero": lambda tmp: Path("/dev/zero"),
    "nul-escape": _lab_with("name: lab", 'name: "la\\0b"'),
    "control-escape": _file('cluster: {name: "a\\x07b"}\n'),
    "nul-escape-in-key": _file('"ke\\0y": 1\n'),
    "deep-nesting": _file(_nested(5000)),
    "self-alias": _file("cluster: &x [*x]\n"),
    "self-alias-in-map": _file("cluster: &x {a: *x}\n"),
    "billion-laughs": _file(_laughs()),
    "not-yaml": _file("cluster: [unclosed\n"),
    "raw-control": _file("cluster: {name: a\x07b}\n"),
    "binary": _file(b"\x7fELF\x02\x01\x00\x00"),
    "empty": _file(""),
    "invalid-spec": _lab_with("name: lab", "name: Not_A_Name"),
}
if os.geteuid() != 0:  # root reads any file: this case exists only for other users

    def _unreadable(tmp: Path) -> Path:
        path = _file(LAB.read_text())(tmp)
        path.chmod(0)
        return path

    MALFORMED["unreadable"] = _unreadable


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, [line for line in (out + err).splitlines() if line.strip()], out + err


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_malformed_spec_in_one_line(
    command: str, case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    words, rest, table = COMMANDS[command]
    spec = MALFORMED[case](tmp_path)
    argv = [*words, str(spec), *(a.replace("{tmp}", str(tmp_path)) for a in rest)]
    code, lines, text = run(argv, capsys)
    expected = UNKNOWN if table == "monitoring" else BAD_INPUT
    assert "Traceback" not in text
    if case == "invalid-spec":  # every problem at once, then one line saying so
        assert code == expected and lines, text
        return
    assert (code, len(lines)) == (expected, 1), text
    assert str(spec) in lines[0], text


# --- a valid spec whose nodes do not answer; names not in it; bad command lines -------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unreachable(tmp_path: Path) -> Path:
    """The lab spec pointed at ports where nothing listens (never at a running lab)."""
    data = yaml.safe_load(LAB.read_text())
    for node in data["nodes"]:
        node["ssh"]["port"] = _closed_port()
        node["ssh"]["key_file"] = str(tmp_path / "id_ed25519")
        node["ssh"]["known_hosts"] = str(tmp_path / "known_hosts")
        node["bmc"]["password_file"] = str(tmp_path / "bmc.pw")
    key = asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh")
    for name, content in (("id_ed25519", key), ("known_hosts", b""), ("bmc.pw", b"x\n")):
        (tmp_path / name).write_bytes(content)
        (tmp_path / name).chmod(0o600)
    path = tmp_path / "unreachable.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["plan"], NOT_READY),
        (["apply"], NOT_READY),
        (["migrate", "{spec}", "vm-a"], NOT_READY),
        (["drain", "{spec}", "node02"], NOT_READY),
        (["undrain", "{spec}", "node02"], NOT_READY),
        (["vm", "remove", "{spec}", "vm-a"], NOT_READY),
        (["replace-node", "{spec}", "node02", "--yes"], NOT_READY),
        (["status"], UNKNOWN),
        (["doctor"], UNKNOWN),
    ],
)
def test_no_node_answers(
    argv: list[str], expected: int, unreachable: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{spec}", str(unreachable)) for a in argv]
    if str(unreachable) not in argv:
        argv.append(str(unreachable))
    code, _, text = run(argv, capsys)
    assert code == expected, text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    "argv",
    [
        ["migrate", "{spec}", "vm-z"],
        ["migrate", "{spec}", "vm-a", "--to", "node09"],
        ["drain", "{spec}", "node09"],
        ["undrain", "{spec}", "node09"],
        ["vm", "remove", "{spec}", "Bad_Name"],
        ["replace-node", "{spec}", "node09"],
    ],
)
def test_a_name_not_in_the_spec_is_bad_input(
    argv: list[str], unreachable: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, text = run([a.replace("{spec}", str(unreachable)) for a in argv], capsys)
    assert (code, len(lines)) == (BAD_INPUT, 1), text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["plan", "--bogus", "x.yaml"], BAD_INPUT),
        (["plan"], BAD_INPUT),
        (["frobnicate"], BAD_INPUT),
        (["status", "--bogus", "x.yaml"], UNKNOWN),
        (["doctor"], UNKNOWN),
        (["status", "--watch", "0", "x.yaml"], UNKNOWN),
    ],
)
def test_bad_command_lines(
    argv: list[str], expected: int, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, text = run(argv, capsys)
    assert code == expected, text
    assert "Traceback" not in text


# --- the loader, fuzzed -----------------------------------------------------------------------

SPEC_TEXT = LAB.read_text()
NASTY = ["\\0", "\\x07", "\\u0085", "\x00", "\x07", "&a", "*a", "[", "]", "{", "}", ":", "- ",
         "\t", "\n", "'", '"', "!!python/object:os.system", "<<: *a", "\\", "#", "%YAML 1.1",
         "\ufeff", "\ud7ff", "?", "|", ">"]  # fmt: skip


@st.composite
def mutated_specs(draw: st.DrawFn) -> str:
    text = SPEC_TEXT
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "repeat"]))
        if kind == "insert":
            piece = draw(st.one_of(st.sampled_from(NASTY), st.text(max_size=8)))
            text = text[:at] + piece + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        else:
            piece = text[at : at + draw(st.integers(1, 30))]
            text = text[:at] + piece * draw(st.integers(2, 50)) + text[at:]
    return text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mutated_specs())
def test_the_loader_refuses_any_mutated_spec_in_one_line(text: str) -> None:
    try:
        loaded = load_spec_text(text, Path("fuzz.yaml"))
    except SpecLoadError as exc:
        assert "\n" not in str(exc) and str(exc).strip()
        assert exc.line is None or exc.line >= 1
        return
    assert isinstance(loaded.data, dict)


@settings(max_examples=40, deadline=None)
@given(text=mutated_specs())
def test_validate_never_crashes_on_a_mutated_spec(
    text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    report = validate_file(path)
    assert report.ok or report.errors
    assert all("\n" not in line for line in report.lines())


def test_the_loader_reads_a_regular_file_only_and_at_most_its_bound(tmp_path: Path) -> None:
    with pytest.raises(SpecLoadError, match="not a regular file"):
        load_spec_file(Path("/dev/zero"))
    with pytest.raises(SpecLoadError, match="is a directory"):
        load_spec_file(tmp_path)
