"""The status probes: one batch of read-only commands per node (Pacemaker's state, corosync's
links, DRBD, the bonds, the clock), the answers as they came, and their parsers.

`hakvm doctor` asks every node everything on fresh connections (`ask_all`, timed for its
clock check); `hakvm status` asks on connections a session keeps (`reach`, `ask_kept`, so a
`--watch` refresh logs in no more), and Pacemaker's state of one node only (`node_commands`);
`migrate` asks a target the DRBD part. Every parser is a pure function of recorded output.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from hakvm.remote import drbd, pacemaker, quorum
from hakvm.remote.connection import NodeConnection, Remote, RemoteError
from hakvm.remote.drbd import DrbdResource
from hakvm.remote.facts import parse_text_batch, text_batch_argv
from hakvm.remote.session import Session

BATCH_TIMEOUT_S = 120.0


class LinkStatus(BaseModel):
    link: int = Field(description="knet link number (corosync ringN_addr)")
    address: str = Field(description="this node's address on the link")
    peer_connected: bool = Field(description="the other node is reachable over this link")


class BondStatus(BaseModel):
    name: str
    members_up: list[str]
    members_down: list[str]


@dataclass
class NodeAnswer:
    """What one node said (or why it said nothing)."""

    name: str
    raw: dict[str, tuple[int, bytes]] | None = None
    error: str | None = None

    def text(self, key: str) -> str:
        if self.raw is None:
            return ""
        rc, out = self.raw.get(key, (1, b""))
        return out.decode("utf-8", "replace") if rc == 0 else ""

    def output(self, key: str) -> str:
        """What the command printed, whatever its exit code (corosync-quorumtool exits 2
        when not quorate, and says so)."""
        _, out = (self.raw or {}).get(key, (1, b""))
        return out.decode("utf-8", "replace")


def qdevice_vote(answer: NodeAnswer) -> tuple[bool, bool, str | None]:
    """(connected to qnetd, casting the vote, qdevice's state) of the node that answered
    (`node_commands` with `qdevice`)."""
    return quorum.local_vote(answer.output("quorumtool"), answer.output("qdevice_tool"))


def quorum_view(answer: NodeAnswer) -> quorum.QuorumView | None:
    """The node's votequorum view (`node_commands` with `qdevice`); None without one."""
    return quorum.parse_quorumtool(answer.output("quorumtool"))


@dataclass
class TimedAnswer:
    """An answer and the local wall-clock time just before and after its batch ran."""

    answer: NodeAnswer
    sent: float = 0.0
    received: float = 0.0


def status_commands(bonds: list[str], qdevice: bool = False) -> list[tuple[str, list[str]]]:
    """doctor's batch: the clock, then everything `node_commands` asks (crm_mon included)."""
    return [
        # First, so it is read as close as possible to the moment the batch starts (doctor
        # bounds each node's clock offset by the batch's round trip).
        ("clock", ["date", "+%s.%N"]),
        *node_commands(bonds, view=True, qdevice=qdevice),
    ]


def node_commands(
    bonds: list[str], *, view: bool, qdevice: bool = False
) -> list[tuple[str, list[str]]]:
    """status's batch for one node: Pacemaker's state (`view`: only on the node whose view
    is read), corosync's links, DRBD, the bonds, and (`qdevice`: the spec has a quorum
    device) the device's vote and connection."""
    commands = [pacemaker.status_command()] if view else []
    commands += [("cfgtool", ["corosync-cfgtool", "-s"]), *drbd.state_commands()]
    commands += [(f"bond_{b}", ["cat", f"/proc/net/bonding/{b}"]) for b in bonds]
    return commands + (quorum.status_commands() if qdevice else [])


def view_command() -> list[tuple[str, list[str]]]:
    """A batch of Pacemaker's state alone (a node's own view, asked after its other probes)."""
    return [pacemaker.status_command()]


def bonds_of(node: Any) -> list[str]:
    """The bonds a spec node declares (probed as /proc/net/bonding/NAME)."""
    interfaces = getattr(node, "interfaces", None)
    return sorted(getattr(interfaces, "bonds", {}) or {})


async def query(
    node: Remote, commands: list[tuple[str, list[str]]], timeout: float = BATCH_TIMEOUT_S
) -> NodeAnswer:
    """Run `commands` as one batch on a connected node; RemoteError if it fails."""
    marker = secrets.token_hex(16)
    result = await node.run(text_batch_argv(commands, marker), timeout=timeout, check=True)
    try:
        return NodeAnswer(node.name, parse_text_batch(result.stdout, marker))
    except ValueError as exc:  # a garbled batch
        raise RemoteError(f"{node.name}: unreadable answer: {exc}") from None


async def ask_all(session: Session) -> dict[str, TimedAnswer]:
    """Every node of the session asked the status probes at once, each on a connection of
    its own (closed after)."""
    nodes = session.spec.nodes
    qdevice = session.spec.quorum_device is not None
    answers = await asyncio.gather(
        *(ask(session.fresh(n.name), status_commands(bonds_of(n), qdevice)) for n in nodes)
    )
    return {a.answer.name: a for a in answers}


async def ask(conn: NodeConnection, commands: list[tuple[str, list[str]]]) -> TimedAnswer:
    """Connect, run the batch, close: an unreachable node is an answer too (with its error),
    timed for doctor's clock check."""
    sent = received = time.time()
    try:
        await conn.connect()
        sent = time.time()
        answer = await query(conn, commands)
        received = time.time()
        return TimedAnswer(answer, sent, received)
    except RemoteError as exc:
        return TimedAnswer(NodeAnswer(conn.name, error=str(exc)), sent, received)
    finally:
        await conn.close()


async def reach(session: Session, name: str) -> str | None:
    """Connect to `name` on the session, kept there for the next batches; None, or why it
    cannot be reached."""
    try:
        await session.conn(name)
    except RemoteError as exc:
        return str(exc)
    return None


async def ask_kept(
    session: Session,
    name: str,
    commands: list[tuple[str, list[str]]],
    timeout: float = BATCH_TIMEOUT_S,
) -> NodeAnswer:
    """One batch on `name`'s kept connection (`reach` made it). A failure is an answer too;
    the connection is dropped, so the next `reach` connects again (a node that rebooted)."""
    try:
        return await query(session.connected(name), commands, timeout)
    except RemoteError as exc:
        await session.drop(name)
        return NodeAnswer(name, error=str(exc))


# --- parsers (pure) ----------------------------------------------------------------------------

_LINK_RE = re.compile(r"^LINK ID (\d+)")
_ADDR_RE = re.compile(r"^\s*addr\s*=\s*(\S+)")
_PEER_RE = re.compile(r"^\s*nodeid:\s*(\d+):\s*(\S+)")


def parse_cfgtool(text: str, local_nodeid: int | None = None) -> list[LinkStatus]:
    """`corosync-cfgtool -s` (corosync 3, knet): per link, this node's address and whether
    each other node is connected over it."""
    links: list[LinkStatus] = []
    link: int | None = None
    address = ""
    peers: dict[int, str] = {}

    def flush() -> None:
        if link is not None:
            others = {n: s for n, s in peers.items() if s != "localhost" and n != local_nodeid}
            connected = bool(others) and all(s == "connected" for s in others.values())
            links.append(LinkStatus(link=link, address=address, peer_connected=connected))

    for line in text.splitlines():
        if m := _LINK_RE.match(line):
            flush()
            link, address, peers = int(m[1]), "", {}
        elif (m := _ADDR_RE.match(line)) and link is not None:
            address = m[1]
        elif (m := _PEER_RE.match(line)) and link is not None:
            peers[int(m[1])] = m[2]
    flush()
    return links


def parse_bonding(name: str, text: str) -> BondStatus:
    """/proc/net/bonding/NAME: which members report MII up."""
    up: list[str] = []
    down: list[str] = []
    member: str | None = None
    for line in text.splitlines():
        if line.startswith("Slave Interface:"):
            member = line.split(":", 1)[1].strip()
        elif line.startswith("MII Status:") and member is not None:
            (up if line.split(":", 1)[1].strip() == "up" else down).append(member)
            member = None
    return BondStatus(name=name, members_up=up, members_down=down)


def drbd_of(answer: NodeAnswer) -> dict[str, DrbdResource]:
    return drbd.state_from(answer.text)
