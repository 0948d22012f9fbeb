"""The status probes' framed batch (`text_batch_argv`), run by the local /bin/sh (dash, as on
the nodes) and read back: every byte of each answer and its exit code, whatever the answers
print."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hakvm.remote.facts import in_batch_shell, parse_text_batch, text_batch_argv

MARKER = "0123456789abcdef0123456789abcdef"


def run(commands: list[tuple[str, list[str]]]) -> str:
    argv = text_batch_argv(commands, MARKER)
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def test_each_answer_exact_with_its_exit_code() -> None:
    answers = parse_text_batch(
        run([
            ("no_newline", ["printf", "abc"]),
            ("blank_lines", ["printf", "x\\n\\n"]),
            ("silent", ["true"]),
            ("failed", ["sh", "-c", "echo out; echo err >&2; exit 3"]),
            ("quoted", ["echo", "it's; $HOME `id`"]),
        ]),
        MARKER,
    )  # fmt: skip
    assert answers == {
        "no_newline": (0, b"abc"),
        "blank_lines": (0, b"x\n\n"),
        "silent": (0, b""),
        "failed": (3, b"out\n"),  # stderr is not part of the answer
        "quoted": (0, b"it's; $HOME `id`\n"),
    }


def test_an_answer_cannot_forge_another_frame() -> None:
    # Without the batch's marker a printed frame is only text of the answer that printed it.
    forged = "ffffffffffffffffffffffffffffffff crm_mon 0\n"
    answers = parse_text_batch(
        run([("events", ["printf", f"\\n{forged}"]), ("crm_mon", ["false"])]), MARKER
    )
    assert answers["events"] == (0, f"\n{forged}".encode())
    assert answers["crm_mon"] == (1, b"")


def test_a_cut_off_batch_keeps_the_answers_it_finished() -> None:
    whole = run([("first", ["echo", "one"]), ("second", ["echo", "two"])])
    cut = whole[: whole.index("two")]
    assert parse_text_batch(cut, MARKER) == {"first": (0, b"one\n")}
    with pytest.raises(ValueError, match="no framed answer"):
        parse_text_batch("garbage", MARKER)


def test_cat_and_sh_c_run_in_the_batch_shell_with_the_same_answers(tmp_path: Path) -> None:
    """`cat FILE` (a read loop) and `sh -c SCRIPT` (a subshell) cost no exec on the node, and
    answer as the programs would: a file's text whole (a last line without its newline gets
    one; blank lines, backslashes, leading blanks kept), a missing file a failure, a script
    with `sh -c`'s defaults (no positional parameters, unset variables allowed, its exit code
    and `exec` its own)."""
    text = tmp_path / "drbd"
    text.write_text("version: 8.4.11\n\n  0: cs:Connected\\n ro:x \nlast")
    commands = [
        ("file", ["cat", str(text)]),
        ("missing", ["cat", str(tmp_path / "none")]),
        ("args", ["sh", "-c", 'echo "$#:${1-unset}:$UNSET_VARIABLE"; # a trailing comment']),
        ("exit", ["sh", "-c", "echo before; exit 4"]),
        ("exec", ["sh", "-c", "exec echo replaced"]),
        ("after", ["echo", "the batch goes on"]),
    ]
    assert [in_batch_shell(c).split()[0] for _, c in commands[:3]] == ["while", "while", "(set"]
    answers = parse_text_batch(run(commands), MARKER)
    assert answers["file"] == (0, text.read_bytes() + b"\n")
    assert answers["missing"][0] != 0 and answers["missing"][1] == b""
    assert answers["args"] == (0, b"0:unset:\n")
    assert answers["exit"] == (4, b"before\n")
    assert answers["exec"] == (0, b"replaced\n")
    assert answers["after"] == (0, b"the batch goes on\n")


def test_other_commands_are_quoted_as_they_are() -> None:
    assert in_batch_shell(["cat", "-A", "/proc/drbd"]) == "cat -A /proc/drbd"
    assert in_batch_shell(["sh", "-c", "echo $0", "x"]) == "sh -c 'echo $0' x"
