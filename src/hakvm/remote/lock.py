"""The node lock: one hakvm writer at a time on a node, for the whole run.

A writer (apply, vm add/remove, migrate, drain, undrain, drill) opens an SSH connection of
its own to each node and runs LOCK_SCRIPT there: a shell that takes `flock` on
/run/hakvm/lock, records the holder (command, pid, host, start time) in
/run/hakvm/lock.holder, says `locked`, and then only waits for its stdin to close. The lock
lives exactly as long as that shell:

- the run ends: hakvm closes the shell's stdin (`cat` ends, the shell exits) and waits for
  the channel to close, so the lock is free when the run returns;
- the run dies (killed, crashed, Ctrl-C): its connection closes, sshd closes the shell's
  stdin, `cat` ends, the shell exits and the kernel drops the lock. A client that vanished
  without closing its TCP connection (power loss) holds it until sshd notices (TCPKeepAlive,
  ClientAliveInterval); the holder line says which machine and pid to look for;
- the node reboots: /run is a tmpfs, the lock is gone with it.

Both nodes are locked, in the spec's order, so a run that lost one node's lock (a drill that
crashed that node) still excludes every other writer through the other. A second writer
waits up to `wait` seconds (flock -w) and otherwise fails with BusyError (exit 3) naming the
holder. Read-only commands (status, doctor, plan, render, validate, vm list) never lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hakvm.locks import BusyError, holder_line
from hakvm.remote.connection import RemoteError, StreamResult
from hakvm.remote.session import Session
from hakvm.spec.models import ClusterSpec

LOCK_DIR = "/run/hakvm"  # root's own (0700): no other user can plant or hold the lock file
# How long a second writer waits by default: long enough for a run that just ended, or was
# killed, to let go (its connection closing on a loaded node), short enough to say at once
# that another run is at work.
DEFAULT_WAIT_S = 10.0
HOLD_MAX_S = 30 * 24 * 3600.0  # a lock is held as long as the run: `drill --all` takes hours
ANSWER_MARGIN_S = 120.0  # beyond the wait, for the node to answer at all

# $1 the lock directory, $2 seconds to wait (0: do not), $3 the holder line. `cat` keeps no
# copy of fd 9 (9>&-) and no channel output: when the shell dies, the lock and the channel
# go with it. The last `exit` keeps a shell from exec'ing cat in its place (and with it
# closing fd 9, the lock, at once).
LOCK_SCRIPT = r"""
umask 077
mkdir -p "$1" || exit 1
exec 9>>"$1/lock" || exit 1
if ! flock -w "$2" 9; then
    printf 'busy %s\n' "$(head -n 1 "$1/lock.holder" 2>/dev/null)"
    exit 3
fi
printf '%s\n' "$3" > "$1/lock.holder"
echo locked
cat >/dev/null 2>&1 9>&-
exit 0
"""


class Holder(Protocol):
    """What the lock needs of a connection: a NodeConnection, or a unit test's node."""

    name: str

    async def stream(
        self,
        argv: Sequence[str],
        on_line: Callable[[str], None],
        *,
        timeout: float,
        stop: asyncio.Event | None = None,
        env: Mapping[str, str] | None = None,
    ) -> StreamResult: ...

    async def close(self) -> None: ...


Connect = Callable[[str], Awaitable[Holder]]


def lock_argv(directory: str, wait: float, holder: str) -> list[str]:
    return ["sh", "-c", LOCK_SCRIPT, "hakvm-lock", directory, f"{wait:.3f}", holder]


@dataclass
class _Held:
    conn: Holder
    stop: asyncio.Event
    task: asyncio.Task[StreamResult]


async def _take(conn: Holder, directory: str, wait: float, holder: str) -> _Held:
    first: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def line(text: str) -> None:
        if not first.done():
            first.set_result(text)

    stop = asyncio.Event()
    task = asyncio.create_task(
        conn.stream(lock_argv(directory, wait, holder), line, timeout=HOLD_MAX_S, stop=stop)
    )
    held = _Held(conn, stop, task)
    try:
        waits: list[asyncio.Future[Any]] = [first, task]
        await asyncio.wait(waits, timeout=wait + ANSWER_MARGIN_S, return_when=FIRST_COMPLETED)
        if first.done() and first.result() == "locked":
            return held
        said = first.result() if first.done() else ""
        await _release(held)
    except BaseException:
        await _release(held)
        raise
    if said.startswith("busy"):
        who = said.removeprefix("busy").strip() or "(it has not said who it is yet)"
        waited = f"waited {round(wait, 1):g}s; " if wait else ""
        raise BusyError(
            f"{conn.name}: another hakvm run holds this node: {who}; {waited}wait for it to "
            "finish, or give --wait SECONDS"
        )
    result = task.result() if task.done() and not task.cancelled() else None
    detail = (result.stderr.strip().splitlines() or [result.reason])[-1] if result else ""
    raise RemoteError(f"{conn.name}: cannot take the node lock: {detail or 'no answer'}")


async def _release(held: _Held) -> None:
    """Stop the holding shell and wait until it is gone (the lock with it), then hang up."""
    held.stop.set()
    with contextlib.suppress(RemoteError, OSError, TimeoutError):
        await asyncio.wait_for(asyncio.shield(held.task), timeout=30)
    if not held.task.done():
        held.task.cancel()
    await asyncio.gather(held.task, return_exceptions=True)
    await held.conn.close()


class NodeLocks:
    """Hold every node's lock for the `async with` block (see the module's docstring)."""

    def __init__(
        self,
        names: Sequence[str],
        connect: Connect,
        *,
        wait: float = 0.0,
        directory: str = LOCK_DIR,
    ) -> None:
        self.names = list(names)
        self.connect = connect
        self.wait = wait
        self.directory = directory
        self.held: list[_Held] = []

    async def __aenter__(self) -> NodeLocks:
        deadline = asyncio.get_running_loop().time() + self.wait
        try:
            for name in self.names:
                conn = await self.connect(name)
                left = max(0.0, deadline - asyncio.get_running_loop().time())
                self.held.append(await _take(conn, self.directory, left, holder_line()))
        except BaseException:
            await self.release()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    async def release(self) -> None:
        held, self.held = self.held, []
        for one in reversed(held):
            await _release(one)


def node_locks(
    spec: ClusterSpec, spec_path: Path, *, wait: float = DEFAULT_WAIT_S
) -> NodeLocks:
    """Both nodes' locks, each over an SSH connection of its own (the run's own connections
    may be dropped and remade, a drill's are)."""
    session = Session(spec, spec_path)

    async def connect(name: str) -> Holder:
        return await session.fresh(name).connect()

    return NodeLocks(session.names, connect, wait=wait)
