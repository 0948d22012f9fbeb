"""The unit tests' one fake node (and a session of them): it records every command hakvm
sends, in order, and answers from a script, so a test can drive the node adapter and the
actions without SSH.

A node answers a command with the first rule whose prefix matches its argv (rules given
with `on`, several for one prefix are used up in order, the last one stays), else through
`answer` (a function of the node, argv and stdin), else with exit 0 and no output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, TypeVar

from hakvm.remote.connection import RemoteError, Result, StreamResult, UnreachableError
from hakvm.remote.qnetd import STANDARD, QnetdCa

T = TypeVar("T")


def next_answer(answers: list[T]) -> T:
    """A scripted answer per call: the list's first, popped, until the last, which stays."""
    return answers.pop(0) if len(answers) > 1 else answers[0]


class Sent(NamedTuple):
    node: str
    argv: list[str]
    stdin: str  # decoded; "" when none was sent


Reply = tuple[int, str] | tuple[int, str, str]  # exit code, stdout[, stderr]
Answer = Callable[["FakeNode", tuple[str, ...], bytes | None], Reply]


class FakeNode:
    def __init__(
        self,
        name: str = "node01",
        answer: Answer | None = None,
        *,
        log: list[Sent] | None = None,
        stream_lines: Sequence[str] = (),
        stream_end: str = "exit",
    ) -> None:
        self.name = name
        self.answer = answer
        self.sent: list[Sent] = [] if log is None else log
        self.files: dict[str, bytes] = {}  # what write_file wrote
        self.modes: dict[str, int] = {}
        self.rules: list[tuple[tuple[str, ...], list[Reply]]] = []
        self.stream_lines = list(stream_lines)
        self.stream_end = stream_end
        self.closed = False
        self.connects = 0  # logins: how often connect() was called
        self.unreachable: str | None = None  # connect() raises UnreachableError with it
        self.login_s = 0.0  # how long connect() takes (a slow login)

    def on(self, *prefix: str, rc: int = 0, out: str = "", err: str = "") -> FakeNode:
        """Answer commands starting with `prefix` so (chainable)."""
        for rule_prefix, replies in self.rules:
            if rule_prefix == prefix:
                replies.append((rc, out, err))
                return self
        self.rules.append((prefix, [(rc, out, err)]))
        return self

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        """Every command this node got, in order."""
        return [tuple(s.argv) for s in self.sent if s.node == self.name]

    def _reply(self, argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, str, str]:
        matching = [(p, r) for p, r in self.rules if argv[: len(p)] == p]
        if matching:
            _, replies = max(matching, key=lambda rule: len(rule[0]))
            reply = next_answer(replies)
        elif self.answer is not None:
            reply = self.answer(self, argv, stdin)
        else:
            reply = (0, "")
        rc, out, *err = reply
        return rc, out, err[0] if err else ""

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | bytes | None = None,
        check: bool = False,
        timeout: float = 0,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        self.sent.append(Sent(self.name, list(argv), (data or b"").decode()))
        rc, out, err = self._reply(tuple(argv), data)
        result = Result(tuple(argv), rc, out, err)
        if check and not result.ok:
            raise RemoteError(f"{self.name}: {argv[0]} failed: {err.strip() or rc}")
        return result

    async def write_file(
        self, path: str, content: bytes, mode: int, owner: str = "root", group: str = "root"
    ) -> None:
        self.files[path] = content
        self.modes[path] = mode

    async def stream(
        self,
        argv: Sequence[str],
        on_line: Callable[[str], None],
        *,
        timeout: float,
        stop: asyncio.Event | None = None,
        env: Mapping[str, str] | None = None,
    ) -> StreamResult:
        """Pass on `stream_lines`, then end as `stream_end` says ("exit" or "lost")."""
        self.sent.append(Sent(self.name, list(argv), ""))
        for line in self.stream_lines:
            on_line(line)
        lost = self.stream_end == "lost"
        status = None if lost else 0
        reason = "Connection lost" if lost else ""
        ended = "lost" if lost else "exit"
        return StreamResult(tuple(argv), len(self.stream_lines), status, ended, reason=reason)

    async def connect(self) -> FakeNode:
        self.connects += 1
        if self.login_s:
            await asyncio.sleep(self.login_s)
        if self.unreachable is not None:
            raise UnreachableError(f"{self.name}: {self.unreachable}")
        self.closed = False
        return self

    async def close(self) -> None:
        self.closed = True


class FakeNodes:
    """A session of fake nodes sharing one log (`sent`, in the order sent)."""

    def __init__(self, *names: str, answer: Answer | None = None) -> None:
        self.sent: list[Sent] = []
        self.nodes = {n: FakeNode(n, answer, log=self.sent) for n in names or ("node01", "node02")}
        self.dropped: list[str] = []
        self.probes: list[str] = []
        self.probe_error: str | None = None  # probe() raises RemoteError with it
        # The quorum device's qnetd host (a third machine), logging into the same list.
        self.qnetd_host = FakeNode("qnetd", answer, log=self.sent)
        self.qnetd_ca: QnetdCa = STANDARD

    def __getitem__(self, name: str) -> FakeNode:
        return self.nodes[name]

    def connected(self, name: str) -> FakeNode:
        return self.nodes[name]

    async def conn(self, name: str) -> FakeNode:
        return self.nodes[name]

    async def drop(self, name: str) -> None:
        self.dropped.append(name)

    async def qnetd(self) -> tuple[FakeNode, QnetdCa]:
        return self.qnetd_host, self.qnetd_ca

    async def probe(self, name: str) -> None:
        self.probes.append(name)
        if self.probe_error is not None:
            raise RemoteError(f"{name}: {self.probe_error}")
