"""Real node answers recorded on the lab (tests/unit/data), edits of exactly the attribute a
fault changes, and fake nodes that replay them: shared by the status and doctor tests."""

from __future__ import annotations

import base64
import io
import pathlib
import tarfile

from hakvm.remote.facts import TEXT_BATCH_SCRIPT, parse_batch
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
    """The entry names a batch argv (facts.batch_argv or the probes' text_batch_argv) asks
    for; [] for any other command."""
    if (request := text_batch_request(argv)) is not None:
        return request[1]
    return list(argv[4::2]) if argv[:2] == ("sh", "-c") and "@rc" in argv[2] else []


def batch_commands(argv: tuple[str, ...]) -> list[str]:
    """The commands (as the batch's shell evals them) of either batch argv; [] otherwise."""
    if text_batch_request(argv) is not None:
        return list(argv[6::2])
    return list(argv[5::2]) if batch_entries(argv) else []


def text_batch_text(entries: dict[str, tuple[int, bytes]], marker: str) -> str:
    """What the probes' framed batch (facts.TEXT_BATCH_SCRIPT) prints for these entries."""
    return "".join(
        f"{marker} {name}\n{out.decode()}\n{marker} {name} {rc}\n"
        for name, (rc, out) in entries.items()
    )


def text_batch_request(argv: tuple[str, ...]) -> tuple[str, list[str]] | None:
    """(marker, entry names) of a framed batch argv (facts.text_batch_argv), else None."""
    if argv[:3] != ("sh", "-c", TEXT_BATCH_SCRIPT):
        return None
    return argv[4], list(argv[5::2])


def replaying(recorded: NodeAnswer) -> Answer:
    """A fake node's `answer`: every batch answered from a recorded answer (an entry the
    recording lacks exits 127, as a missing tool would)."""
    assert recorded.raw is not None
    raw = recorded.raw

    def answer(node: FakeNode, argv: tuple[str, ...], stdin: bytes | None) -> Reply:
        if (request := text_batch_request(argv)) is not None:
            marker, names = request
            return (0, text_batch_text({n: raw.get(n, (127, b"")) for n in names}, marker))
        names = batch_entries(argv)
        return (0, batch_text({n: raw.get(n, (127, b"")) for n in names})) if names else (0, "")

    return answer
