"""What `hakvm init` reads from a machine: one batch of read-only commands (facts.py's batch
runner), their parsers (pure, replayed by the unit tests), and the link probe.

The link probe is the one thing init does on a node beyond reading: it finds which NICs of
the two machines are on one wire or switch with each other. Each free NIC that is down is
taken up for a few seconds (an unconfigured NIC, not enslaved, not carrying an address); every
free NIC pings the IPv6 all-nodes group of its own link (`ff02::1%NIC`: link-local multicast,
never a routed address), the neighbour table then lists the MAC of every NIC that answered,
and every NIC the probe took up is taken down again. Both machines probe at the same time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hakvm.remote.connection import NodeConnection, RemoteError
from hakvm.remote.facts import batch_argv, parse_batch, parse_os_release
from hakvm.remote.session import Target, connect_all
from hakvm.spec.inventory import Bmc, Disk, Inventory, Nic

# /sys/class/net: "name|speed|carrier|driver" per interface (empty when unreadable: a down
# link has no carrier or speed, a virtual one no driver).
NETSYS_SCRIPT = (
    'for d in /sys/class/net/*; do n=${d##*/}; s=$(cat "$d/speed" 2>/dev/null) || s=; '
    'c=$(cat "$d/carrier" 2>/dev/null) || c=; v=$(readlink "$d/device/driver" 2>/dev/null) '
    '|| v=; echo "$n|$s|$c|${v##*/}"; done'
)
HOLDERS_SCRIPT = (
    'for h in /sys/class/block/*/holders/*; do [ -e "$h" ] || continue; d=${h%/holders/*}; '
    'echo "${d##*/} ${h##*/}"; done; true'
)
LSBLK_COLUMNS = "NAME,KNAME,SIZE,TYPE,FSTYPE,PTTYPE,MOUNTPOINTS,RO,RM,MODEL"


def inventory_commands() -> list[tuple[str, list[str]]]:
    """Everything init reads from a machine, read-only, in one remote shell."""
    return [
        ("hostname", ["hostname", "-s"]),
        ("os_release", ["cat", "/etc/os-release"]),
        ("ip_link", ["ip", "-j", "-d", "link", "show"]),
        ("ip_addr", ["ip", "-j", "addr", "show"]),
        ("ip_route", ["ip", "-j", "-4", "route", "show"]),
        ("netsys", ["sh", "-c", NETSYS_SCRIPT]),
        ("lsblk", ["lsblk", "--json", "--bytes", "--paths", "-o", LSBLK_COLUMNS]),
        ("holders", ["sh", "-c", HOLDERS_SCRIPT]),
        ("pvs", ["pvs", "--reportformat", "json", "-o", "pv_name,vg_name"]),
        ("meminfo", ["cat", "/proc/meminfo"]),
        ("lsmem", ["lsmem", "--bytes", "--summary=only"]),
        ("kvm", ["test", "-c", "/dev/kvm"]),
        ("virt", ["systemd-detect-virt"]),
        ("ssh", ["sh", "-c", 'echo "$SSH_CONNECTION"']),
        # ipmitool waits for an absent BMC's answer; a present one answers in seconds.
        ("ipmi_lan", ["timeout", "20", "ipmitool", "lan", "print"]),
        ("ipmi_users", ["timeout", "20", "ipmitool", "user", "list", "1"]),
    ]


# --- parsers (pure) -----------------------------------------------------------------------


def _json(text: str, default: Any) -> Any:
    try:
        return json.loads(text) if text.strip() else default
    except ValueError:
        return default


def _flag(value: object) -> bool:
    """lsblk's booleans: true/false in util-linux 2.38's JSON, "0"/"1" in older ones."""
    return value is True or value in ("1", 1)


def parse_nics(ip_link: str, ip_addr: str, netsys: str) -> dict[str, Nic]:
    sysfs: dict[str, tuple[str, str, str]] = {}
    for line in netsys.splitlines():
        parts = line.split("|")
        if len(parts) == 4:
            sysfs[parts[0]] = (parts[1], parts[2], parts[3])
    addresses: dict[str, tuple[str, ...]] = {}
    for link in _json(ip_addr, []):
        addresses[link.get("ifname", "")] = tuple(
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        )
    nics = {}
    for link in _json(ip_link, []):
        name = link.get("ifname", "")
        if not name or link.get("link_type") != "ether":
            continue
        speed, carrier, driver = sysfs.get(name, ("", "", ""))
        up = "UP" in link.get("flags", [])
        nics[name] = Nic(
            name=name,
            mac=str(link.get("permaddr") or link.get("address", "")).lower(),
            driver=driver or None,
            kind=str((link.get("linkinfo") or {}).get("info_kind", "")),
            up=up,
            carrier=(carrier == "1") if up and carrier in ("0", "1") else None,
            speed_mbps=int(speed) if speed.isdigit() and int(speed) > 0 else None,
            master=link.get("master"),
            ipv4=addresses.get(name, ()),
        )
    return nics


def _disk(dev: dict[str, Any]) -> Disk:
    mounts = dev.get("mountpoints")
    if mounts is None and dev.get("mountpoint"):
        mounts = [dev["mountpoint"]]
    return Disk(
        name=str(dev.get("name", "")),
        kname=str(dev.get("kname") or dev.get("name", "")).rsplit("/", 1)[-1],  # --paths
        size=int(dev.get("size") or 0),
        type=str(dev.get("type", "")),
        fstype=dev.get("fstype") or None,
        pttype=dev.get("pttype") or None,
        mountpoints=tuple(m for m in (mounts or []) if m),
        read_only=_flag(dev.get("ro")),
        removable=_flag(dev.get("rm")),
        model=str(dev.get("model") or "").strip(),
        children=tuple(_disk(c) for c in dev.get("children", []) or []),
    )


def parse_lsblk(text: str) -> list[Disk]:
    return [_disk(d) for d in _json(text, {}).get("blockdevices", [])]


def parse_holders(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        device, _, holder = line.partition(" ")
        if holder:
            out.setdefault(device, []).append(holder)
    return out


def parse_pvs(text: str) -> dict[str, str]:
    return {
        pv["pv_name"]: pv.get("vg_name", "")
        for report in _json(text, {}).get("report", [])
        for pv in report.get("pv", [])
    }


def parse_memory(meminfo: str, lsmem: str) -> tuple[int | None, int | None]:
    """(total, available) in bytes: lsmem's online memory (the RAM the machine has), else
    /proc/meminfo's MemTotal (less what the kernel keeps); MemAvailable now."""
    info = {}
    for line in meminfo.splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB") and value.split()[0].isdigit():
            info[key] = int(value.split()[0]) * 1024
    total = info.get("MemTotal")
    for line in lsmem.splitlines():
        if line.startswith("Total online memory:") and line.split(":")[1].strip().isdigit():
            total = int(line.split(":")[1])
    return total, info.get("MemAvailable")


def parse_bmc(lan: str, users: str) -> Bmc | None:
    """`ipmitool lan print` (the BMC's address) and `user list 1` (an administrator)."""
    fields: dict[str, str] = {}
    for line in lan.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    address = fields.get("IP Address", "")
    if not address or address == "0.0.0.0":
        return None
    user = None
    for line in users.splitlines()[1:]:
        parts = line.split()
        named = len(parts) >= 5 and parts[0].isdigit() and parts[1] not in ("true", "false")
        if named and parts[-1] == "ADMINISTRATOR" and parts[2] == "true":
            user = parts[1]
            break
    return Bmc(address, fields.get("IP Address Source", ""), user)


def inventory_from_batch(batch: dict[str, tuple[int, bytes]]) -> Inventory:
    """An Inventory from parsed batch output (pure: unit tests replay recorded output)."""

    def text(name: str) -> str:
        rc, out = batch.get(name, (1, b""))
        return out.decode("utf-8", "replace") if rc == 0 else ""

    inv = Inventory()
    inv.hostname = text("hostname").strip()
    inv.os_release = parse_os_release(text("os_release"))
    inv.nics = parse_nics(text("ip_link"), text("ip_addr"), text("netsys"))
    inv.disks = parse_lsblk(text("lsblk"))
    inv.holders = parse_holders(text("holders"))
    inv.pvs = parse_pvs(text("pvs"))
    inv.memory_total, inv.memory_available = parse_memory(text("meminfo"), text("lsmem"))
    inv.kvm = batch.get("kvm", (1, b""))[0] == 0
    # systemd-detect-virt exits 1 when it finds none (and says so): read it either way.
    inv.virt = batch.get("virt", (1, b""))[1].decode("utf-8", "replace").strip()
    ssh = text("ssh").split()
    inv.ssh_address = ssh[2] if len(ssh) == 4 else None
    inv.routes = tuple(
        r["dst"] for r in _json(text("ip_route"), []) if r.get("dst") not in (None, "default")
    )
    inv.bmc = parse_bmc(text("ipmi_lan"), text("ipmi_users"))
    return inv


# --- the link probe -------------------------------------------------------------------------

# "$@": the NICs to probe. Taken up if down (and down again on exit, whatever happens), then
# up to 8 s for each to have a usable link-local address, then 10 pings of ff02::1 on each at
# once (the other machine does the same meanwhile); then, while they are up, each NIC's speed
# and carrier ("@link NIC SPEED CARRIER") and the neighbour table (JSON).
PROBE_SCRIPT = r"""
set -u
brought=""
trap 'for n in $brought; do ip link set dev "$n" down; done' EXIT
for n in "$@"; do
  if ! ip -o link show dev "$n" | grep -q '[<,]UP[,>]'; then
    ip link set dev "$n" up && brought="$brought $n"
  fi
done
i=0
while [ "$i" -lt 16 ]; do
  ready=1
  for n in "$@"; do
    ip -6 -o addr show dev "$n" scope link -tentative | grep -q fe80 || ready=0
  done
  [ "$ready" = 1 ] && break
  sleep 0.5; i=$((i + 1))
done
for n in "$@"; do ping -6 -n -q -c 10 -i 1 -w 12 -I "$n" ff02::1 >/dev/null 2>&1 & done
wait
for n in "$@"; do
  d=/sys/class/net/$n
  echo "@link $n $(cat "$d/speed" 2>/dev/null || echo -) $(cat "$d/carrier" 2>/dev/null || echo -)"
done
ip -j -6 neigh show
"""
PROBE_TIMEOUT_S = 90.0


def probe_argv(nics: Iterable[str]) -> list[str]:
    return ["sh", "-c", PROBE_SCRIPT, "probe", *nics]


def parse_probe(text: str, inv: Inventory) -> None:
    """Fill `inv` from the probe's answer: each probed NIC's speed and carrier while it was
    up, and the MACs that answered on its link (`ip -j -6 neigh`, link-local entries only)."""
    lines = text.splitlines()
    probed = []
    for line in lines:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "@link" and parts[1] in inv.nics:
            probed.append(parts[1])
            speed, carrier = parts[2], parts[3]
            inv.nics[parts[1]] = dataclasses.replace(
                inv.nics[parts[1]],
                carrier=carrier == "1" if carrier in ("0", "1") else None,
                speed_mbps=int(speed) if speed.isdigit() and int(speed) > 0 else None,
            )
    neigh = "\n".join(line for line in lines if not line.startswith("@link "))
    inv.neighbours = parse_neighbours(neigh, probed)


def parse_neighbours(text: str, nics: Iterable[str]) -> dict[str, set[str]]:
    """NIC -> MACs that answered on its link (`ip -j -6 neigh`: link-local entries only)."""
    out: dict[str, set[str]] = {n: set() for n in nics}
    for entry in _json(text, []):
        dev, mac = entry.get("dev"), entry.get("lladdr")
        state = set(entry.get("state", []))
        link_local = str(entry.get("dst", "")).startswith("fe80:")
        if dev in out and mac and link_local and not state & {"FAILED", "INCOMPLETE"}:
            out[dev].add(str(mac).lower())
    return out


def probe_candidates(inv: Inventory) -> list[str]:
    """NICs the probe may touch: plain physical NICs that carry nothing (no address, not
    enslaved, not the one the SSH connection came in on)."""
    return sorted(
        n.name
        for n in inv.nics.values()
        if n.physical and n.master is None and not n.ipv4
    )


# --- gathering --------------------------------------------------------------------------------


async def read_inventory(conn: NodeConnection) -> tuple[Inventory, str]:
    """The machine's inventory, and the raw batch answer (to keep for a bug report)."""
    result = await conn.run(batch_argv(inventory_commands()), timeout=300, check=True)
    return inventory_from_batch(parse_batch(result.stdout)), result.stdout


async def probe_links(conns: list[NodeConnection], inventories: list[Inventory]) -> list[str]:
    """Run the link probe on every machine at once; fill each inventory's `neighbours`.
    Returns the raw answers (for a bug report)."""

    async def one(conn: NodeConnection, inv: Inventory) -> str:
        nics = probe_candidates(inv)
        if not nics:
            return ""
        result = await conn.run(probe_argv(nics), timeout=PROBE_TIMEOUT_S)
        if not result.ok:
            detail = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
            raise RemoteError(f"{conn.name}: the link probe failed: {detail}")
        parse_probe(result.stdout, inv)
        return result.stdout

    return list(await asyncio.gather(*(one(c, i) for c, i in zip(conns, inventories, strict=True))))


@dataclass
class Survey:
    """What `hakvm init` read from the machines, with the raw answers (for a bug report)."""

    inventories: list[Inventory]
    raw_batches: list[str]
    raw_probes: list[str]


async def survey(targets: Sequence[Target], directory: Path) -> Survey:
    """Connect to every machine, read its inventory, then probe the links between them."""
    conns = await connect_all(targets, directory)
    try:
        read = await asyncio.gather(*(read_inventory(c) for c in conns))
        inventories = [inv for inv, _ in read]
        probes = await probe_links(conns, inventories)
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    return Survey(inventories, [raw for _, raw in read], probes)
