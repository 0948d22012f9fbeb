"""Block devices as a node sees them, for the guard in front of `storage.create_from`'s wipe.

Three answers of the facts batch, parsed here (pure, so unit tests replay recorded output):
one `lsblk --json` tree (each device with its partitions and holders as children: LVM,
dm-crypt, md), `pvs` (the volume group of each LVM PV, which lsblk does not say) and the
`/dev/disk/by-*` links (lsblk does not list them), so a spec may name a disk by its stable
`/dev/disk/by-id/...` name and the guard still sees the device behind it.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

LSBLK_COLUMNS = "NAME,PATH,SIZE,TYPE,FSTYPE,PTTYPE,MOUNTPOINTS,SERIAL,WWN"
LSBLK_ARGV = ["lsblk", "--json", "-b", "-o", LSBLK_COLUMNS]
PVS_ARGV = ["pvs", "--reportformat", "json", "-o", "pv_name,vg_name"]
LINKS_ARGV = ["find", "/dev/disk", "-type", "l", "-printf", "%p %l\\n"]


@dataclass(frozen=True)
class BlockDevice:
    """One `lsblk` device; `children` are its partitions and whatever sits on it."""

    name: str
    path: str
    size: int
    type: str
    fstype: str = ""
    pttype: str = ""
    mountpoints: tuple[str, ...] = ()
    serial: str = ""
    wwn: str = ""
    vg: str = ""  # the volume group of an LVM PV (from pvs); "" if none
    children: tuple[BlockDevice, ...] = ()

    def descendants(self) -> Iterator[BlockDevice]:
        for child in self.children:
            yield child
            yield from child.descendants()

    @property
    def partition_table(self) -> str:
        """The device's own partition table (lsblk gives a partition its parent's)."""
        return "" if self.type == "part" else self.pttype

    @property
    def signature(self) -> str:
        """What it holds, as `storage.create_from.expect_signature` names it ("": nothing
        lsblk or pvs can name)."""
        if self.fstype or self.partition_table:
            return self.fstype or self.partition_table
        if self.vg:
            return "LVM2_member"  # pvs knows it a PV before udev's database does
        return "partitions" if any(c.type == "part" for c in self.children) else ""

    def line(self) -> str:
        """The device as `lsblk -P` prints it (its columns, each KEY="value")."""
        values = (
            self.name, self.path, str(self.size), self.type, self.fstype, self.pttype,
            ",".join(self.mountpoints), self.serial, self.wwn,
        )  # fmt: skip
        return " ".join(f'{k}="{v}"' for k, v in zip(LSBLK_COLUMNS.split(","), values, strict=True))


@dataclass
class Disks:
    """Every block device of a node by path, and its /dev/disk/by-* links."""

    devices: dict[str, BlockDevice] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # /dev/disk/by-id/x -> /dev/sdb

    def resolve(self, name: str) -> BlockDevice | None:
        """The device `name` is (a device path or a /dev/disk/by-* link); None: not there."""
        return self.devices.get(self.links.get(name, name))


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _device(raw: dict[str, Any], vgs: dict[str, str]) -> BlockDevice:
    path = _text(raw.get("path")) or _text(raw.get("name"))
    mounts = raw.get("mountpoints")
    if mounts is None and raw.get("mountpoint"):  # lsblk before 2.37 had only MOUNTPOINT
        mounts = [raw["mountpoint"]]
    return BlockDevice(
        name=_text(raw.get("name")),
        path=path,
        size=int(raw.get("size") or 0),
        type=_text(raw.get("type")),
        fstype=_text(raw.get("fstype")),
        pttype=_text(raw.get("pttype")),
        mountpoints=tuple(m for m in (mounts or []) if m),
        serial=_text(raw.get("serial")),
        wwn=_text(raw.get("wwn")),
        vg=vgs.get(path, ""),
        children=tuple(_device(c, vgs) for c in raw.get("children") or []),
    )


def parse_pvs(text: str) -> dict[str, str]:
    """`pvs --reportformat json -o pv_name,vg_name`: PV path -> its VG ("" for none)."""
    out: dict[str, str] = {}
    if text.strip():
        for report in json.loads(text).get("report", []):
            for pv in report.get("pv", []):
                out[pv["pv_name"]] = pv.get("vg_name", "")
    return out


def parse_links(text: str) -> dict[str, str]:
    """`find /dev/disk -type l -printf '%p %l\\n'`: link -> the device path it points to
    (udev escapes blanks in link names, so the first blank ends the name)."""
    out = {}
    for line in text.splitlines():
        link, sep, target = line.partition(" ")
        if sep and target:
            out[link] = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
    return out


def parse_disks(lsblk: str, pvs: str = "", links: str = "") -> Disks:
    vgs = parse_pvs(pvs)
    disks = Disks(links=parse_links(links))
    for raw in json.loads(lsblk or '{"blockdevices": []}').get("blockdevices", []):
        top = _device(raw, vgs)
        for dev in (top, *top.descendants()):
            disks.devices.setdefault(dev.path, dev)
    return disks
