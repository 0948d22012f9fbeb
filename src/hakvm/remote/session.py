"""A session: one spec's two nodes, and the only place that builds a connection to them.

It knows the spec, the directory its file names are relative to, each node's connection
(made on demand and kept, or all at once for a deploy) and, for any node, the other one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from hakvm.errors import InputError
from hakvm.remote.connection import (
    Endpoint,
    NodeConnection,
    Remote,
    RemoteError,
    UnreachableError,
)
from hakvm.remote.qnetd import STANDARD, LocalUser, QnetdCa
from hakvm.spec.models import ClusterSpec, Node, SshTarget
from hakvm.spec.paths import resolve, spec_dir

CONNECT_TIMEOUT_S = 20.0  # an SSH handshake on a loaded emulated node can take 10 s


class UnknownNodeError(InputError):
    """A node name that is not in the spec."""


@dataclass(frozen=True)
class Target:
    """A machine that is not a spec's node: one `hakvm init` reaches before any spec names
    it, or the quorum device's qnetd host (a third machine): a name and how to log in."""

    name: str
    ssh: SshTarget


async def connect_all(nodes: Sequence[Endpoint], directory: Path) -> list[NodeConnection]:
    """Connect to every node in parallel; on failure close whatever opened and raise."""
    conns = [NodeConnection(node, directory, CONNECT_TIMEOUT_S) for node in nodes]
    results = await asyncio.gather(*(c.connect() for c in conns), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await asyncio.gather(*(c.close() for c in conns))
        message = "; ".join(str(e) for e in errors)
        kind = type(errors[0])
        if all(type(e) is kind for e in errors) and issubclass(kind, RemoteError):
            raise kind(message)  # one kind, one exit code (an unusable key file: 2)
        if all(isinstance(e, UnreachableError) for e in errors):
            raise UnreachableError(message)
        raise RemoteError(message)
    return conns


class Session:
    """The nodes of `spec` (read from `spec_path`), connected on demand.

    `connect_timeout` is for connections made one at a time (a drill gives a loaded
    survivor longer); `connect_all` connects both with the default."""

    def __init__(
        self, spec: ClusterSpec, spec_path: Path, *, connect_timeout: float = CONNECT_TIMEOUT_S
    ) -> None:
        self.spec = spec
        self.spec_path = spec_path
        self.spec_dir = spec_dir(spec_path)
        self.connect_timeout = connect_timeout
        self.conns: dict[str, NodeConnection] = {}
        self.qnetd_conn: NodeConnection | None = None

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.spec.nodes]

    def node(self, name: str) -> Node:
        try:
            return self.spec.node(name)
        except KeyError:
            known = ", ".join(self.names)
            raise UnknownNodeError(
                f"node: no node named {name!r} in the spec (known: {known})"
            ) from None

    def other(self, name: str) -> str:
        """The other node of the two."""
        self.node(name)
        return next(n for n in self.names if n != name)

    def fresh(self, name: str) -> NodeConnection:
        """A new connection to `name`, not yet connected and not kept: the caller closes it."""
        return NodeConnection(self.node(name), self.spec_dir, self.connect_timeout)

    async def conn(self, name: str) -> NodeConnection:
        """`name`'s connection, connected now if it is not yet."""
        if name not in self.conns:
            self.conns[name] = await self.fresh(name).connect()
        return self.conns[name]

    def connected(self, name: str) -> NodeConnection:
        """`name`'s connection, which `conn` or `connect_all` opened before."""
        if name not in self.conns:
            raise RemoteError(f"{name}: not connected")
        return self.conns[name]

    async def drop(self, name: str) -> None:
        """Close and forget `name`'s connection (a crashed node's, say)."""
        conn = self.conns.pop(name, None)
        if conn is not None:
            await conn.close()

    async def connect_all(self) -> list[NodeConnection]:
        """Both nodes, connected in parallel, in the spec's order; RemoteError naming every
        node that could not be reached."""
        missing = [n for n in self.spec.nodes if n.name not in self.conns]
        if missing:
            for conn in await connect_all(missing, self.spec_dir):
                self.conns[conn.name] = conn
        return [self.conns[name] for name in self.names]

    async def probe(self, name: str) -> None:
        """A fresh SSH session to `name` gets in and runs a command (RemoteError if not)."""
        conn = self.fresh(name)
        try:
            await conn.connect()
            await conn.run(["true"], check=True)
        finally:
            await conn.close()

    async def qnetd(self) -> tuple[Remote, QnetdCa]:
        """The quorum device's qnetd host, and where its CA is: over SSH (connected now, as
        root: a standard qnetd host), or this machine as the user qnetd runs as (the lab)."""
        qd = self.spec.quorum_device
        if qd is None:
            raise InputError("quorum_device: the spec has none")
        if qd.local is not None:
            database = os.path.realpath(resolve(self.spec_dir, qd.local.nss_db))
            return LocalUser(qd.local.user), QnetdCa(database, wrapper=False)
        assert qd.ssh is not None  # the spec allows exactly one of local and ssh
        if self.qnetd_conn is None:
            endpoint = Target(f"qnetd host {qd.ssh.host}", qd.ssh)
            conn = NodeConnection(
                endpoint, self.spec_dir, self.connect_timeout, field="quorum_device.ssh"
            )
            self.qnetd_conn = await conn.connect()
        return self.qnetd_conn, STANDARD

    async def close(self) -> None:
        await asyncio.gather(*(conn.close() for conn in self.conns.values()))
        self.conns.clear()
        if self.qnetd_conn is not None:
            await self.qnetd_conn.close()
            self.qnetd_conn = None

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
