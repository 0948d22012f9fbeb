"""The cluster's health as one node sees it: 0 healthy, 1 degraded, 2 critical, by the rules
of `hakvm status` (src/hakvm/ops/status.py `assess`), applied to this node's own answers.

`hakvm status` reads both nodes; each node's agent reads only itself, so the cluster's
verdict is the worst of the two (`max by (job) (hakvm_cluster_status)`), which equals
`hakvm status`'s exit code (tests/unit/test_agent_health.py replays the recorded answers
through both). Two things only the pair shows are left to the alert rules: a split
partition (two quorate DCs: `HAClusterSplitPartition`) and no node with Pacemaker's state
(`HakvmNoPacemakerView`); a node whose own Pacemaker does not answer reports degraded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .config import AgentConfig, VmConfig
from .parsers import CrmMon, Drbd, Link, Quorum

HEALTHY, DEGRADED, CRITICAL = 0, 1, 2


@dataclass
class Verdict:
    critical: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        return CRITICAL if self.critical else DEGRADED if self.degraded else HEALTHY

    @property
    def problems(self) -> list[str]:
        return list(dict.fromkeys(self.critical + self.degraded))


def node_state(mon: CrmMon | None, name: str) -> str:
    node = mon.node(name) if mon else None
    if node is None:
        return "unknown"
    if node.flags["unclean"]:
        return "unclean"
    if not node.flags["online"]:
        return "offline"
    if node.flags["maintenance"]:
        return "maintenance"
    return "standby" if node.flags["standby"] else "online"


def _nodes(cfg: AgentConfig, mon: CrmMon | None, found: Verdict) -> None:
    for name, _ in cfg.nodes:
        state = node_state(mon, name)
        if state in ("offline", "unclean"):
            found.degraded.append(f"{name} is {state} in the cluster")
        elif state in ("standby", "maintenance"):
            found.degraded.append(f"{name} is in {state}: it takes no VMs")


def _own_links(
    cfg: AgentConfig,
    links: Sequence[Link],
    bonds: Mapping[str, Mapping[str, bool]],
    found: Verdict,
) -> None:
    for link in links:
        if not link.peers or not all(link.peers.values()):
            found.degraded.append(f"{cfg.node}: knet link {link.number} ({link.address}) down")
    for bond, members in bonds.items():
        down = [m for m, up in members.items() if not up]
        if down:
            found.degraded.append(f"{cfg.node}: {bond} member(s) down: {', '.join(down)}")


def qdevice_flags(cfg: AgentConfig, quorum: Quorum | None) -> tuple[str, ...] | None:
    """This node's Qdevice flags in corosync-quorumtool (None: no quorum device in the spec,
    or quorumtool did not answer)."""
    if not cfg.qdevice or quorum is None:
        return None
    return next((m.qdevice for m in quorum.members if m.local), ())


def _qdevice(cfg: AgentConfig, quorum: Quorum | None, found: Verdict) -> None:
    """The rule of `hakvm status` (ops/status.py `_qdevice_status`): a node whose
    corosync-qdevice casts no vote leaves the survivor of the next failure without quorum."""
    flags = qdevice_flags(cfg, quorum)
    if flags is not None and "V" not in flags:
        how = "casts no vote" if "A" in flags else "is not running"
        found.degraded.append(
            f"{cfg.node}: the quorum device {how}: a node failure now stops the survivor's VMs"
        )


def _cluster_wide(mon: CrmMon, found: Verdict, seen_from: str) -> None:
    if not mon.quorate:
        found.critical.append(f"the partition seen from {seen_from} has no quorum")
    if not mon.stonith_enabled:
        found.critical.append("fencing is disabled (stonith-enabled=false): split-brain risk")
    if mon.maintenance_mode:
        found.degraded.append("cluster-wide maintenance mode: Pacemaker is not managing VMs")


def _vm(vm: VmConfig, mon: CrmMon, found: Verdict) -> None:
    place = mon.placement.get(vm.name)
    running = list(place.active_on) if place else []
    if len(running) > 1:
        found.critical.append(f"{vm.name} is active on {', '.join(running)} at once")
    elif place is not None and place.failed:
        found.critical.append(f"{vm.name} failed")
    elif not running and vm.autostart:
        found.critical.append(f"{vm.name} is not running")


def _drbd(
    cfg: AgentConfig, vm: VmConfig, r: Drbd | None, mon: CrmMon | None, found: Verdict
) -> None:
    node = cfg.node
    if r is None:
        found.degraded.append(f"{vm.name}: no DRBD resource up on {node}")
        return
    if r.connection == "StandAlone":
        found.critical.append(f"{vm.name}: DRBD StandAlone on {node} (split-brain or refused "
                              "peer): replication stopped")  # fmt: skip
    elif r.disk != "UpToDate" and r.role == "Primary":
        found.critical.append(f"{vm.name}: Primary on {node} with disk {r.disk}")
    elif r.connection != "Connected" or r.disk != "UpToDate" or r.peer_disk != "UpToDate":
        found.degraded.append(f"{vm.name}: DRBD on {node} is {r.connection} "
                              f"{r.disk}/{r.peer_disk}")  # fmt: skip
    if mon and vm.resync_attribute in mon.node_attributes(node) and r.disk == "UpToDate":
        found.degraded.append(f"{vm.name} cannot fail over to {node}: stale "
                              f"{vm.resync_attribute} there with DRBD UpToDate")  # fmt: skip


def assess(
    cfg: AgentConfig,
    mon: CrmMon | None,
    links: Sequence[Link],
    bonds: Mapping[str, Mapping[str, bool]],
    drbd: Sequence[Drbd],
    *,
    quorum: Quorum | None = None,
) -> Verdict:
    """This node's verdict from its own crm_mon (None: it did not answer), knet links, bonds
    (bond -> member -> up), DRBD volumes and corosync-quorumtool (the quorum device's vote)."""
    found = Verdict()
    if mon is None:
        found.degraded.append(f"{cfg.node}: Pacemaker's state (crm_mon) unavailable")
    _nodes(cfg, mon, found)
    if node_state(mon, cfg.node) == "online":
        _own_links(cfg, links, bonds, found)
        _qdevice(cfg, quorum, found)
    if mon is not None:
        _cluster_wide(mon, found, cfg.node)
        for vm in cfg.vms:
            _vm(vm, mon, found)
    by_name = {d.resource: d for d in drbd if d.volume == 0}
    for vm in cfg.vms:
        _drbd(cfg, vm, by_name.get(vm.drbd_resource), mon, found)
    if mon is not None and mon.failures:
        found.degraded.append(f"{len(mon.failures)} failed action(s): {mon.failures[0]}")
    return found
