"""Parsers of what the node's own tools say, each a pure function of their output (unit tests
replay recorded answers): Pacemaker's crm_mon XML (the legacy `-X` root as
ha_cluster_exporter reads it, or `--output-as=xml`'s: the elements inside are the same),
the CIB's location constraints, corosync-quorumtool and corosync-cfgtool (knet), DRBD 8.4's
/proc/drbd and 9's `drbdsetup status --json`, and /proc/net/bonding.

Where ha_cluster_exporter 1.4.2 reads the same output, the parsing follows its Go code
(collector/pacemaker/crmmon, collector/pacemaker/cib, collector/corosync/parser.go): the same
elements, the same regular expressions, the same defaults for what is missing.
"""

from __future__ import annotations

import calendar
import json
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

# Pacemaker's statuses of a node, as ha_cluster_pacemaker_nodes names them, and the crm_mon
# attribute each comes from.
NODE_STATUSES = (
    ("online", "online"), ("standby", "standby"), ("standby_onfail", "standby_onfail"),
    ("maintenance", "maintenance"), ("pending", "pending"), ("unclean", "unclean"),
    ("shutdown", "shutdown"), ("expected_up", "expected_up"), ("dc", "is_dc"),
)  # fmt: skip
RESOURCE_STATUSES = ("active", "orphaned", "blocked", "failed", "failure_ignored")


def go_bool(value: str | None) -> bool:
    """Go's strconv.ParseBool truth (encoding/xml's bool attributes); missing is false."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _int(value: str | None, what: str) -> int:
    """encoding/xml's int attribute: missing is 0, anything else must be an integer."""
    if value is None or value == "":
        return 0
    if not re.fullmatch(r"[+-]?\d+", value):
        raise ValueError(f"crm_mon: {what}={value!r} is not an integer")
    return int(value)


def _xml(text: str, what: str) -> ET.Element:
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ValueError(f"{what}: unexpected DTD")
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"{what} is not XML: {exc}") from None


# --- crm_mon ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonNode:
    name: str
    type: str
    flags: dict[str, bool]  # status (NODE_STATUSES) -> set


@dataclass(frozen=True)
class MonResource:
    """One <resource> as ha_cluster_pacemaker_resources records it."""

    id: str
    agent: str
    role: str
    managed: bool
    flags: dict[str, bool]  # RESOURCE_STATUSES -> set
    node: str  # the (last) <node> it lists, "" when none
    group: str = ""
    clone: str = ""


@dataclass
class Placement:
    """A resource as `hakvm status` reads it: where it is active, and whether it failed."""

    active_on: list[str] = field(default_factory=list)
    failed: bool = False


@dataclass(frozen=True)
class History:
    node: str
    resource: str
    migration_threshold: int
    fail_count: int


@dataclass(frozen=True)
class FenceEvent:
    target: str
    action: str
    status: str  # success, failed, pending
    completed: float | None  # Unix seconds; None while pending


@dataclass
class CrmMon:
    dc: str | None = None
    quorate: bool = False
    stonith_enabled: bool = False
    maintenance_mode: bool = False
    last_change: str = ""
    nodes: list[MonNode] = field(default_factory=list)
    attributes: list[tuple[str, str, str]] = field(default_factory=list)  # node, name, value
    resources: list[MonResource] = field(default_factory=list)
    placement: dict[str, Placement] = field(default_factory=dict)
    history: list[History] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    fencing: list[FenceEvent] = field(default_factory=list)

    def node(self, name: str) -> MonNode | None:
        return next((n for n in self.nodes if n.name == name), None)

    def node_attributes(self, name: str) -> dict[str, str]:
        return {attr: value for node, attr, value in self.attributes if node == name}


def _mon_resource(el: ET.Element, group: str = "", clone: str = "") -> MonResource:
    nodes = el.findall("node")
    return MonResource(
        id=el.get("id", ""),
        agent=el.get("resource_agent", ""),
        role=el.get("role", ""),
        managed=go_bool(el.get("managed")),
        flags={s: go_bool(el.get(s)) for s in RESOURCE_STATUSES},
        # encoding/xml fills a single *struct field from each <node> in turn: the last wins.
        node=nodes[-1].get("name", "") if nodes else "",
        group=group,
        clone=clone,
    )


def _place(state: CrmMon, key: str, el: ET.Element) -> None:
    """hakvm status's reading (remote/pacemaker.py): active nodes and failure, per id."""
    place = state.placement.setdefault(key, Placement())
    place.failed = place.failed or el.get("failed") == "true"
    if el.get("active") == "true":
        for node in el.findall("node"):
            if node.get("name", "") not in place.active_on:
                place.active_on.append(node.get("name", ""))


def _resources(state: CrmMon, root: ET.Element) -> None:
    """The exporter's resources>resource, resources>clone>resource (identical stopped
    instances once) and resources>group>resource; hakvm status's placement of every id."""
    resources = root.find("resources")
    for el in resources if resources is not None else []:
        parent = el.get("id", "")
        if el.tag == "resource":
            state.resources.append(_mon_resource(el))
            _place(state, parent, el)
            continue
        if el.tag in ("clone", "group"):
            stopped: set[Any] = set()
            for child in el.findall("resource"):
                rsc = _mon_resource(child, parent if el.tag == "group" else "",
                                    parent if el.tag == "clone" else "")  # fmt: skip
                if not rsc.node:
                    if _frozen(rsc) in stopped:
                        continue
                    stopped.add(_frozen(rsc))
                state.resources.append(rsc)
        for child in el.iter("resource"):  # bundles too
            _place(state, parent, child)
            _place(state, child.get("id", ""), child)


def _frozen(rsc: MonResource) -> Any:
    return (rsc.id, rsc.agent, rsc.role, rsc.managed, tuple(sorted(rsc.flags.items())))


def parse_crm_mon(text: str) -> CrmMon:
    """`crm_mon -X --inactive` (root <crm_mon>) or `crm_mon --output-as=xml` (root
    <pacemaker-result>); ValueError if it is neither (a truncated answer, say)."""
    root = _xml(text, "crm_mon")
    if root.tag not in ("crm_mon", "pacemaker-result") or root.find("summary") is None:
        raise ValueError(f"crm_mon: unexpected document <{root.tag}>")
    state = CrmMon()
    dc = root.find("summary/current_dc")
    if dc is not None and dc.get("present") == "true":
        state.dc = dc.get("name")
        state.quorate = dc.get("with_quorum") == "true"
    options = root.find("summary/cluster_options")
    if options is not None:
        state.stonith_enabled = go_bool(options.get("stonith-enabled"))
        state.maintenance_mode = go_bool(options.get("maintenance-mode"))
    change = root.find("summary/last_change")
    state.last_change = change.get("time", "") if change is not None else ""
    for node in root.findall("nodes/node"):
        flags = {status: go_bool(node.get(attr)) for status, attr in NODE_STATUSES}
        state.nodes.append(MonNode(node.get("name", ""), node.get("type", ""), flags))
    for node in root.findall("node_attributes/node"):
        for attr in node.findall("attribute"):
            state.attributes.append(
                (node.get("name", ""), attr.get("name", ""), attr.get("value", ""))
            )
    _resources(state, root)
    for node in root.findall("node_history/node"):
        for rh in node.findall("resource_history"):
            state.history.append(History(
                node.get("name", ""), rh.get("id", ""),
                _int(rh.get("migration-threshold"), "migration-threshold"),
                _int(rh.get("fail-count"), "fail-count"),
            ))  # fmt: skip
    for failure in root.findall("failures/failure"):
        state.failures.append(failure.get("op_key", "") + " on " + failure.get("node", ""))
    for event in root.findall("fence_history/fence_event"):
        state.fencing.append(FenceEvent(
            event.get("target", ""), event.get("action", ""), event.get("status", ""),
            parse_fence_time(event.get("completed", "")),
        ))  # fmt: skip
    return state


_FENCE_TIME_RE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:Z| ([+-])(\d\d):(\d\d))$"
)


def parse_fence_time(text: str) -> float | None:
    """A fence event's `completed`: Pacemaker's crm_time_as_string, "2026-11-26 05:54:14Z"
    in UTC or "2026-11-26 06:54:14 +01:00" with the node's offset."""
    match = _FENCE_TIME_RE.match(text.strip())
    if match is None:
        return None
    y, mo, d, h, mi, s = (int(match[i]) for i in range(1, 7))
    seconds = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    if match[7]:
        offset = int(match[8]) * 3600 + int(match[9]) * 60
        seconds -= offset if match[7] == "+" else -offset
    return float(seconds)


def parse_last_change(text: str) -> float:
    """`<last_change time=...>`: Go's time.ANSIC ("Mon Jan _2 15:04:05 2006"), written by
    Pacemaker in the node's local time zone (read here in that zone; the exporter reads it
    as UTC, which agrees on a UTC node). ValueError when it does not parse (the exporter's
    pacemaker collector then fails too)."""
    try:
        parsed = time.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        raise ValueError(f"crm_mon: last_change {text!r} is not a date") from None
    return float(time.mktime(parsed))


# --- the CIB's location constraints ----------------------------------------------------------


@dataclass(frozen=True)
class Location:
    id: str
    node: str
    resource: str
    role: str
    score: float


def _score(text: str) -> float:
    if text == "INFINITY":
        return float("inf")
    if text == "-INFINITY":
        return float("-inf")
    # Go's strconv.Atoi; anything else (+INFINITY, a rule's constraint without a score) is 0
    return float(int(text)) if re.fullmatch(r"[+-]?\d{1,18}", text) else 0.0


def parse_constraints(text: str) -> list[Location]:
    """`cibadmin --query --local --scope constraints` (root <constraints>) or a whole CIB:
    its rsc_location constraints, as configuration>constraints>rsc_location."""
    root = _xml(text, "cibadmin")
    if root.tag == "cib":
        found = root.find("configuration/constraints")
        root = found if found is not None else ET.Element("constraints")
    if root.tag != "constraints":
        raise ValueError(f"cibadmin: unexpected document <{root.tag}>")
    return [
        Location(el.get("id", ""), el.get("node", ""), el.get("rsc", ""),
                 el.get("role", "").lower(), _score(el.get("score", "")))
        for el in root.findall("rsc_location")
    ]  # fmt: skip


# --- corosync -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    node_id: str
    name: str
    votes: int
    local: bool
    # corosync-quorumtool's Qdevice column: A/NA alive, V/NV vote cast, MW/NMW master wins
    qdevice: tuple[str, ...] = ()


@dataclass
class Quorum:
    node_id: str
    ring_id: str
    quorate: bool
    votes: dict[str, int]  # expected_votes, highest_expected, total_votes, quorum
    members: list[Member]


_QUORUM_VOTES_RE = re.compile(
    r"(?m)Expected votes:\s+(\d+)\s+Highest expected:\s+(\d+)\s+Total votes:\s+(\d+)\s+"
    r"Quorum:\s+(\d+)"
)
_MEMBERS_RE = re.compile(
    r"(?m)Membership information\n-+\s+Nodeid\s+Votes\s+Qdevice\s+Name\n+((?:.*\n?)+)"
)
_MEMBER_RE = re.compile(
    r"(?m)(?P<node_id>\w+)\s+(?P<votes>\d+)\s+(?P<qdevice>(\w,?)+)?\s+(?P<name>[^\s]+)"
    r"(?:\s(?P<local>\(local\)))?\n?"
)


def _search(pattern: str, text: str, what: str) -> re.Match[str]:
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"corosync-quorumtool: no {what} line")
    return match


def parse_quorumtool(text: str) -> Quorum:
    """`corosync-quorumtool -p` with the exporter's regular expressions (it exits 2 when not
    quorate: the output counts, not the exit code)."""
    node_id = _search(r"(?m)Node ID:\s+(\w+)", text, "Node ID")[1]
    ring_id = _search(r"(?m)Ring ID:\s+\b(.+)\b", text, "Ring ID")[1]
    quorate = _search(r"(?m)Quorate:\s+(Yes|No)", text, "Quorate")[1] == "Yes"
    votes = _QUORUM_VOTES_RE.search(text)
    if votes is None:
        raise ValueError("corosync-quorumtool: no quorum votes")
    section = _MEMBERS_RE.search(text)
    if section is None:
        raise ValueError("corosync-quorumtool: no membership information")
    members = [
        Member(m["node_id"], m["name"], int(m["votes"]), bool(m["local"]),
               tuple(m["qdevice"].split(",")) if m["qdevice"] else ())
        for m in _MEMBER_RE.finditer(section[1])
    ]
    keys = ("expected_votes", "highest_expected", "total_votes", "quorum")
    return Quorum(node_id, ring_id, quorate, {k: int(votes[i + 1]) for i, k in enumerate(keys)},
                  members)  # fmt: skip


@dataclass
class Link:
    """One knet link as `corosync-cfgtool -s` shows it: this node's address on it and, per
    other node id, whether that node is connected over it."""

    number: int
    address: str
    peers: dict[int, bool] = field(default_factory=dict)
    faulty: bool | None = None  # corosync 2's own verdict ("FAULTY"); None on knet


_LOCAL_ID_RE = re.compile(r"^Local node ID (\d+)")
_LINK_RE = re.compile(r"^LINK ID (\d+)")
_ADDR_RE = re.compile(r"^\s*addr\s*=\s*(\S+)")
_PEER_RE = re.compile(r"^\s*nodeid:\s*(\d+):\s*(\S+)")


# corosync 2's rings, with the exporter's expression (it never matches corosync 3's output).
_RING_RE = re.compile(
    r"(?m)(?P<prefix>RING|Link) ID (?P<number>\d+)\s+(?P<id>id|addr)\s+= (?P<address>.+)"
    r"\s+status\s+= (?P<status>.+)"
)


def parse_cfgtool(text: str) -> tuple[int | None, list[Link]]:
    """`corosync-cfgtool -s`: the local node id and every link, from corosync 3.1's knet
    output; corosync 2's "RING ID" blocks as the exporter reads them."""
    local: int | None = None
    legacy = [Link(int(m["number"]), m["address"], faulty="FAULTY" in m["status"])
              for m in _RING_RE.finditer(text)]  # fmt: skip
    if legacy:
        id_match = re.search(r"(?m)^Local node ID (\d+)", text)
        return (int(id_match[1]) if id_match else None), legacy
    links: list[Link] = []
    for line in text.splitlines():
        if m := _LOCAL_ID_RE.match(line):
            local = int(m[1])
        elif m := _LINK_RE.match(line):
            links.append(Link(int(m[1]), ""))
        elif (m := _ADDR_RE.match(line)) and links:
            links[-1].address = m[1]
        elif (m := _PEER_RE.match(line)) and links and m[2] != "localhost":
            links[-1].peers[int(m[1])] = m[2] == "connected"
    return local, links


# --- DRBD -----------------------------------------------------------------------------------------


@dataclass
class Drbd:
    """One DRBD volume, from /proc/drbd (8.4) or drbdsetup's JSON (9), in 9's terms."""

    resource: str
    volume: int
    minor: int | None
    connection: str  # Connected, StandAlone, WFConnection, SyncSource, ...
    role: str
    peer_role: str
    disk: str
    peer_disk: str
    peer_node_id: int = 0
    counters: dict[str, float] = field(default_factory=dict)  # the exporter's names
    quorum: bool = True
    percent_in_sync: float | None = None
    out_of_sync_bytes: float = 0.0
    sync_eta_s: float | None = None  # DRBD's own estimate while a resync runs
    has_peer: bool = True  # 9: a connection with a peer device (the exporter's condition)


_TOKEN_RE = re.compile(r"(\w+):(\S+)")
# /proc/drbd's counters (KiB or requests) under the names drbdsetup's JSON gives them.
PROC_COUNTERS = {"dw": "written", "dr": "read", "al": "al-writes", "bm": "bm-writes",
                 "ap": "upper-pending", "lo": "lower-pending", "nr": "received",
                 "ns": "sent", "pe": "pending", "ua": "unacked"}  # fmt: skip
_SYNCED_RE = re.compile(r"sync'ed:\s*([\d.]+)%")
_FINISH_RE = re.compile(r"finish:\s*(\d+):(\d+):(\d+)")


def proc_drbd_version(text: str) -> str:
    match = re.search(r"^version: (\S+)", text, re.M)
    return match[1] if match else ""


def parse_proc_drbd(
    text: str, names: dict[int, str], sizes: dict[int, int] | None = None,
    peer_node_id: int = 0,
) -> list[Drbd]:  # fmt: skip
    """DRBD 8.4's /proc/drbd. `names`: minor -> resource (8.4 prints minors only); `sizes`:
    minor -> device size in bytes (for the in-sync percentage outside a resync)."""
    out: list[Drbd] = []
    current: Drbd | None = None
    for line in text.splitlines():
        head = re.match(r"^\s*(\d+): cs:(\S+)", line)
        if head and head[2] == "Unconfigured":
            current = None
            continue
        if head:
            minor = int(head[1])
            tokens = dict(_TOKEN_RE.findall(line))
            role, _, peer_role = tokens.get("ro", "Unknown/Unknown").partition("/")
            disk, _, peer_disk = tokens.get("ds", "Diskless/DUnknown").partition("/")
            out.append(Drbd(names.get(minor, f"minor-{minor}"), 0, minor, head[2], role,
                            peer_role or "Unknown", disk, peer_disk or "DUnknown",
                            peer_node_id))  # fmt: skip
            current = out[-1]
            continue
        if current is None:
            continue
        tokens = dict(_TOKEN_RE.findall(line))
        for key, name in PROC_COUNTERS.items():
            if key in tokens and tokens[key].isdigit():
                current.counters[name] = float(tokens[key])
        if tokens.get("oos", "").isdigit():
            current.out_of_sync_bytes = float(tokens["oos"]) * 1024
        if synced := _SYNCED_RE.search(line):
            current.percent_in_sync = float(synced[1])
        if finish := _FINISH_RE.search(line):
            current.sync_eta_s = float(int(finish[1]) * 3600 + int(finish[2]) * 60
                                       + int(finish[3]))  # fmt: skip
    for volume in out:
        size = (sizes or {}).get(volume.minor or 0)
        if volume.percent_in_sync is None and size:
            volume.percent_in_sync = max(0.0, 100.0 * (1 - volume.out_of_sync_bytes / size))
        elif volume.percent_in_sync is None and volume.out_of_sync_bytes == 0:
            volume.percent_in_sync = 100.0
    return out


def parse_drbdsetup_json(text: str) -> list[Drbd]:
    """DRBD 9's `drbdsetup status --json`: one entry per volume and (first) peer."""
    out: list[Drbd] = []
    for res in json.loads(text or "[]"):
        conns = res.get("connections") or [{}]
        for dev in res.get("devices", []):
            conn = conns[0]
            peer: dict[str, Any] = next((p for p in conn.get("peer_devices", [])
                         if p.get("volume") == dev.get("volume")), {})  # fmt: skip
            volume = Drbd(
                res.get("name", ""), int(dev.get("volume", 0)), dev.get("minor"),
                conn.get("connection-state", "StandAlone"), res.get("role", "Unknown"),
                conn.get("peer-role", "Unknown"), dev.get("disk-state", "Diskless"),
                peer.get("peer-disk-state", "DUnknown"), int(conn.get("peer-node-id", 0)),
                quorum=bool(dev.get("quorum", False)),
                percent_in_sync=peer.get("percent-in-sync"),
                out_of_sync_bytes=float(peer.get("out-of-sync", 0)) * 1024,
                has_peer=bool(res.get("connections")) and bool(peer),
            )
            for name in ("written", "read", "al-writes", "bm-writes", "upper-pending",
                         "lower-pending"):  # fmt: skip
                volume.counters[name] = float(dev.get(name, 0))
            for name in ("received", "sent", "pending", "unacked"):
                volume.counters[name] = float(peer.get(name, 0))
            out.append(volume)
    return out


# --- bonds ----------------------------------------------------------------------------------------


def parse_bonding(text: str) -> dict[str, bool]:
    """/proc/net/bonding/NAME: member -> MII up."""
    members: dict[str, bool] = {}
    member: str | None = None
    for line in text.splitlines():
        if line.startswith("Slave Interface:"):
            member = line.split(":", 1)[1].strip()
        elif line.startswith("MII Status:") and member is not None:
            members[member] = line.split(":", 1)[1].strip() == "up"
            member = None
    return members
