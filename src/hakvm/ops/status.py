"""`hakvm status`: one honest view of the cluster, read natively from both nodes at once.

Each node answers one remote shell (the facts batch runner) with Pacemaker's own state
(`crm_mon --output-as=xml`), corosync's link view (`corosync-cfgtool -s`), DRBD's state and
its bonds. `assess` turns those raw answers into a `StatusReport` (pure: unit tests replay
recorded output). Health, for monitoring: 0 healthy, 1 degraded (still serving, redundancy
lost), 2 critical (a VM down, split-brain risk, no fencing, no quorum).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from hakvm.remote.connection import NodeConnection, RemoteError
from hakvm.remote.facts import (
    DrbdResource,
    batch_argv,
    parse_batch,
    parse_drbdsetup_json,
    parse_proc_drbd,
)
from hakvm.remote.pacemaker import ClusterState, parse_crm_mon, status_command
from hakvm.render.drbd import resync_attribute
from hakvm.spec.models import ClusterSpec

CONNECT_TIMEOUT_S = 20  # an SSH handshake on a loaded emulated node can take 10 s


class Health(IntEnum):
    HEALTHY = 0
    DEGRADED = 1
    CRITICAL = 2


# --- the report (its JSON Schema is `hakvm status --schema`) -----------------------------------


class LinkStatus(BaseModel):
    link: int = Field(description="knet link number (corosync ringN_addr)")
    address: str = Field(description="this node's address on the link")
    peer_connected: bool = Field(description="the other node is reachable over this link")


class BondStatus(BaseModel):
    name: str
    members_up: list[str]
    members_down: list[str]


class NodeStatus(BaseModel):
    name: str
    reachable: bool = Field(description="hakvm reached it over SSH")
    state: Literal["online", "standby", "maintenance", "offline", "unclean", "unknown"]
    is_dc: bool = False
    quorate: bool | None = Field(None, description="its own partition has quorum")
    links: list[LinkStatus] = []
    bonds: list[BondStatus] = []
    error: str | None = None


class DrbdStatus(BaseModel):
    node: str
    connection: str
    role: str
    disk: str
    peer_disk: str
    sync_percent: float | None = None
    sync_eta_s: int | None = None


class VmStatus(BaseModel):
    name: str
    state: Literal["running", "stopped", "failed", "multiple", "unknown"]
    running_on: list[str]
    preferred_node: str | None
    drbd: list[DrbdStatus] = []


class FenceEventStatus(BaseModel):
    target: str
    action: str
    status: str
    delegate: str
    completed: str


class StatusReport(BaseModel):
    cluster: str
    health: Literal["healthy", "degraded", "critical"]
    exit_code: int = Field(description="0 healthy, 1 degraded, 2 critical")
    problems: list[str] = Field(description="why the health is not 'healthy', worst first")
    seen_from: str | None = Field(description="node whose crm_mon the report uses")
    quorate: bool | None
    stonith_enabled: bool | None
    nodes: list[NodeStatus]
    vms: list[VmStatus]
    failed_actions: list[str]
    last_fencing: FenceEventStatus | None


# --- raw answers -------------------------------------------------------------------------------


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


def status_commands(bonds: list[str]) -> list[tuple[str, list[str]]]:
    commands = [
        # First, so it is read as close as possible to the moment the batch starts (doctor
        # bounds each node's clock offset by the batch's round trip).
        ("clock", ["date", "+%s.%N"]),
        status_command(),
        ("cfgtool", ["corosync-cfgtool", "-s"]),
        ("proc_drbd", ["cat", "/proc/drbd"]),
        ("drbd_json", ["drbdsetup", "status", "--json"]),
        ("drbd_names", ["drbdadm", "sh-resources"]),
        ("drbd_minors", ["drbdadm", "sh-minor", "all"]),
    ]
    commands += [(f"bond_{b}", ["cat", f"/proc/net/bonding/{b}"]) for b in bonds]
    return commands


async def _ask(conn: NodeConnection, bonds: list[str]) -> NodeAnswer:
    try:
        await conn.connect()
        result = await conn.run(batch_argv(status_commands(bonds)), timeout=120, check=True)
        return NodeAnswer(conn.name, parse_batch(result.stdout))
    except (RemoteError, ValueError) as exc:
        return NodeAnswer(conn.name, error=str(exc))
    finally:
        await conn.close()


async def collect(spec: ClusterSpec, spec_path: Path) -> dict[str, NodeAnswer]:
    """Ask both nodes at once; an unreachable node is an answer too."""
    spec_dir = spec_path.resolve().parent
    answers = await asyncio.gather(
        *(
            _ask(NodeConnection(n, spec_dir, connect_timeout=CONNECT_TIMEOUT_S), _bonds(n))
            for n in spec.nodes
        )
    )
    return {a.name: a for a in answers}


def _bonds(node: object) -> list[str]:
    interfaces = getattr(node, "interfaces", None)
    return sorted(getattr(interfaces, "bonds", {}) or {})


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
    names = answer.text("drbd_names").split()
    minors = [int(m) for m in answer.text("drbd_minors").split() if m.isdigit()]
    by_minor = dict(zip(minors, names, strict=False))
    found = parse_proc_drbd(answer.text("proc_drbd"), by_minor)
    if not found and answer.text("drbd_json").strip().startswith("["):
        found = parse_drbdsetup_json(answer.text("drbd_json"))
    return found


# --- assessment (pure) -------------------------------------------------------------------------


def _pick_view(answers: Mapping[str, NodeAnswer]) -> tuple[str | None, ClusterState | None]:
    """The crm_mon to trust: a quorate partition's, else any that parsed."""
    views: list[tuple[str, ClusterState]] = []
    for name, answer in answers.items():
        text = answer.text("crm_mon")
        if text.strip():
            try:
                views.append((name, parse_crm_mon(text)))
            except ValueError:
                continue
    for name, state in views:
        if state.quorate:
            return name, state
    return views[0] if views else (None, None)


def _node_state(name: str, state: ClusterState | None) -> str:
    node = state.nodes.get(name) if state else None
    if node is None:
        return "unknown"
    if node.unclean:
        return "unclean"
    if not node.online:
        return "offline"
    if node.maintenance:
        return "maintenance"
    if node.standby:
        return "standby"
    return "online"


def assess(spec: ClusterSpec, answers: Mapping[str, NodeAnswer]) -> StatusReport:
    critical: list[str] = []
    degraded: list[str] = []
    seen_from, state = _pick_view(answers)
    nodeids = {n.name: i for i, n in enumerate(spec.nodes, start=1)}
    quorate_views: list[str] = []

    nodes: list[NodeStatus] = []
    for node in spec.nodes:
        answer = answers.get(node.name, NodeAnswer(node.name, error="not asked"))
        own: ClusterState | None = None
        if answer.text("crm_mon").strip():
            try:
                own = parse_crm_mon(answer.text("crm_mon"))
            except ValueError:
                own = None
        if own is not None and own.quorate and own.dc:
            quorate_views.append(f"{node.name} (DC {own.dc})")
        links = parse_cfgtool(answer.text("cfgtool"), nodeids[node.name])
        bonds = [
            parse_bonding(b, answer.text(f"bond_{b}"))
            for b in _bonds(node)
            if answer.text(f"bond_{b}")
        ]
        status = NodeStatus(
            name=node.name,
            reachable=answer.error is None,
            state=_node_state(node.name, state),
            is_dc=bool(state and state.dc == node.name),
            quorate=own.quorate if own else None,
            links=links,
            bonds=bonds,
            error=answer.error,
        )
        nodes.append(status)
        if answer.error is not None:
            degraded.append(f"{node.name} unreachable over SSH: {answer.error}")
        if status.state in ("offline", "unclean"):
            degraded.append(f"{node.name} is {status.state} in the cluster")
        elif status.state in ("standby", "maintenance"):
            degraded.append(f"{node.name} is in {status.state}: it takes no VMs")
        if status.state == "online":
            for link in links:
                if not link.peer_connected:
                    degraded.append(f"{node.name}: knet link {link.link} ({link.address}) down")
            for bond in bonds:
                if bond.members_down:
                    down = ", ".join(bond.members_down)
                    degraded.append(f"{node.name}: {bond.name} member(s) down: {down}")

    if len(quorate_views) > 1 and len({v.split("DC ")[1] for v in quorate_views}) > 1:
        critical.append(
            "split partition: two nodes each claim a quorate DC: " + ", ".join(quorate_views)
        )
    if state is None:
        critical.append("no node answered with Pacemaker's state (crm_mon)")
    else:
        if not state.quorate:
            critical.append(f"the partition seen from {seen_from} has no quorum")
        if not state.stonith_enabled:
            critical.append("fencing is disabled (stonith-enabled=false): split-brain risk")
        if state.maintenance_mode:
            degraded.append("cluster-wide maintenance mode: Pacemaker is not managing VMs")

    drbd_by_node = {name: drbd_of(a) for name, a in answers.items() if a.raw is not None}
    vms: list[VmStatus] = []
    for vm in spec.vms:
        res = state.resources.get(vm.name) if state else None
        running = list(res.active_on) if res else []
        if state is None:
            vm_state = "unknown"
        elif len(running) > 1:
            vm_state = "multiple"
            critical.append(f"{vm.name} is active on {', '.join(running)} at once")
        elif res is not None and res.failed:
            vm_state = "failed"
            critical.append(f"{vm.name} failed")
        elif running:
            vm_state = "running"
        else:
            vm_state = "stopped"
            if vm.autostart:
                critical.append(f"{vm.name} is not running")
        drbd: list[DrbdStatus] = []
        for node_name, resources in sorted(drbd_by_node.items()):
            r = resources.get(vm.name)
            if r is None:
                degraded.append(f"{vm.name}: no DRBD resource up on {node_name}")
                continue
            drbd.append(
                DrbdStatus(
                    node=node_name,
                    connection=r.connection,
                    role=r.role,
                    disk=r.disk,
                    peer_disk=r.peer_disk,
                    sync_percent=r.sync_percent,
                    sync_eta_s=r.sync_eta_s,
                )
            )
            if r.connection == "StandAlone":
                critical.append(
                    f"{vm.name}: DRBD StandAlone on {node_name} (split-brain or refused peer): "
                    "replication stopped"
                )
            elif r.disk != "UpToDate" and r.role == "Primary":
                critical.append(f"{vm.name}: Primary on {node_name} with disk {r.disk}")
            elif r.connection != "Connected" or r.disk != "UpToDate" or r.peer_disk != "UpToDate":
                what = f"{r.connection} {r.disk}/{r.peer_disk}"
                if r.sync_percent is not None:
                    what += f", {r.sync_percent:.1f}% synced"
                degraded.append(f"{vm.name}: DRBD on {node_name} is {what}")
            flag = resync_attribute(vm.name)
            if state and flag in state.attributes.get(node_name, {}) and r.disk == "UpToDate":
                # Left by a resync that ended some other way than finishing (DRBD clears it
                # then): the CIB keeps the VM off this node until it goes.
                degraded.append(
                    f"{vm.name} cannot fail over to {node_name}: stale {flag} there with DRBD "
                    f"UpToDate (attrd_updater --node {node_name} --name {flag} --delete)"
                )
        vms.append(
            VmStatus(
                name=vm.name,
                state=vm_state,
                running_on=running,
                preferred_node=vm.preferred_node,
                drbd=drbd,
            )
        )

    failed_actions = [f.describe() for f in state.failures] if state else []
    if failed_actions:
        degraded.append(f"{len(failed_actions)} failed action(s): {failed_actions[0]}")
    last = None
    if state and state.fencing:
        event = max(state.fencing, key=lambda e: e.completed)
        last = FenceEventStatus(
            target=event.target,
            action=event.action,
            status=event.status,
            delegate=event.delegate,
            completed=event.completed,
        )
    reachable = [a for a in answers.values() if a.error is None]
    if not reachable:
        critical.insert(0, "no node reachable over SSH")
    health = Health.CRITICAL if critical else Health.DEGRADED if degraded else Health.HEALTHY
    return StatusReport(
        cluster=spec.cluster.name,
        health=health.name.lower(),
        exit_code=int(health),
        problems=_dedupe(critical + degraded),
        seen_from=seen_from,
        quorate=state.quorate if state else None,
        stonith_enabled=state.stonith_enabled if state else None,
        nodes=nodes,
        vms=vms,
        failed_actions=failed_actions,
        last_fencing=last,
    )


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


async def status(spec: ClusterSpec, spec_path: Path) -> StatusReport:
    return assess(spec, await collect(spec, spec_path))
