"""hakvm's own `hakvm_*` series: what no exporter has, named by Prometheus's conventions (base
units in the name, `_seconds`, `_bytes`, `_timestamp_seconds` for times of events, an
`_info` series for metadata, 0/1 gauges for states). docs/metrics.md lists each one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import AgentConfig
from .exposition import Family
from .health import Verdict, qdevice_flags
from .parsers import CrmMon, Drbd, Link, Quorum

# DRBD 8.4 connection states in which the replication link is up (a resync or an online
# verify runs over it); DRBD 9 reports the connection ("Connected") apart from them.
LINK_UP_STATES = frozenset({
    "Connected", "StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT", "WFSyncUUID",
    "SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT", "VerifyS", "VerifyT", "Ahead",
    "Behind",
})  # fmt: skip
SYNCING_STATES = frozenset({"SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT"})


@dataclass
class Seen:
    """What one collector run read on this node (None: that source failed)."""

    mon: CrmMon | None = None
    constraints: list[Any] | None = None
    quorum: Any = None
    local_id: int | None = None
    links: list[Link] | None = None
    drbd: list[Drbd] | None = None
    split_brain: list[tuple[str, str]] = field(default_factory=list)
    bonds: dict[str, dict[str, bool]] = field(default_factory=dict)  # readable bonds only
    bmc: bool | None = None
    drills: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, bool] = field(default_factory=dict)  # source -> read and parsed


def info(cfg: AgentConfig) -> Family:
    family = Family("hakvm_agent_info", "hakvm's agent on this node (value 1): its cluster, "
                    "node name and hakvm version")  # fmt: skip
    family.add(1, {"cluster": cfg.cluster, "node": cfg.node, "version": cfg.version})
    return family


def health(verdict: Verdict) -> list[Family]:
    status = Family("hakvm_cluster_status", "Cluster health as this node sees it, by hakvm "
                    "status's rules: 0 healthy, 1 degraded, 2 critical (the cluster's is the "
                    "max over its nodes)")  # fmt: skip
    status.add(verdict.status)
    problems = Family("hakvm_cluster_problems", "Problems this node sees (hakvm status lists "
                      "them, worst first)")  # fmt: skip
    problems.add(len(verdict.problems))
    return [status, problems]


def vms(cfg: AgentConfig, mon: CrmMon) -> list[Family]:
    running = Family("hakvm_vm_running", "1 when Pacemaker runs the VM on exactly one node")
    preferred = Family("hakvm_vm_on_preferred_node", "1 when the VM runs on its preferred "
                       "node (node: that node); only VMs with a preferred node")  # fmt: skip
    for vm in cfg.vms:
        place = mon.placement.get(vm.name)
        on = list(place.active_on) if place else []
        running.add(1 if len(on) == 1 else 0, {"vm": vm.name})
        if vm.preferred_node:
            preferred.add(1 if on == [vm.preferred_node] else 0,
                          {"vm": vm.name, "node": vm.preferred_node})  # fmt: skip
    failed = Family("hakvm_pacemaker_failed_actions", "Failed resource actions Pacemaker "
                    "lists (crm_mon's failures; crm_resource --cleanup clears them)")  # fmt: skip
    failed.add(len(mon.failures))
    return [running, preferred, failed]


def fencing(mon: CrmMon) -> Family:
    family = Family("hakvm_fencing_last_timestamp_seconds", "When the last fencing of the "
                    "target ended, per result (success, failed), from the fencer's history")
    last: dict[tuple[str, str], float] = {}
    for event in mon.fencing:
        if event.completed is None or event.status not in ("success", "failed"):
            continue
        key = (event.target, event.status)
        last[key] = max(last.get(key, 0.0), event.completed)
    for (target, result), when in sorted(last.items()):
        family.add(when, {"target": target, "result": result})
    return family


def drbd(volumes: list[Drbd]) -> list[Family]:
    state = Family("hakvm_drbd_info", "A DRBD resource's states (value 1), as /proc/drbd or "
                   "drbdsetup report them")  # fmt: skip
    connected = Family("hakvm_drbd_connected", "1 when the resource's replication link to "
                       "its peer is up (Connected, or resyncing or verifying over it)")
    standalone = Family("hakvm_drbd_standalone", "1 when the resource is StandAlone "
                        "(split-brain or refused peer): replication stopped until an admin acts")
    uptodate = Family("hakvm_drbd_disk_up_to_date", "1 when the disk (local: this node's, "
                      "peer: the peer's as this node knows it) is UpToDate")  # fmt: skip
    oos = Family("hakvm_drbd_out_of_sync_bytes", "Bytes this node knows to differ from the "
                 "peer (to resync)")  # fmt: skip
    eta = Family("hakvm_drbd_resync_eta_seconds", "DRBD's estimate of the time left in the "
                 "running resync; 0 when in sync, NaN when out of sync and not resyncing")
    for d in volumes:
        if d.volume != 0:
            continue
        res = {"resource": d.resource}
        state.add(1, {"resource": d.resource, "minor": "" if d.minor is None else str(d.minor),
                      "connection": d.connection, "role": d.role, "peer_role": d.peer_role,
                      "disk": d.disk, "peer_disk": d.peer_disk})  # fmt: skip
        connected.add(1 if d.connection in LINK_UP_STATES else 0, res)
        standalone.add(1 if d.connection == "StandAlone" else 0, res)
        uptodate.add(1 if d.disk == "UpToDate" else 0, {**res, "disk": "local"})
        uptodate.add(1 if d.peer_disk == "UpToDate" else 0, {**res, "disk": "peer"})
        oos.add(d.out_of_sync_bytes, res)
        if d.sync_eta_s is not None:
            eta.add(d.sync_eta_s, res)
        elif d.out_of_sync_bytes == 0 and d.connection not in SYNCING_STATES:
            eta.add(0, res)
        else:
            eta.add(float("nan"), res)
    return [state, connected, standalone, uptodate, oos, eta]


def links(cfg: AgentConfig, links: list[Link]) -> Family:
    family = Family("hakvm_corosync_link_up", "1 when the peer is connected over this knet "
                    "link (corosync-cfgtool -s), per link number and peer node")  # fmt: skip
    for link in links:
        for peer, up in sorted(link.peers.items()):
            family.add(1 if up else 0, {"link": str(link.number), "peer": cfg.node_name(peer)})
    return family


def qdevice(cfg: AgentConfig, quorum: Quorum | None) -> Family:
    """Only with a quorum device in the spec, and from quorumtool's Qdevice column."""
    family = Family("hakvm_qdevice_vote_cast", "1 when this node's corosync-qdevice casts the "
                    "quorum device's vote (corosync-quorumtool: V), 0 when not (NV) or not "
                    "alive")  # fmt: skip
    flags = qdevice_flags(cfg, quorum)
    if flags is not None:
        family.add(1 if "V" in flags else 0, {"node": cfg.node})
    return family


def bonds(cfg: AgentConfig, seen: Mapping[str, Mapping[str, bool]]) -> Family:
    """Each configured member: up as /proc/net/bonding says, 0 when the bond lacks it."""
    family = Family("hakvm_bond_member_up", "1 when the bond member's MII status is up "
                    "(/proc/net/bonding); 0 when down or missing from the bond")  # fmt: skip
    for bond, members in sorted(cfg.bonds.items()):
        found = seen.get(bond, {})
        for member in (*members, *(m for m in found if m not in members)):
            family.add(1 if found.get(member) else 0, {"bond": bond, "member": member})
    return family


def bmc(cfg: AgentConfig, reachable: bool | None) -> Family:
    family = Family("hakvm_bmc_reachable", "1 when the BMC of the node (which this node "
                    "fences) answered an IPMI chassis power status")  # fmt: skip
    if cfg.peer_bmc is not None and reachable is not None:
        family.add(1 if reachable else 0, {"node": cfg.peer_bmc.node})
    return family


def drills(results: list[dict[str, Any]]) -> list[Family]:
    recovery = Family("hakvm_drill_recovery_seconds", "The last drill's recovery time per "
                      "scenario (VMs responsive again), as hakvm drill measured it")
    passed = Family("hakvm_drill_passed", "1 when every invariant of the scenario's last "
                    "drill held")  # fmt: skip
    when = Family("hakvm_drill_last_run_timestamp_seconds", "When the scenario's last drill "
                  "ended")  # fmt: skip
    for r in results:
        label = {"scenario": str(r["scenario"])}
        passed.add(1 if r.get("passed") else 0, label)
        when.add(float(r.get("finished", 0)), label)
        if isinstance(r.get("recovery_s"), int | float):
            recovery.add(float(r["recovery_s"]), label)
    return [recovery, passed, when]


def collector(seen: Seen, duration: float, now: float) -> list[Family]:
    ok = Family("hakvm_collector_success", "1 when every source of this run was read")
    ok.add(1 if seen.sources and all(seen.sources.values()) else 0)
    sources = Family("hakvm_collector_source_success", "1 when the source (a command or "
                     "file the collector reads) answered and parsed in this run")
    for name, good in sorted(seen.sources.items()):
        sources.add(1 if good else 0, {"source": name})
    took = Family("hakvm_collector_duration_seconds", "How long this run of the collector took")
    took.add(round(duration, 3))
    last = Family("hakvm_collector_last_run_timestamp_seconds", "When this file was written "
                  "(time() minus it: its age)")  # fmt: skip
    last.add(round(now, 3))
    return [ok, sources, took, last]
