"""Real node answers recorded on the lab (tests/unit/data), and edits of exactly the
attribute a fault changes: shared by the status and doctor tests."""

from __future__ import annotations

import pathlib

from hakvm.remote.facts import parse_batch
from hakvm.remote.probes import NodeAnswer

DATA = pathlib.Path(__file__).parent / "data"
NODES = ("node01", "node02")


def answers(prefix: str = "healthy") -> dict[str, NodeAnswer]:
    """Both nodes' recorded status batches, e.g. status-healthy-node01.b64."""
    return {
        n: NodeAnswer(n, parse_batch((DATA / f"status-{prefix}-{n}.b64").read_text()))
        for n in NODES
    }


def edit(answer: NodeAnswer, key: str, old: str, new: str) -> None:
    """Replace the first `old` in one recorded answer; fail if the recording lacks it."""
    assert answer.raw is not None
    rc, out = answer.raw[key]
    text = out.decode()
    assert old in text, f"{old!r} not in recorded {key}"
    answer.raw[key] = (rc, text.replace(old, new, 1).encode())
