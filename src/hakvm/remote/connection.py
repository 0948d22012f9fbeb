"""SSH to the nodes with asyncssh: key auth, host keys checked against known_hosts, never
auto-accepted. Commands are argv lists, quoted for the remote shell here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

import asyncssh

from hakvm.errors import ExitCode, FailedError
from hakvm.redact import PLACEHOLDER, contains_placeholder, redact
from hakvm.spec.models import SshTarget
from hakvm.spec.paths import resolve

DEFAULT_TIMEOUT = 600.0
MAX_SESSIONS = 6
STOP_GRACE_S = 5.0  # a stopped stream's process gets this long to exit after SIGTERM
STDERR_KEEP = 4096  # characters of a stream's stderr kept for error messages


class RemoteError(FailedError):
    """A node could not be reached, or a command on it failed; one line, names the node."""


class UnreachableError(RemoteError):
    """No connection to a node (refused, timed out, host key not trusted): nothing was done
    on it, the cluster is not in a state where the command can run."""

    exit_code = ExitCode.STATE


class KeyFileError(UnreachableError):
    """The spec's SSH key file is missing or unusable: bad input, nothing was tried."""

    exit_code = ExitCode.INPUT


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class StreamResult:
    """How a streamed command ended: "exit" by itself, "stopped" on request, "timeout", or
    "lost" (the connection went away, or the channel closed without an exit status).
    `exit_status` is None when none arrived; killed by a signal it is minus the signal."""

    argv: tuple[str, ...]
    lines: int
    exit_status: int | None
    ended: Literal["exit", "stopped", "timeout", "lost"]
    stderr: str = ""
    reason: str = ""

    @property
    def lost(self) -> bool:
        return self.ended == "lost"


class Remote(Protocol):
    """What the node adapter's functions need of a node: a NodeConnection, or the shared
    fake node of the unit tests."""

    name: str

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | bytes | None = ...,
        check: bool = ...,
        timeout: float = ...,
        env: Mapping[str, str] | None = ...,
    ) -> Result: ...

    async def write_file(
        self, path: str, content: bytes, mode: int, owner: str = ..., group: str = ...
    ) -> None: ...


class Endpoint(Protocol):
    """What a connection needs of a machine: its name and SSH target (a spec's node, the
    quorum device's qnetd host, or a machine `hakvm init` surveys before any spec exists)."""

    @property
    def name(self) -> str: ...

    @property
    def ssh(self) -> SshTarget: ...


async def server_host_key(
    target: SshTarget, algorithms: Sequence[str] = (), timeout: float = 20.0
) -> asyncssh.SSHKey:
    """The host key `target` presents (no authentication, nothing run), of one of
    `algorithms` when given: what a user must confirm before it is trusted."""
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(
                target.host, target.port, server_host_key_algs=list(algorithms) or ()
            ),
            timeout=timeout,
        )
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise UnreachableError(
            f"cannot reach {target.host}:{target.port} for its host key: {_reason(exc)}"
        ) from None
    if key is None:
        raise UnreachableError(f"{target.host}:{target.port} presented no host key")
    return key


def quote_argv(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """One remote command line from an argv list: every element quoted, no shell syntax."""
    prefix = ["env", *(f"{k}={v}" for k, v in sorted((env or {}).items()))] if env else []
    return shlex.join([*prefix, *argv])


class NodeConnection:
    """One node's SSH connection. `run` never raises on a non-zero exit unless `check`."""

    def __init__(
        self, node: Endpoint, spec_dir: Path, connect_timeout: float = 20.0, field: str = ""
    ) -> None:
        self.node = node
        self.name = node.name
        self._field = field or f"nodes.{node.name}.ssh"  # the spec field of its SSH settings
        self._spec_dir = spec_dir
        self._connect_timeout = connect_timeout
        self._conn: asyncssh.SSHClientConnection | None = None
        # sshd allows 10 sessions per connection (MaxSessions): stay well below it.
        self._sessions = asyncio.Semaphore(MAX_SESSIONS)

    async def connect(self) -> NodeConnection:
        ssh = self.node.ssh
        key = resolve(self._spec_dir, ssh.key_file)
        known_hosts = resolve(self._spec_dir, ssh.known_hosts) if ssh.known_hosts else None
        if known_hosts is None:
            known_hosts = Path("~/.ssh/known_hosts").expanduser()
        if not known_hosts.exists():
            raise UnreachableError(
                f"{self.name}: known_hosts file {known_hosts} is missing; hakvm never trusts "
                "a host key on first use: add the node's key there"
            )
        self._check_key(key)
        try:
            self._conn = await asyncio.wait_for(
                asyncssh.connect(
                    ssh.host,
                    port=ssh.port,
                    username=ssh.user,
                    client_keys=[str(key)],  # a path: a -cert.pub beside it is used too
                    known_hosts=str(known_hosts),
                    # Never an ssh-agent: the spec names the one key used (unattended runs
                    # have no agent, and an agent would offer every key it holds).
                    agent_path=None,
                    keepalive_interval=15,
                    keepalive_count_max=4,
                ),
                timeout=self._connect_timeout,
            )
        except asyncssh.KeyImportError as exc:  # the certificate beside the key, say
            raise KeyFileError(f"{self.name}: cannot use the SSH key {key}: {exc}") from None
        except asyncssh.HostKeyNotVerifiable as exc:
            raise UnreachableError(
                f"{self.name}: host key of {ssh.host}:{ssh.port} does not match {known_hosts} "
                f"({exc.reason}); refusing to connect"
            ) from None
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise UnreachableError(
                f"{self.name}: cannot connect to {ssh.user}@{ssh.host}:{ssh.port}: {reason}"
            ) from None
        return self

    def _check_key(self, key: Path) -> None:
        """The spec's key file, read before any connection: KeyFileError (bad input, one
        line naming the field) if it is missing, garbage or passphrase-protected."""
        field = f"{self._field}.key_file"
        try:
            asyncssh.read_private_key(str(key))
        except OSError as exc:
            raise KeyFileError(f"{field}: cannot read {key}: {exc.strerror}") from None
        except (asyncssh.KeyImportError, ValueError) as exc:
            why = "passphrase-protected" if "assphrase" in str(exc) else f"{exc}".lower()
            raise KeyFileError(
                f"{field}: {key} is not a usable private key ({why}); hakvm needs an OpenSSH "
                "private key without a passphrase (it never uses an ssh-agent)"
            ) from None

    async def __aenter__(self) -> NodeConnection:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._conn.wait_closed(), timeout=5)
            self._conn = None

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | bytes | None = None,
        check: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        if self._conn is None:
            raise RemoteError(f"{self.name}: not connected")
        command = quote_argv(argv, env)
        # encoding=None (output may be binary) makes asyncssh take bytes only: a str input
        # raised TypeError mid-drill (drill --heal's nft script, CI run of 2026-12-01).
        data = stdin.encode() if isinstance(stdin, str) else stdin
        try:
            async with self._sessions:
                proc = await asyncio.wait_for(
                    self._conn.run(command, input=data, check=False, encoding=None),
                    timeout=timeout,
                )
        except TimeoutError:
            message = f"{self.name}: {shlex.join(argv)} timed out after {timeout:.0f}s"
            raise RemoteError(message) from None
        except (OSError, asyncssh.Error) as exc:
            raise RemoteError(f"{self.name}: connection lost running {argv[0]}: {exc}") from None
        out = proc.stdout if isinstance(proc.stdout, bytes) else (proc.stdout or "").encode()
        err = proc.stderr if isinstance(proc.stderr, bytes) else (proc.stderr or "").encode()
        result = Result(
            tuple(argv),
            proc.exit_status if proc.exit_status is not None else 255,
            out.decode("utf-8", "replace"),
            # stderr is only ever shown (errors, reports): a tool repeating a secret there
            # (drbdadm's failed drbdsetup command line) is redacted as it arrives.
            redact(err.decode("utf-8", "replace")),
        )
        if check and not result.ok:
            raise command_failed(self.name, shlex.join(argv), result)
        return result

    async def stream(
        self,
        argv: Sequence[str],
        on_line: Callable[[str], None],
        *,
        timeout: float,
        stop: asyncio.Event | None = None,
        env: Mapping[str, str] | None = None,
    ) -> StreamResult:
        """Run `argv`, calling `on_line` with each stdout line (no newline) as it arrives.

        Returns when the command exits, when `stop` is set or `timeout` (counted from the
        start) passes, both of which terminate it, or when the connection is lost. A lost
        connection is a result, never an exception: this is used while a node crashes. Only
        an exception raised by `on_line` propagates. An unterminated last line is dropped:
        it may be a line cut in half by the connection loss."""
        if self._conn is None:
            return StreamResult(tuple(argv), 0, None, "lost", reason="not connected")
        async with self._sessions:
            deadline = asyncio.get_running_loop().time() + timeout
            try:
                proc = await asyncio.wait_for(
                    self._conn.create_process(
                        quote_argv(argv, env), encoding="utf-8", errors="replace"
                    ),
                    timeout=timeout,
                )
            except TimeoutError:
                return StreamResult(tuple(argv), 0, None, "timeout", reason="did not start")
            except (OSError, asyncssh.Error) as exc:
                return StreamResult(tuple(argv), 0, None, "lost", reason=_reason(exc))
            try:
                return await _follow(proc, tuple(argv), on_line, deadline, stop)
            finally:
                proc.close()

    async def write_file(
        self, path: str, content: bytes, mode: int, owner: str = "root", group: str = "root"
    ) -> None:
        """Atomically replace `path` (WRITE_SCRIPT: temp file, fsync, rename, fsync of the
        directory); mode set before data lands, so a secret is never briefly world-readable.

        Every file hakvm puts on a node comes through here: content holding a render
        placeholder where a secret belongs is refused before anything is sent."""
        if contains_placeholder(content):
            raise RemoteError(
                f"{self.name}: refusing to write {path}: it holds a placeholder "
                f"({PLACEHOLDER}...) where a secret belongs; nothing was written"
            )
        await self.run(
            ["sh", "-c", WRITE_SCRIPT, "sh", path, f"{mode:04o}", f"{owner}:{group}"],
            stdin=content,
            check=True,
        )


def command_failed(where: str, command: str, result: Result) -> RemoteError:
    """One line: where, the command, and the last line it printed (or its exit code), after
    the reason when a wrapper's last line hides it: drbdadm ends with "Command 'drbdsetup-84
    attach ...' terminated with exit code 10" after the kernel's "Failure: (NNN) ..." line."""
    detail = [line.strip() for line in (result.stderr or result.stdout).splitlines()]
    detail = [line for line in detail if line]
    last = detail[-1] if detail else f"exit {result.returncode}"
    reason = next((line for line in reversed(detail[:-1]) if _REASON.search(line)), None)
    return RemoteError(f"{where}: {command} failed: {f'{reason}; ' if reason else ''}{last}")


_REASON = re.compile(r"\b(Failure|error|Error|ERROR)\b")


# $1 path, $2 mode, $3 owner:group, stdin the content. The data and the rename are each on
# disk before the next step (a crash leaves the old file or the new one, never an empty
# one); a temp file left by a failure is removed.
WRITE_SCRIPT = (
    'set -e; umask 077; d=$(dirname "$1"); mkdir -p "$d"; '
    't=$(mktemp "$1.hakvm.XXXXXX"); trap \'rm -f "$t"\' EXIT; cat > "$t"; chmod "$2" "$t"; '
    'chown "$3" "$t"; sync "$t"; mv -f "$t" "$1"; sync "$d"'
)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__


async def _follow(
    proc: asyncssh.SSHClientProcess[str],
    argv: tuple[str, ...],
    on_line: Callable[[str], None],
    deadline: float,
    stop: asyncio.Event | None,
) -> StreamResult:
    """The body of `stream` once the remote process runs."""
    lines = 0
    stderr: list[str] = []

    def seen(line: str) -> None:
        nonlocal lines
        lines += 1
        on_line(line)

    reader = asyncio.create_task(_drain(proc, seen, stderr))
    stopper = asyncio.create_task(stop.wait()) if stop is not None else None
    ended: Literal["exit", "stopped", "timeout", "lost"] = "exit"
    try:
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        waits = {reader, stopper} if stopper is not None else {reader}
        await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        if not reader.done():
            ended = "stopped" if stop is not None and stop.is_set() else "timeout"
            # Its stdin closed and SIGTERM, then a grace period in which its last lines still
            # count; a node that no longer answers does not get to hold us longer than that.
            # The end of stdin is what stops a command that reads it (the node lock's shell):
            # Debian 12's sshd did not deliver the signal (no exit in 8 s; after stdin closed,
            # 0.05 s: 2026-12-04), so each lock's release waited the whole grace.
            with contextlib.suppress(OSError, asyncssh.Error):
                proc.stdin.write_eof()
            with contextlib.suppress(OSError):
                proc.terminate()
            await asyncio.wait({reader}, timeout=STOP_GRACE_S)
    finally:
        for task in (reader, stopper):
            if task is not None:
                task.cancel()
        await asyncio.gather(reader, *([stopper] if stopper else []), return_exceptions=True)
    reason = ""
    if not reader.cancelled() and (exc := reader.exception()) is not None:
        if not isinstance(exc, OSError | asyncssh.Error):
            raise exc
        ended, reason = "lost", _reason(exc)
    elif not reader.cancelled() and proc.returncode is None:
        ended, reason = "lost", "channel closed without an exit status"
    tail = redact("".join(stderr)[-STDERR_KEEP:])
    return StreamResult(argv, lines, proc.returncode, ended, tail, reason)


async def _drain(
    proc: asyncssh.SSHClientProcess[str], seen: Callable[[str], None], stderr: list[str]
) -> None:
    """Pass on stdout lines while keeping stderr's tail (read too, so that it cannot fill
    the channel window and stall stdout), then wait for the channel to close."""

    async def collect() -> None:
        while chunk := await proc.stderr.read(STDERR_KEEP):
            stderr[:] = ["".join([*stderr, chunk])[-STDERR_KEEP:]]

    errors = asyncio.create_task(collect())
    try:
        while (line := await proc.stdout.readline()).endswith("\n"):
            seen(line.rstrip("\r\n"))
        await errors
    finally:
        errors.cancel()
        await asyncio.gather(errors, return_exceptions=True)
    await proc.wait_closed()
