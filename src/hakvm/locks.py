"""No two hakvm runs at once: what names this run, and the local locks.

Three locks keep two runs from corrupting each other's work:

- the spec file's, a lock file beside it (`.NAME.hakvm-lock`), held by `vm add/remove`
  from reading the file to writing it back (two edits at once lost a VM);
- the state directory's (`STATE_DIR/CLUSTER/.lock`), held from "is there a secret" to
  "written" (two first applies generated different secrets);
- each node's, held by writers for the whole run (hakvm.remote.lock).

The local ones are `flock(2)` locks: the kernel drops them when the process ends, however it
ends, so a lock file left behind (by a killed run) never locks anything by itself; a run
removes its lock file when it is done. They are held for milliseconds, so a second run waits
for them (LOCAL_WAIT_S), then names the holder.

RUN_ID names this process's run on the nodes: its scratch directory (`/run/hakvm/RUN_ID/`)
and its network-rollback unit, so that two runs never share either.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from hakvm.errors import StateError

RUN_ID = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{secrets.token_hex(3)}"
STARTED = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
LOCAL_WAIT_S = 10.0
_POLL_S = 0.05
_HOLDER_MAX = 300  # characters of a holder line


class BusyError(StateError):
    """Another hakvm run holds a lock this one needs (exit 3); the message names it."""


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:_HOLDER_MAX]


def holder_line() -> str:
    """Who this run is, in one line: the command, its pid, host and start time.

    The command is hakvm's own argv, which never holds a secret."""
    command = " ".join(["hakvm", *sys.argv[1:]])
    return _printable(f"{command} (pid {os.getpid()} on {socket.gethostname()}, since {STARTED})")


def spec_lock_path(spec_path: Path) -> Path:
    """The spec file's lock file: beside the file itself (a symlink's target)."""
    target = spec_path.resolve()
    return target.parent / f".{target.name}.hakvm-lock"


@contextlib.contextmanager
def local_lock(path: Path, what: str, *, wait: float = LOCAL_WAIT_S) -> Iterator[None]:
    """Hold an exclusive flock on `path` for the block; while held the file names this run,
    and it is removed at the end (nothing is left beside a spec). BusyError naming the holder
    once `wait` seconds have passed; StateError if the file cannot be created."""
    deadline = time.monotonic() + wait
    while True:
        fd = _open(path, what)
        try:
            if _flock(fd, deadline, what) and _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder removed it meanwhile: lock the file that is there now
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder_line() + "\n").encode(), 0)
        yield
    finally:
        # Removed while still locked: a waiter then finds its file gone (_same_file) and
        # locks a new one, never a file nobody else would see.
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _open(path: Path, what: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(f"{what}: cannot open the lock file {path}: {exc.strerror}") from None


def _flock(fd: int, deadline: float, what: str) -> bool:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise BusyError(
                    f"{what} is locked by another hakvm run: {_holder(fd)}; "
                    "try again when it has finished"
                ) from None
            time.sleep(_POLL_S)


def _same_file(fd: int, path: Path) -> bool:
    try:
        named, opened = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return _printable(text.splitlines()[0]) if text else "(it has not said who it is yet)"
