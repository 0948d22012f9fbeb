"""What `hakvm init` learned about a machine, as plain values (remote/inventory.py reads them
from the node; spec/propose.py turns two of them into a spec), and the judgements that need
no node: is a disk empty, which NICs are free for the cluster.

A disk is empty only when nothing at all is on it: no partition table, no filesystem or
other signature (LVM PV, RAID member, DRBD metadata...), no partitions or volumes on it, no
holders (device mapper, MD), not mounted, writable and not removable.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Nic:
    name: str
    mac: str  # the permanent address when the kernel reports one
    driver: str | None  # /sys/class/net/NAME/device/driver; None: a virtual interface
    kind: str = ""  # ip -d link's linkinfo kind: "" for a plain NIC, bond, bridge, vlan...
    up: bool = False
    carrier: bool | None = None  # None: unknown (the link is down)
    speed_mbps: int | None = None  # None: unknown
    master: str | None = None  # the bond or bridge it is enslaved to
    ipv4: tuple[str, ...] = ()  # CIDRs

    @property
    def physical(self) -> bool:
        return self.driver is not None and not self.kind

    def describe(self) -> str:
        """"eth1 (virtio_net, 1000 Mb/s, carrier, 52:54:00:4c:01:01)"."""
        speed = f"{self.speed_mbps} Mb/s" if self.speed_mbps else "speed unknown"
        carrier = {True: "carrier", False: "no carrier", None: "down"}[self.carrier]
        return f"{self.name} ({self.driver or 'virtual'}, {speed}, {carrier}, {self.mac})"


@dataclass(frozen=True)
class Disk:
    name: str  # /dev/vdb
    kname: str  # vdb: the kernel's name, as /sys/class/block knows it
    size: int
    type: str  # disk, part, lvm, raid1, crypt, rom, loop...
    fstype: str | None = None  # any signature blkid knows: ext4, LVM2_member, drbd...
    pttype: str | None = None  # gpt, dos
    mountpoints: tuple[str, ...] = ()
    read_only: bool = False
    removable: bool = False
    model: str = ""
    children: tuple[Disk, ...] = ()


@dataclass(frozen=True)
class Bmc:
    address: str
    source: str = ""  # "Static Address", "DHCP Address"
    user: str | None = None  # an enabled ADMINISTRATOR user, if the BMC lists one


@dataclass
class Inventory:
    """One machine, as `hakvm init` sees it."""

    hostname: str = ""
    os_release: dict[str, str] = field(default_factory=dict)
    nics: dict[str, Nic] = field(default_factory=dict)
    disks: list[Disk] = field(default_factory=list)  # whole disks, their children inside
    pvs: dict[str, str] = field(default_factory=dict)  # PV device -> its VG ("" for none)
    holders: dict[str, list[str]] = field(default_factory=dict)  # kname -> holder knames
    memory_total: int | None = None
    memory_available: int | None = None
    kvm: bool = False  # /dev/kvm exists
    virt: str = ""  # systemd-detect-virt: none, kvm, qemu (emulated: slow), ...
    ssh_address: str | None = None  # the node's own address of the SSH connection
    routes: tuple[str, ...] = ()  # destination networks of its IPv4 routes
    bmc: Bmc | None = None
    # NIC -> MAC addresses it saw answer an IPv6 link-local ping (remote/inventory's probe)
    neighbours: dict[str, set[str]] = field(default_factory=dict)

    def mac_owner(self, mac: str) -> str | None:
        """The NIC of this machine whose (permanent or current) MAC this is."""
        return next((n.name for n in self.nics.values() if n.mac == mac.lower()), None)

    def used_networks(self) -> list[ipaddress.IPv4Network]:
        """Every IPv4 network the machine has an address in or a route to."""
        nets = [ipaddress.IPv4Interface(a).network for n in self.nics.values() for a in n.ipv4]
        for route in self.routes:
            try:
                nets.append(ipaddress.IPv4Network(route, strict=False))
            except ValueError:
                continue
        return nets


def _walk(disk: Disk) -> list[Disk]:
    return [disk, *(d for child in disk.children for d in _walk(child))]


def disk_problems(disk: Disk, inv: Inventory) -> list[str]:
    """Why `disk` is not an empty disk the pool may be created on ([] when it is)."""
    problems = []
    if disk.type != "disk":
        problems.append(f"is a {disk.type}, not a whole disk")
    if disk.read_only:
        problems.append("is read-only")
    if disk.removable:
        problems.append("is removable")
    if disk.pttype:
        problems.append(f"holds a {disk.pttype} partition table")
    if disk.fstype:
        problems.append(f"holds {disk.fstype} data")
    if disk.name in inv.pvs:
        vg = inv.pvs[disk.name]
        problems.append(f"is an LVM physical volume{f' of {vg}' if vg else ''}")
    if disk.children:
        names = ", ".join(c.name for c in disk.children)
        problems.append(f"has partitions or volumes on it ({names})")
    if inv.holders.get(disk.kname):
        problems.append(f"is held by {', '.join(inv.holders[disk.kname])}")
    mounted = [m for d in _walk(disk) for m in d.mountpoints]
    if mounted:
        problems.append(f"is mounted at {', '.join(mounted)}")
    return problems


def what_is_on(disk: Disk) -> str:
    """A short account of a disk's contents, for the comment of one that is not used."""
    parts = []
    for d in _walk(disk):
        if d.fstype or d.mountpoints:
            at = f" at {', '.join(d.mountpoints)}" if d.mountpoints else ""
            parts.append(f"{d.fstype or 'data'}{at}")
    return ", ".join(dict.fromkeys(parts)) or "partitions"
