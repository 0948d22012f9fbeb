"""Real node answers recorded on the lab (tests/unit/data), edits of exactly the attribute a
fault changes, and fake nodes that replay them: shared by the status and doctor tests."""

from __future__ import annotations

import base64
import io
import pathlib
import tarfile

from hakvm.remote.facts import parse_batch
from hakvm.remote.probes import NodeAnswer
from tests.unit.fakes import Answer, FakeNode, Reply

DATA = pathlib.Path(__file__).parent / "data"
NODES = ("node01", "node02")


def answers(prefix: str = "healthy") -> dict[str, NodeAnswer]:
    """Both nodes' recorded status batches, e.g. status-healthy-node01.b64.

    They were recorded when status still named the DRBD resources with `drbdadm
    sh-resources` and `sh-minor all`; the `drbdadm dump all` lines it reads now
    (drbd_devices) are drbdadm-84's, of the lab's rendered configuration (the same minors)."""
    devices = (DATA / "drbd-devices-lab.txt").read_bytes()
    recorded = {
        n: NodeAnswer(n, parse_batch((DATA / f"status-{prefix}-{n}.b64").read_text()))
        for n in NODES
    }
    for answer in recorded.values():
        assert answer.raw is not None
        answer.raw["drbd_devices"] = (0, devices)
    return recorded


def edit(answer: NodeAnswer, key: str, old: str, new: str) -> None:
    """Replace the first `old` in one recorded answer; fail if the recording lacks it."""
    assert answer.raw is not None
    rc, out = answer.raw[key]
    text = out.decode()
    assert old in text, f"{old!r} not in recorded {key}"
    answer.raw[key] = (rc, text.replace(old, new, 1).encode())


def batch_text(entries: dict[str, tuple[int, bytes]]) -> str:
    """What the batch script (remote/facts.py) prints for these entries: a base64 tar of
    each one's stdout and an "@rc" file of exit codes."""
    buffer = io.BytesIO()
    codes = "".join(f"{name} {rc}\n" for name, (rc, _) in entries.items()).encode()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [*((n, out) for n, (_, out) in entries.items()), ("@rc", codes)]:
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


def batch_entries(argv: tuple[str, ...]) -> list[str]:
    """The entry names a batch argv (facts.batch_argv) asks for; [] for any other command."""
    return list(argv[4::2]) if argv[:2] == ("sh", "-c") and "@rc" in argv[2] else []


def replaying(recorded: NodeAnswer) -> Answer:
    """A fake node's `answer`: every batch answered from a recorded answer (an entry the
    recording lacks exits 127, as a missing tool would)."""
    assert recorded.raw is not None
    raw = recorded.raw

    def answer(node: FakeNode, argv: tuple[str, ...], stdin: bytes | None) -> Reply:
        names = batch_entries(argv)
        return (0, batch_text({n: raw.get(n, (127, b"")) for n in names})) if names else (0, "")

    return answer
