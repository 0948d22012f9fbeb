"""`hakvm status`: one honest view of the cluster, read natively from both nodes at once.

Each node answers one remote shell (the facts batch runner) with corosync's link view
(`corosync-cfgtool -s`), DRBD's state and its bonds; one of them also with Pacemaker's own
state (`crm_mon --output-as=xml`), and the other too only when that view does not cover it
(see `gather`). `assess` turns those raw answers into a `StatusReport` (pure: unit tests
replay recorded output). Health, for monitoring: 0 healthy, 1 degraded (still serving, redundancy
lost), 2 critical (a VM down, split-brain risk, no fencing, no quorum), 3 unknown (no node
answered).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from hakvm.errors import MonitorCode
from hakvm.remote.drbd import DrbdResource
from hakvm.remote.pacemaker import ClusterState, parse_crm_mon
from hakvm.remote.probes import (
    BATCH_TIMEOUT_S,
    BondStatus,
    LinkStatus,
    NodeAnswer,
    ask_kept,
    bonds_of,
    drbd_of,
    node_commands,
    parse_bonding,
    parse_cfgtool,
    qdevice_vote,
    quorum_view,
    reach,
    view_command,
)
from hakvm.remote.session import Session
from hakvm.spec.derive import resync_attribute
from hakvm.spec.models import ClusterSpec, FenceAction, Node, Vm

VmState = Literal["running", "stopped", "failed", "multiple", "unknown"]

# --- the report (its JSON Schema is `hakvm status --schema`) -----------------------------------


class QdeviceStatus(BaseModel):
    connected: bool = Field(description="its corosync-qdevice is connected to qnetd")
    vote_cast: bool = Field(
        description="its corosync-qdevice casts qnetd's vote (corosync-quorumtool -s: V)"
    )
    state: str | None = Field(
        description="corosync-qdevice-tool -s: Connected, Connecting, Connect failed, "
        "Disconnected; null: corosync-qdevice did not answer"
    )


class NodeStatus(BaseModel):
    name: str
    reachable: bool = Field(description="hakvm reached it over SSH")
    state: Literal["online", "standby", "maintenance", "offline", "unclean", "unknown"]
    is_dc: bool = False
    quorate: bool | None = Field(None, description="its own partition has quorum")
    links: list[LinkStatus] = []
    bonds: list[BondStatus] = []
    qdevice: QdeviceStatus | None = Field(
        None, description="the quorum device's vote from this node (null: the spec has none)"
    )
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
    state: VmState
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
    health: Literal["healthy", "degraded", "critical", "unknown"]
    exit_code: int = Field(
        description="0 healthy, 1 degraded, 2 critical, 3 unknown (no node answered)"
    )
    problems: list[str] = Field(description="why the health is not 'healthy', worst first")
    seen_from: str | None = Field(description="node whose crm_mon the report uses")
    quorate: bool | None
    stonith_enabled: bool | None
    nodes: list[NodeStatus]
    vms: list[VmStatus]
    failed_actions: list[str]
    last_fencing: FenceEventStatus | None


async def gather(
    session: Session,
    prefer: str | None = None,
    extra: Sequence[tuple[str, list[str]]] = (),
    timeout: float = BATCH_TIMEOUT_S,
) -> dict[str, NodeAnswer]:
    """Both nodes at once, on the session's kept connections (an unreachable node is an
    answer too), each node's batch sent as soon as that node is connected. Pacemaker's state
    comes from one node: `prefer` (where the last report was seen from) if it answers, else
    the first one connected. Another node is asked its own view (one more batch) only when
    that one does not cover it: see `own_views_needed`. `extra` entries ride along in each
    node's batch (`hakvm serve`'s events); `timeout` bounds each batch (a node that died
    mid-batch holds the answer no longer)."""
    qdevice = session.spec.quorum_device is not None
    # No waiting for every login before the first batch: logins took 0.43-1.80 s on the lab
    # (2026-12-04), so the first node in runs crm_mon and the later one only its own probes.
    prefer = prefer if prefer in session.names else None
    viewer: str | None = None

    async def ask(node: Node) -> NodeAnswer:
        nonlocal viewer
        error = await reach(session, node.name)
        if error is not None:
            return NodeAnswer(node.name, error=error)
        view = viewer is None and prefer in (None, node.name)
        if view:
            viewer = node.name
        commands = node_commands(bonds_of(node), view=view, qdevice=qdevice)
        return await ask_kept(session, node.name, [*commands, *extra], timeout)

    answers = {a.name: a for a in await asyncio.gather(*(ask(n) for n in session.spec.nodes))}
    more = own_views_needed(answers, viewer)
    views = (ask_kept(session, n, view_command(), timeout) for n in more)
    for own in await asyncio.gather(*views):
        raw = answers[own.name].raw
        if raw is not None:  # asked and lost: a failed crm_mon (no view, none shared)
            raw["crm_mon"] = own.raw["crm_mon"] if own.raw else (255, b"")
    return answers


def own_views_needed(answers: Mapping[str, NodeAnswer], viewer: str | None) -> list[str]:
    """The answering nodes whose own crm_mon the report needs besides `viewer`'s: all of
    them unless that view is quorate and shows them online, i.e. in its own partition, where
    their view is the same. A node it shows offline or unclean may see otherwise (a split)."""
    view = _own_view(answers[viewer]) if viewer is not None else None
    return [
        name
        for name, answer in answers.items()
        if name != viewer
        and answer.raw is not None
        and "crm_mon" not in answer.raw
        and not (view is not None and view.quorate and _in_partition(name, view))
    ]


def _in_partition(name: str, state: ClusterState) -> bool:
    return _node_state(name, state) in ("online", "standby", "maintenance")


async def collect(spec: ClusterSpec, spec_path: Path) -> dict[str, NodeAnswer]:
    """Both nodes' answers on a session of their own (closed after)."""
    async with Session(spec, spec_path) as session:
        return await gather(session)


async def watch(
    spec: ClusterSpec, spec_path: Path, every: float, show: Callable[[StatusReport], None]
) -> None:
    """A report every `every` seconds, until cancelled (or `show` raises), all on one
    session: each node logged in to once, again only after its connection was lost."""
    async with Session(spec, spec_path) as session:
        seen_from: str | None = None
        while True:
            report = assess(spec, await gather(session, seen_from))
            show(report)
            seen_from = report.seen_from
            await asyncio.sleep(every)


# --- assessment (pure) -------------------------------------------------------------------------


def pick_view(answers: Mapping[str, NodeAnswer]) -> tuple[str | None, ClusterState | None]:
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


@dataclass
class _Problems:
    """Why the cluster is not healthy, worst first when reported."""

    critical: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)


def _own_view(answer: NodeAnswer) -> ClusterState | None:
    """The crm_mon a node gave about its own partition (None: none, or unreadable)."""
    if not answer.text("crm_mon").strip():
        return None
    try:
        return parse_crm_mon(answer.text("crm_mon"))
    except ValueError:
        return None


def _shares_view(
    name: str, answer: NodeAnswer, seen_from: str | None, state: ClusterState | None
) -> bool:
    """Not asked its own crm_mon: the view read (another node's, quorate) shows it in its
    partition (`own_views_needed`), so its own view is that one."""
    return (
        answer.raw is not None
        and "crm_mon" not in answer.raw
        and state is not None
        and state.quorate
        and seen_from not in (None, name)
        and _in_partition(name, state)
    )


def _node_status(
    node: Node,
    nodeid: int,
    answer: NodeAnswer,
    seen: tuple[str | None, ClusterState | None],
    found: _Problems,
) -> NodeStatus:
    seen_from, state = seen
    own = _own_view(answer)
    if own is None and _shares_view(node.name, answer, seen_from, state):
        own = state
    links = parse_cfgtool(answer.text("cfgtool"), nodeid)
    bonds = [
        parse_bonding(b, answer.text(f"bond_{b}"))
        for b in bonds_of(node)
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
    if answer.error is not None:
        found.degraded.append(f"{node.name} unreachable over SSH: {answer.error}")
    if status.state in ("offline", "unclean"):
        found.degraded.append(f"{node.name} is {status.state} in the cluster")
    elif status.state in ("standby", "maintenance"):
        found.degraded.append(f"{node.name} is in {status.state}: it takes no VMs")
    if status.state == "online":
        for link in links:
            if not link.peer_connected:
                found.degraded.append(f"{node.name}: knet link {link.link} ({link.address}) down")
        for bond in bonds:
            if bond.members_down:
                down = ", ".join(bond.members_down)
                found.degraded.append(f"{node.name}: {bond.name} member(s) down: {down}")
    return status


HELD_BY_WAIT_FOR_ALL = "held without quorum by wait_for_all"  # the drill looks for it


def wait_for_all_hold(spec: ClusterSpec, name: str, answer: NodeAnswer) -> tuple[str, str] | None:
    """(what, way out) when `name` has the votes for quorum but wait_for_all holds it."""
    view = quorum_view(answer)
    if view is None or not view.held_by_wait_for_all:
        return None
    peer = next(n.name for n in spec.nodes if n.name != name)  # a spec has exactly two
    what = (
        f"{name} has {view.total_votes} of {view.expected_votes} votes but is "
        f"{HELD_BY_WAIT_FOR_ALL} until it sees {peer}: it starts no VM and fences nobody"
    )
    way_out = (
        f"power {peer} on through its BMC; if it cannot come back: confirm it is off, "
        f"`stonith_admin --confirm {peer}`, then on {name} "
        "`corosync-cmapctl -s quorum.cancel_wait_for_all u8 1` (docs/qdevice.md)"
    )
    return what, way_out


def _qdevice_status(
    spec: ClusterSpec, node: NodeStatus, answer: NodeAnswer | None, found: _Problems
) -> None:
    if answer is None or answer.raw is None:
        return
    connected, voting, state = qdevice_vote(answer)
    node.qdevice = QdeviceStatus(connected=connected, vote_cast=voting, state=state)
    if (held := wait_for_all_hold(spec, node.name, answer)) is not None:
        found.critical.append("{}: {}".format(*held))
    if node.state == "online" and not (connected and voting):
        how = "casts no vote" if connected else f"is {state or 'not running'}"
        found.degraded.append(
            f"{node.name}: the quorum device {how}: a node failure now stops the survivor's VMs"
        )


def _cluster_wide(
    spec: ClusterSpec,
    answers: Mapping[str, NodeAnswer],
    seen_from: str | None,
    state: ClusterState | None,
    found: _Problems,
) -> None:
    quorate_views = [
        f"{node.name} (DC {own.dc})"
        for node in spec.nodes
        if (answer := answers.get(node.name)) is not None
        and (own := _own_view(answer)) is not None
        and own.quorate
        and own.dc
    ]
    if len(quorate_views) > 1 and len({v.split("DC ")[1] for v in quorate_views}) > 1:
        found.critical.append(
            "split partition: two nodes each claim a quorate DC: " + ", ".join(quorate_views)
        )
    if state is None:
        found.critical.append("no node answered with Pacemaker's state (crm_mon)")
        return
    if not state.quorate:
        found.critical.append(f"the partition seen from {seen_from} has no quorum")
    if not state.stonith_enabled:
        found.critical.append("fencing is disabled (stonith-enabled=false): split-brain risk")
    if state.maintenance_mode:
        found.degraded.append("cluster-wide maintenance mode: Pacemaker is not managing VMs")


def _vm_state(vm: Vm, state: ClusterState | None, found: _Problems) -> VmState:
    res = state.resources.get(vm.name) if state else None
    running = list(res.active_on) if res else []
    if state is None:
        return "unknown"
    if len(running) > 1:
        found.critical.append(f"{vm.name} is active on {', '.join(running)} at once")
        return "multiple"
    if res is not None and res.failed:
        found.critical.append(f"{vm.name} failed")
        return "failed"
    if running:
        return "running"
    if vm.autostart:
        found.critical.append(f"{vm.name} is not running")
    return "stopped"


def _drbd_status(
    vm: Vm, node: str, r: DrbdResource, state: ClusterState | None, found: _Problems
) -> DrbdStatus:
    if r.connection == "StandAlone":
        found.critical.append(
            f"{vm.name}: DRBD StandAlone on {node} (split-brain or refused peer): "
            "replication stopped"
        )
    elif r.disk != "UpToDate" and r.role == "Primary":
        found.critical.append(f"{vm.name}: Primary on {node} with disk {r.disk}")
    elif r.connection != "Connected" or r.disk != "UpToDate" or r.peer_disk != "UpToDate":
        what = f"{r.connection} {r.disk}/{r.peer_disk}"
        if r.sync_percent is not None:
            what += f", {r.sync_percent:.1f}% synced"
        found.degraded.append(f"{vm.name}: DRBD on {node} is {what}")
    flag = resync_attribute(vm.name)
    if state and flag in state.attributes.get(node, {}) and r.disk == "UpToDate":
        # Left by a resync that ended some other way than finishing (DRBD clears it then):
        # the CIB keeps the VM off this node until it goes.
        found.degraded.append(
            f"{vm.name} cannot fail over to {node}: stale {flag} there with DRBD "
            f"UpToDate (attrd_updater --node {node} --name {flag} --delete)"
        )
    return DrbdStatus(
        node=node,
        connection=r.connection,
        role=r.role,
        disk=r.disk,
        peer_disk=r.peer_disk,
        sync_percent=r.sync_percent,
        sync_eta_s=r.sync_eta_s,
    )


def _vm_status(
    vm: Vm,
    state: ClusterState | None,
    drbd_by_node: Mapping[str, dict[str, DrbdResource]],
    found: _Problems,
) -> VmStatus:
    res = state.resources.get(vm.name) if state else None
    vm_state = _vm_state(vm, state, found)
    drbd: list[DrbdStatus] = []
    for node_name, resources in sorted(drbd_by_node.items()):
        r = resources.get(vm.name)
        if r is None:
            found.degraded.append(f"{vm.name}: no DRBD resource up on {node_name}")
            continue
        drbd.append(_drbd_status(vm, node_name, r, state, found))
    return VmStatus(
        name=vm.name,
        state=vm_state,
        running_on=list(res.active_on) if res else [],
        preferred_node=vm.preferred_node,
        drbd=drbd,
    )


def assess(spec: ClusterSpec, answers: Mapping[str, NodeAnswer]) -> StatusReport:
    found = _Problems()
    seen_from, state = pick_view(answers)
    nodes = [
        _node_status(
            node, nodeid, answers.get(node.name, NodeAnswer(node.name, error="not asked")),
            (seen_from, state), found,
        )
        for nodeid, node in enumerate(spec.nodes, start=1)
    ]  # fmt: skip
    if spec.quorum_device is not None:
        for node in nodes:
            _qdevice_status(spec, node, answers.get(node.name), found)
    if spec.cluster.fencing.action is FenceAction.OFF:
        found.degraded += [
            f"{n.name} stays powered off after fencing (fencing.action off): power it on "
            f"through its BMC, or `stonith_admin --unfence {n.name}` on a node that is up"
            for n in nodes
            if n.state == "offline" and not n.reachable  # off, not a node with Pacemaker stopped
        ]
    _cluster_wide(spec, answers, seen_from, state, found)
    drbd_by_node = {name: drbd_of(a) for name, a in answers.items() if a.raw is not None}
    vms = [_vm_status(vm, state, drbd_by_node, found) for vm in spec.vms]
    failed_actions = [f.describe() for f in state.failures] if state else []
    if failed_actions:
        found.degraded.append(f"{len(failed_actions)} failed action(s): {failed_actions[0]}")
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
    health = (
        MonitorCode.CRITICAL
        if found.critical
        else MonitorCode.DEGRADED
        if found.degraded
        else MonitorCode.HEALTHY
    )
    if not any(a.error is None for a in answers.values()):
        # Nothing answered: the state is unknown, not known to be bad.
        found.critical.insert(0, "no node reachable over SSH")
        health = MonitorCode.UNKNOWN
    return StatusReport(
        cluster=spec.cluster.name,
        health=health.name.lower(),
        exit_code=int(health),
        problems=_dedupe(found.critical + found.degraded),
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
