"""The status probes' framed batch (`text_batch_argv`), run by the local /bin/sh (dash, as on
the nodes) and read back: every byte of each answer and its exit code, whatever the answers
print."""

from __future__ import annotations

import subprocess

import pytest

from hakvm.remote.facts import parse_text_batch, text_batch_argv

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
