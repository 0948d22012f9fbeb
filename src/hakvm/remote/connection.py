"""SSH to the nodes with asyncssh: key auth, host keys checked against known_hosts, never
auto-accepted. Commands are argv lists, quoted for the remote shell here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import asyncssh

from hakvm.spec.models import Node
from hakvm.spec.validate import resolve

DEFAULT_TIMEOUT = 600.0
MAX_SESSIONS = 6


class RemoteError(Exception):
    """A node could not be reached, or a command on it failed; one line, names the node."""


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def quote_argv(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """One remote command line from an argv list: every element quoted, no shell syntax."""
    prefix = ["env", *(f"{k}={v}" for k, v in sorted((env or {}).items()))] if env else []
    return shlex.join([*prefix, *argv])


class NodeConnection:
    """One node's SSH connection. `run` never raises on a non-zero exit unless `check`."""

    def __init__(self, node: Node, spec_dir: Path, connect_timeout: float = 20.0) -> None:
        self.node = node
        self.name = node.name
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
            raise RemoteError(
                f"{self.name}: known_hosts file {known_hosts} is missing; hakvm never trusts "
                "a host key on first use: add the node's key there"
            )
        try:
            self._conn = await asyncio.wait_for(
                asyncssh.connect(
                    ssh.host,
                    port=ssh.port,
                    username=ssh.user,
                    client_keys=[str(key)],
                    known_hosts=str(known_hosts),
                    agent_path=None,
                    keepalive_interval=15,
                    keepalive_count_max=4,
                ),
                timeout=self._connect_timeout,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise RemoteError(
                f"{self.name}: host key of {ssh.host}:{ssh.port} does not match {known_hosts} "
                f"({exc.reason}); refusing to connect"
            ) from None
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise RemoteError(
                f"{self.name}: cannot connect to {ssh.user}@{ssh.host}:{ssh.port}: {reason}"
            ) from None
        return self

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
        try:
            async with self._sessions:
                proc = await asyncio.wait_for(
                    self._conn.run(command, input=stdin, check=False, encoding=None),
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
            err.decode("utf-8", "replace"),
        )
        if check and not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            last = detail[-1] if detail else f"exit {result.returncode}"
            raise RemoteError(f"{self.name}: {shlex.join(argv)} failed: {last}")
        return result

    async def write_file(
        self, path: str, content: bytes, mode: int, owner: str = "root", group: str = "root"
    ) -> None:
        """Atomically replace `path` (temp file + rename); mode set before data lands, so a
        secret is never briefly world-readable."""
        script = (
            'set -e; umask 077; d=$(dirname "$1"); mkdir -p "$d"; '
            't=$(mktemp "$1.hakvm.XXXXXX"); cat > "$t"; chmod "$2" "$t"; '
            'chown "$3" "$t"; mv -f "$t" "$1"'
        )
        await self.run(
            ["sh", "-c", script, "sh", path, f"{mode:04o}", f"{owner}:{group}"],
            stdin=content,
            check=True,
        )


async def connect_all(nodes: Sequence[Node], spec_dir: Path) -> list[NodeConnection]:
    """Connect to both nodes in parallel; on failure close whatever opened and raise."""
    conns = [NodeConnection(node, spec_dir) for node in nodes]
    results = await asyncio.gather(*(c.connect() for c in conns), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await asyncio.gather(*(c.close() for c in conns))
        raise RemoteError("; ".join(str(e) for e in errors))
    return conns
