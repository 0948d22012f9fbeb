"""Facts: what a node is, read with one command each and parsed by a pure function.

Parsers are separate from the commands so unit tests can replay recorded real output.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hakvm.remote.connection import NodeConnection

FILE_MARK = "@@hakvm-file"


@dataclass(frozen=True)
class FileFact:
    content: bytes
    mode: int


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    vg: str
    size: int
    attr: str
    pool: str
    tags: tuple[str, ...]

    @property
    def is_thin_pool(self) -> bool:
        return self.attr.startswith("t")


@dataclass(frozen=True)
class DrbdResource:
    name: str
    minor: int | None
    connection: str  # Connected, StandAlone, WFConnection, SyncSource, ...
    role: str  # Primary / Secondary / Unknown
    peer_role: str
    disk: str  # UpToDate, Inconsistent, Diskless, ...
    peer_disk: str
    sync_percent: float | None = None


@dataclass
class NodeFacts:
    name: str
    os_release: dict[str, str] = field(default_factory=dict)
    packages: set[str] = field(default_factory=set)
    files: dict[str, FileFact | None] = field(default_factory=dict)
    addresses: dict[str, list[str]] = field(default_factory=dict)  # ifname -> CIDRs
    links_up: dict[str, bool] = field(default_factory=dict)
    volume_groups: dict[str, int] = field(default_factory=dict)  # name -> size
    logical_volumes: dict[tuple[str, str], LogicalVolume] = field(default_factory=dict)
    block_devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    drbd: dict[str, DrbdResource] = field(default_factory=dict)
    services_active: dict[str, bool] = field(default_factory=dict)
    services_enabled: dict[str, bool] = field(default_factory=dict)
    cib: str | None = None
    crm_mon: str | None = None
    domains: dict[str, str] = field(default_factory=dict)  # name -> state

    @property
    def os_id(self) -> str:
        return self.os_release.get("ID", "")


# --- parsers (pure) ---------------------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip().strip('"')
    return out


def parse_dpkg_packages(text: str) -> set[str]:
    """`dpkg-query -W -f='${Package} ${db:Status-Status}\\n'`: installed ones only."""
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == "installed":
            out.add(parts[0].split(":")[0])
    return out


def parse_files(text: str) -> dict[str, FileFact | None]:
    """Blocks printed by FILES_SCRIPT: a mark line, then base64 content on one line."""
    out: dict[str, FileFact | None] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(FILE_MARK + " "):
            _, state, mode, path = line.split(" ", 3)
            if state == "absent":
                out[path] = None
            else:
                payload = lines[i + 1] if i + 1 < len(lines) else ""
                out[path] = FileFact(base64.b64decode(payload), int(mode, 8))
                i += 1
        i += 1
    return out


def parse_ip_addr(text: str) -> tuple[dict[str, list[str]], dict[str, bool]]:
    addresses: dict[str, list[str]] = {}
    up: dict[str, bool] = {}
    for link in json.loads(text or "[]"):
        name = link.get("ifname", "")
        up[name] = "UP" in link.get("flags", [])
        addresses[name] = [
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        ]
    return addresses, up


def parse_lvm(
    vgs_json: str, lvs_json: str
) -> tuple[dict[str, int], dict[tuple[str, str], LogicalVolume]]:
    vgs: dict[str, int] = {}
    lvs: dict[tuple[str, str], LogicalVolume] = {}
    if vgs_json.strip():
        for report in json.loads(vgs_json).get("report", []):
            for vg in report.get("vg", []):
                vgs[vg["vg_name"]] = int(str(vg["vg_size"]).rstrip("B"))
    if lvs_json.strip():
        for report in json.loads(lvs_json).get("report", []):
            for lv in report.get("lv", []):
                tags = tuple(t for t in lv.get("lv_tags", "").split(",") if t)
                item = LogicalVolume(
                    lv["lv_name"],
                    lv["vg_name"],
                    int(str(lv["lv_size"]).rstrip("B")),
                    lv.get("lv_attr", ""),
                    lv.get("pool_lv", ""),
                    tags,
                )
                lvs[(item.vg, item.name)] = item
    return vgs, lvs


_PROC_DRBD_RE = re.compile(
    r"^\s*(?P<minor>\d+): cs:(?P<cs>\S+) ro:(?P<ro>\S+)/(?P<pro>\S+) ds:(?P<ds>\S+)/(?P<pds>\S+)"
)
_SYNC_RE = re.compile(r"sync'ed:\s*(?P<pct>[\d.]+)%")


def parse_proc_drbd(text: str, minors: dict[int, str]) -> dict[str, DrbdResource]:
    """DRBD 8.4's /proc/drbd; `minors` maps minor -> resource name (from our config)."""
    out: dict[str, DrbdResource] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _PROC_DRBD_RE.match(line)
        if match:
            minor = int(match["minor"])
            current = minors.get(minor, f"minor-{minor}")
            out[current] = DrbdResource(
                current, minor, match["cs"], match["ro"], match["pro"], match["ds"], match["pds"]
            )
            continue
        sync = _SYNC_RE.search(line)
        if sync and current is not None:
            r = out[current]
            out[current] = DrbdResource(
                r.name,
                r.minor,
                r.connection,
                r.role,
                r.peer_role,
                r.disk,
                r.peer_disk,
                float(sync["pct"]),
            )
    return out


def parse_drbdsetup_json(text: str) -> dict[str, DrbdResource]:
    """DRBD 9's `drbdsetup status --json` (two-node: first connection and peer device)."""
    out: dict[str, DrbdResource] = {}
    for res in json.loads(text or "[]"):
        devices = res.get("devices", [])
        conns = res.get("connections", [])
        conn = conns[0] if conns else {}
        peer_devices = conn.get("peer_devices", [])
        peer = peer_devices[0] if peer_devices else {}
        out[res["name"]] = DrbdResource(
            res["name"],
            devices[0].get("minor") if devices else None,
            conn.get("connection-state", "StandAlone"),
            res.get("role", "Unknown"),
            conn.get("peer-role", "Unknown"),
            devices[0].get("disk-state", "Diskless") if devices else "Diskless",
            peer.get("peer-disk-state", "DUnknown"),
            peer.get("percent-in-sync"),
        )
    return out


def parse_services(text: str) -> tuple[dict[str, bool], dict[str, bool]]:
    active: dict[str, bool] = {}
    enabled: dict[str, bool] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        active[parts[0]] = len(parts) > 1 and parts[1] == "active"
        enabled[parts[0]] = len(parts) > 2 and parts[2] in ("enabled", "static", "indirect")
    # libvirtd is socket-activated on Debian: a listening socket counts as running.
    if active.get("libvirtd.socket"):
        active["libvirtd"] = True
    if enabled.get("libvirtd.socket"):
        enabled["libvirtd"] = True
    return active, enabled


def parse_virsh_list(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines()[2:]:
        parts = line.split(None, 2)
        if len(parts) >= 3:
            out[parts[1]] = parts[2].strip()
    return out


# --- gathering ----------------------------------------------------------------------------------

FILES_SCRIPT = (
    'for f; do if [ -f "$f" ]; then printf "' + FILE_MARK + ' present %s %s\\n" '
    '"$(stat -c %a "$f")" "$f"; base64 -w0 "$f"; echo; '
    'else printf "' + FILE_MARK + ' absent 0 %s\\n" "$f"; fi; done'
)
SERVICES = ["corosync", "pacemaker", "libvirtd", "hakvm-firewall"]
# One line per unit, "NAME ACTIVE ENABLED": `systemctl is-enabled` prints nothing on stdout
# for a unit that does not exist, which would shift a multi-unit answer.
SERVICES_SCRIPT = (
    'for u; do printf "%s %s %s\\n" "$u" "$(systemctl is-active "$u" 2>/dev/null)" '
    '"$(systemctl is-enabled "$u" 2>/dev/null)"; done'
)


async def gather_facts(
    conn: NodeConnection, paths: Iterable[str], minors: dict[int, str]
) -> NodeFacts:
    """Everything plan needs from one node; commands run concurrently on the connection."""
    facts = NodeFacts(conn.name)
    paths = sorted(set(paths))

    async def text(argv: list[str]) -> str:
        result = await conn.run(argv, timeout=120)
        return result.stdout if result.ok else ""

    (
        os_release,
        dpkg,
        files,
        ip_addr,
        vgs,
        lvs,
        lsblk,
        proc_drbd,
        drbd_json,
        services,
        virsh,
    ) = await asyncio.gather(
        text(["cat", "/etc/os-release"]),
        text(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\\n"]),
        text(["sh", "-c", FILES_SCRIPT, "sh", *paths]),
        text(["ip", "-j", "addr", "show"]),
        text(["vgs", "--reportformat", "json", "--units", "b", "-o", "vg_name,vg_size"]),
        text(
            [
                "lvs",
                "--reportformat",
                "json",
                "--units",
                "b",
                "-o",
                "lv_name,vg_name,lv_size,lv_attr,pool_lv,lv_tags",
            ]
        ),
        text(["lsblk", "-J", "-b", "-p", "-o", "NAME,SIZE,TYPE,FSTYPE,MOUNTPOINT"]),
        text(["cat", "/proc/drbd"]),
        text(["drbdsetup", "status", "--json"]),
        text(["sh", "-c", SERVICES_SCRIPT, "sh", *SERVICES, "libvirtd.socket"]),
        text(["virsh", "-c", "qemu:///system", "list", "--all"]),
    )
    facts.os_release = parse_os_release(os_release)
    facts.packages = parse_dpkg_packages(dpkg)
    facts.files = parse_files(files)
    facts.addresses, facts.links_up = parse_ip_addr(ip_addr)
    facts.volume_groups, facts.logical_volumes = parse_lvm(vgs, lvs)
    for dev in json.loads(lsblk or '{"blockdevices": []}').get("blockdevices", []):
        facts.block_devices[dev["name"]] = dev
        for child in dev.get("children", []) or []:
            facts.block_devices[child["name"]] = child
    facts.drbd = parse_proc_drbd(proc_drbd, minors)
    if not facts.drbd and drbd_json.strip().startswith("["):
        facts.drbd = parse_drbdsetup_json(drbd_json)
    facts.services_active, facts.services_enabled = parse_services(services)
    facts.domains = parse_virsh_list(virsh)
    if facts.services_active.get("pacemaker"):
        cib = await conn.run(["cibadmin", "-Q", "--local"], timeout=60)
        facts.cib = cib.stdout if cib.ok else None
        mon = await conn.run(["crm_mon", "--output-as=xml", "-1"], timeout=60)
        facts.crm_mon = mon.stdout if mon.ok else None
    return facts
