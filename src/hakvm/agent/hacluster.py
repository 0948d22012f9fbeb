"""The `ha_cluster_*` families with exactly ha_cluster_exporter 1.4.2's names, HELP texts,
labels and values (its collector/pacemaker, collector/corosync and collector/drbd), so that
Grafana dashboard 12229 and rules written for the exporter read them unchanged.

Deliberate differences, each where the exporter cannot work on Debian 12 (docs/metrics.md):
- `ha_cluster_corosync_rings` and `ring_errors` from corosync 3's knet links (the exporter's
  regular expression matches only corosync 2's rings, its issue #279): link N is ring N, with
  the address `corosync-cfgtool -s` shows for it; it is faulty when a node that is a member
  of the current membership is disconnected over it (a peer that is down is not a faulty
  ring, as in corosync 2; `hakvm_corosync_link_up` has every link to every peer);
- `ha_cluster_drbd_*` from DRBD 8.4's /proc/drbd as well as 9's JSON (its issue #117):
  volume 0, `peer_node_id` the peer's DRBD 9 node-id (its index in the spec), `quorum` 1
  (8.4 has no DRBD quorum: 9 reports true when quorum is off), counters in 9's units (KiB);
- `ha_cluster_pacemaker_config_last_change` is a gauge (a timestamp; the exporter declares a
  counter without `_total`, which `promtool check metrics` rejects) read in the node's time
  zone (the exporter reads Pacemaker's local time as UTC); `ha_cluster_pacemaker_fail_count`
  is untyped (promtool rejects a gauge whose name ends in `_count`). Types are metadata only:
  every query reads the same values.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterable, Sequence

from .exposition import Family
from .parsers import RESOURCE_STATUSES, CrmMon, Drbd, Link, Location, Quorum, parse_last_change

INFINITY_SCORE = 1000000  # Pacemaker's CRM_SCORE_INFINITY


def pacemaker(mon: CrmMon) -> list[Family]:
    """Every ha_cluster_pacemaker_* family crm_mon fills (location constraints: `locations`)."""
    f = {
        "nodes": Family("ha_cluster_pacemaker_nodes", "The status of each node in the cluster; "
                        "1 means the node is in that status, 0 otherwise"),
        "attributes": Family("ha_cluster_pacemaker_node_attributes",
                             "Metadata attributes of each node; value is always 1"),
        "resources": Family("ha_cluster_pacemaker_resources", "The status of each resource in "
                            "the cluster; 1 means the resource is in that status, 0 otherwise"),
        "stonith": Family("ha_cluster_pacemaker_stonith_enabled",
                          "Whether or not stonith is enabled"),
        "maintenance": Family("ha_cluster_pacemaker_maintenance_mode_enabled",
                              "Whether or not cluster wide maintenance-mode is enabled"),
        # untyped: promtool check metrics rejects a gauge named *_count (a summary's part)
        "fail_count": Family("ha_cluster_pacemaker_fail_count",
                             "The Fail count number per node and resource id", "untyped"),
        "threshold": Family("ha_cluster_pacemaker_migration_threshold",
                            "The migration_threshold number per node and resource id"),
        "last_change": Family("ha_cluster_pacemaker_config_last_change",
                              "The timestamp of the last change of the cluster configuration"),
    }  # fmt: skip
    f["stonith"].add(1 if mon.stonith_enabled else 0)
    f["maintenance"].add(1 if mon.maintenance_mode else 0)
    for node in mon.nodes:
        for status, flag in node.flags.items():
            f["nodes"].add(1 if flag else 0, {"node": node.name, "type": node.type,
                                               "status": status})  # fmt: skip
    for name, attr, value in mon.attributes:
        f["attributes"].add(1, {"node": name, "name": attr, "value": value})
    for rsc in mon.resources:
        for status in RESOURCE_STATUSES:
            f["resources"].add(1 if rsc.flags[status] else 0, {
                "node": rsc.node, "resource": rsc.id, "role": rsc.role.lower(),
                "managed": "true" if rsc.managed else "false", "status": status,
                "agent": rsc.agent, "group": rsc.group, "clone": rsc.clone,
            })  # fmt: skip
    for h in mon.history:
        count = math.inf if h.fail_count >= INFINITY_SCORE else h.fail_count
        f["fail_count"].add(count, {"node": h.node, "resource": h.resource})
    for h in mon.history:
        f["threshold"].add(h.migration_threshold, {"node": h.node, "resource": h.resource})
    with contextlib.suppress(ValueError):  # the exporter's collector fails here too
        f["last_change"].add(parse_last_change(mon.last_change))
    return list(f.values())


def locations(constraints: Sequence[Location]) -> Family:
    family = Family("ha_cluster_pacemaker_location_constraints",
                    "Resource location constraints. The value indicates the score.")  # fmt: skip
    for c in constraints:
        family.add(c.score, {"constraint": c.id, "node": c.node, "resource": c.resource,
                             "role": c.role})  # fmt: skip
    return family


def quorum(q: Quorum) -> list[Family]:
    quorate = Family("ha_cluster_corosync_quorate", "Whether or not the cluster is quorate")
    quorate.add(1 if q.quorate else 0)
    votes = Family("ha_cluster_corosync_quorum_votes", "Cluster quorum votes; one line per type")
    for kind in ("expected_votes", "highest_expected", "total_votes", "quorum"):
        votes.add(q.votes[kind], {"type": kind})
    members = Family("ha_cluster_corosync_member_votes", "How many votes each member node has "
                     "contributed with to the current quorum")  # fmt: skip
    for m in q.members:
        members.add(m.votes, {"node_id": m.node_id, "node": m.name,
                              "local": "true" if m.local else "false"})  # fmt: skip
    return [quorate, votes, members]


def faulty(link: Link, members: set[int] | None) -> bool:
    """A knet link is a faulty ring when a member node is disconnected over it (`members`:
    the current membership's node ids; None when unknown: any peer counts)."""
    if link.faulty is not None:
        return link.faulty
    return any(not up for peer, up in link.peers.items() if members is None or peer in members)


def rings(links: Sequence[Link], q: Quorum | None, local_id: int | None) -> list[Family]:
    rings = Family("ha_cluster_corosync_rings",
                   "The status of each Corosync ring; 1 means healthy, 0 means faulty.")
    errors = Family("ha_cluster_corosync_ring_errors", "The total number of faulty corosync rings")
    members = {int(m.node_id) for m in q.members if m.node_id.isdigit()} if q else None
    node_id = q.node_id if q else str(local_id if local_id is not None else "")
    for link in links:
        rings.add(0 if faulty(link, members) else 1, {
            "ring_id": q.ring_id if q else "", "node_id": node_id,
            "number": str(link.number), "address": link.address,
        })  # fmt: skip
    errors.add(sum(1 for link in links if faulty(link, members)))
    return [rings, errors]


_DRBD_HELP = {
    "resources": "The DRBD resources; 1 line per name, per volume",
    "written": "KiB written to DRBD; 1 line per res, per volume",
    "read": "KiB read from DRBD; 1 line per res, per volume",
    "al_writes": "Writes to activity log; 1 line per res, per volume",
    "bm_writes": "Writes to bitmap; 1 line per res, per volume",
    "upper_pending": "Upper pending; 1 line per res, per volume",
    "lower_pending": "Lower pending; 1 line per res, per volume",
    "quorum": "Quorum status per resource and per volume",
    "connections": "The DRBD resource connections; 1 line per per resource, per peer_node_id",
    "connections_sync": "The in sync percentage value for DRBD resource connections",
    "connections_received": "KiB received per connection",
    "connections_sent": "KiB sent per connection",
    "connections_pending": "Pending value per connection",
    "connections_unacked": "Unacked value per connection",
    "split_brain": "Whether a split brain has been detected; 1 line per resource, per volume.",
}
_DEVICE_COUNTERS = ("written", "read", "al_writes", "bm_writes", "upper_pending",
                    "lower_pending")  # fmt: skip
_PEER_COUNTERS = ("received", "sent", "pending", "unacked")


def drbd(volumes: Iterable[Drbd], split_brain: Iterable[tuple[str, str]] = ()) -> list[Family]:
    f = {key: Family(f"ha_cluster_drbd_{key}", text) for key, text in _DRBD_HELP.items()}
    for resource, volume in split_brain:
        f["split_brain"].add(1, {"resource": resource, "volume": volume})
    for d in volumes:
        vol = {"resource": d.resource, "volume": str(d.volume)}
        f["resources"].add(1, {"resource": d.resource, "role": d.role, "volume": str(d.volume),
                               "disk_state": d.disk.lower()})  # fmt: skip
        for key in _DEVICE_COUNTERS:
            f[key].add(d.counters.get(key.replace("_", "-"), 0), vol)
        f["quorum"].add(1 if d.quorum else 0, vol)
        if not d.has_peer:
            continue
        peer = {"resource": d.resource, "peer_node_id": str(d.peer_node_id),
                "volume": str(d.volume)}  # fmt: skip
        f["connections"].add(1, {"resource": d.resource, "peer_node_id": str(d.peer_node_id),
                                 "peer_role": d.peer_role, "volume": str(d.volume),
                                 "peer_disk_state": d.peer_disk.lower()})  # fmt: skip
        if d.percent_in_sync is not None:
            f["connections_sync"].add(d.percent_in_sync, peer)
        for key in _PEER_COUNTERS:
            f[f"connections_{key}"].add(d.counters.get(key, 0), peer)
    return list(f.values())


SPLIT_BRAIN_DIR = "/var/run/drbd/splitbrain"  # the exporter's default
_SPLIT_BRAIN_RE = re.compile(r"drbd-split-brain-detected-(?P<resource>[\w-]+)-(?P<volume>[\w-]+)")


def split_brain_files(directory: str = SPLIT_BRAIN_DIR) -> list[tuple[str, str]]:
    """(resource, volume) of each file a DRBD split-brain handler left, as the exporter
    reads them (hakvm installs no such handler: see hakvm_drbd_standalone)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith("drbd-split-brain-detected-") and (
            m := _SPLIT_BRAIN_RE.search(os.path.join(directory, name))
        ):
            found.append((m["resource"], m["volume"]))
    return found
