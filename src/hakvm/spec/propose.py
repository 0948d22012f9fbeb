"""`hakvm init`'s proposal: two machines' inventories in, a commented spec out (pure).

Networks come from what the link probe saw (spec/inventory.py, remote/inventory.py): NICs
of the two machines that answered each other are on one L2 network. A network where a
machine has two or more NICs is switched; one NIC a side is a back-to-back cable. Then:

- VM network (a bond under bridge br0, replication and a heartbeat link): the first switched
  network, its NICs bonded in active-backup (nothing to configure on the switch); without
  one, the first two cables bonded in 802.3ad (both ends are ours: LACP needs no switch);
- dedicated heartbeat link: a cable left over (the first one);
- addresses: the first free /24s of 10.88.0.0/16 (free: no address or route of either
  machine in them), .1 on the first machine, .2 on the second;
- the pool: the largest empty disk (spec/inventory.disk_problems), 80% of it (the thin
  pool's metadata and its spare need room);
- never touched: the NIC the SSH connection uses, NICs with an address or a master.

Every value in the written YAML carries a comment saying where it came from.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import yaml

from hakvm.errors import StateError
from hakvm.spec.inventory import Disk, Inventory, Nic, disk_problems, what_is_on
from hakvm.spec.models import NAME_RE
from hakvm.spec.units import format_size

GIB = 1024**3
MIB = 1024**2
MIN_POOL_DISK = 4 * GIB
POOL_SHARE = 0.8
SUBNETS = ipaddress.IPv4Network("10.88.0.0/16")
# The nodes are themselves emulated (systemd-detect-virt: qemu, i.e. TCG): fence agents,
# monitors and VM starts take many times longer. The lab's figures (examples/lab.yaml says
# why each one): measured on the TCG lab.
EMULATED_TIMING: tuple[tuple[str, int], ...] = (
    ("token_ms", 3000),
    ("fence_delay_s", 45),
    ("stonith_timeout_s", 150),
    ("vm_start_timeout_s", 300),
    ("monitor_interval_s", 60),
    ("drbd_monitor_interval_s", 60),
    ("monitor_timeout_s", 120),
    ("fence_monitor_interval_s", 300),
    ("load_threshold_pct", 2000),
    ("node_action_limit", 6),
)


class ProposeError(StateError):
    """The machines cannot make a cluster as they are (one line: what is missing)."""


@dataclass(frozen=True)
class Access:
    """How hakvm reaches a machine: what its spec's `ssh` says (paths as written there)."""

    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str


@dataclass(frozen=True)
class KnownBmc:
    """A BMC known without asking the machine (the lab's virtual ones)."""

    address: str
    port: int
    user: str
    password_file: str
    comment: str


@dataclass
class Machine:
    access: Access
    inv: Inventory
    bmc: KnownBmc | None = None
    password_file: str = ""  # where a BMC password is to be written when not known


@dataclass
class Network:
    """NICs of the two machines that answered each other: machine name -> its NICs."""

    nics: dict[str, list[str]] = field(default_factory=dict)

    @property
    def direct(self) -> bool:
        return all(len(v) == 1 for v in self.nics.values())


@dataclass
class Plan:
    """What init decided for the interfaces, per machine."""

    vm_net: dict[str, list[str]]  # machine -> NICs of the VM network (bonded if 2+)
    bond_mode: str
    why: str
    heartbeat: dict[str, str] | None  # machine -> the back-to-back NIC
    subnets: list[ipaddress.IPv4Network]
    unused: list[str]


# --- decisions --------------------------------------------------------------------------------


def free_nics(inv: Inventory) -> list[Nic]:
    """Plain physical NICs that carry nothing: what init may propose for the cluster."""
    return [
        n
        for n in inv.nics.values()
        if n.physical and n.master is None and not n.ipv4
    ]


def networks(machines: list[Machine]) -> list[Network]:
    """L2 networks between the machines, from the link probe (union of who saw whom)."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x: tuple[str, str]) -> tuple[str, str]:
        while parent[x] != x:
            x = parent[x]
        return x

    for m in machines:
        for free in free_nics(m.inv):
            parent[(m.inv.hostname, free.name)] = (m.inv.hostname, free.name)
    for m in machines:
        for nic, macs in m.inv.neighbours.items():
            if (m.inv.hostname, nic) not in parent:
                continue
            for other in machines:
                for mac in macs:
                    peer = (other.inv.hostname, other.inv.mac_owner(mac) or "")
                    if peer in parent:
                        parent[find(peer)] = find((m.inv.hostname, nic))
    groups: dict[tuple[str, str], Network] = {}
    for key in sorted(parent):
        net = groups.setdefault(find(key), Network())
        net.nics.setdefault(key[0], []).append(key[1])
    names = [m.inv.hostname for m in machines]
    found = [n for n in groups.values() if all(name in n.nics for name in names)]
    return sorted(found, key=lambda n: n.nics[names[0]])


def _subnets(machines: list[Machine], count: int) -> list[ipaddress.IPv4Network]:
    used = [net for m in machines for net in m.inv.used_networks()]
    free = (s for s in SUBNETS.subnets(new_prefix=24) if not any(s.overlaps(u) for u in used))
    out = [s for _, s in zip(range(count), free, strict=False)]
    if len(out) < count:
        raise ProposeError(f"init: no free /24 left in {SUBNETS} for the cluster networks")
    return out


def plan_networks(machines: list[Machine]) -> Plan:
    names = [m.inv.hostname for m in machines]
    nets = networks(machines)
    switched = [n for n in nets if not n.direct]
    direct = [n for n in nets if n.direct]
    if switched:
        vm, mode = switched[0].nics, "active-backup"
        why = "one switched network (each NIC sees the other machine's NICs): active-backup"
        rest = direct
    elif len(direct) >= 2:
        vm = {name: [direct[0].nics[name][0], direct[1].nics[name][0]] for name in names}
        mode, rest = "802.3ad", direct[2:]
        why = "two back-to-back cables: bonded in 802.3ad (both ends are ours, no switch)"
    elif direct:
        vm, mode, rest = direct[0].nics, "active-backup", []
        why = "the only cable between the machines"
    else:
        raise ProposeError(
            f"init: no NIC of {names[0]} answered a NIC of {names[1]} (IPv6 link-local ping "
            "on every free NIC): cable them, or write the interfaces into the spec by hand"
        )
    heartbeat = {name: rest[0].nics[name][0] for name in names} if rest else None
    unused = [
        " + ".join(f"{name} {', '.join(n.nics[name])}" for name in names)
        for n in [*switched[1:], *rest[1:]]
    ]
    return Plan(vm, mode, why, heartbeat, _subnets(machines, 2 if heartbeat else 1), unused)


def pool_disk(m: Machine) -> tuple[Disk, int]:
    """The largest empty disk and the pool size on it; ProposeError if there is none."""
    empty = [
        d for d in m.inv.disks if not disk_problems(d, m.inv) and d.size >= MIN_POOL_DISK
    ]
    if not empty:
        why = "; ".join(
            f"{d.name} {', '.join(disk_problems(d, m.inv)) or 'is under 4GiB'}"
            for d in m.inv.disks
        )
        raise ProposeError(
            f"init: {m.inv.hostname} has no empty disk for the VM pool ({why or 'no disks'}): "
            "add one (nothing on it, not even a partition table)"
        )
    disk = max(empty, key=lambda d: (d.size, d.name))
    return disk, max(GIB, int(disk.size * POOL_SHARE) // GIB * GIB)


def os_family(machines: list[Machine]) -> tuple[str, str]:
    """("debian12" or "rhel9", the machines' PRETTY_NAME)."""
    families = set()
    for m in machines:
        rel = m.inv.os_release
        major = rel.get("VERSION_ID", "").split(".")[0]
        if rel.get("ID") == "debian" and major == "12":
            families.add("debian12")
        elif {rel.get("ID", ""), *rel.get("ID_LIKE", "").split()} & {"rhel", "centos"} and (
            major == "9"
        ):
            families.add("rhel9")
        else:
            pretty = rel.get("PRETTY_NAME", "an unknown OS")
            raise ProposeError(
                f"init: {m.inv.hostname} runs {pretty}; hakvm supports Debian 12 and RHEL 9"
            )
    if len(families) != 1:
        raise ProposeError("init: the two machines run different OS families; install one")
    return families.pop(), machines[0].inv.os_release.get("PRETTY_NAME", "")


def check_names(machines: list[Machine]) -> None:
    names = [m.inv.hostname for m in machines]
    for m in machines:
        if not re.match(NAME_RE, m.inv.hostname):
            raise ProposeError(
                f"init: {m.access.host}: hostname {m.inv.hostname!r} cannot be a node name "
                "(lower-case letters, digits, '-'): set it with hostnamectl hostname NAME"
            )
    if len(set(names)) != len(names):
        raise ProposeError(f"init: both machines are called {names[0]!r}: rename one")


def _free_name(prefix: str, machines: list[Machine]) -> str:
    taken = {n for m in machines for n in m.inv.nics}
    return next(f"{prefix}{i}" for i in range(100) if f"{prefix}{i}" not in taken)


def reserved_memory(total: int) -> int:
    """RAM kept for the host: 2GiB, or half of a small machine's (in 256MiB steps)."""
    return min(2 * GIB, max(256 * MIB, total // 2 // (256 * MIB) * (256 * MIB)))


# --- the YAML -------------------------------------------------------------------------------------

COMMENT_COLUMN = 40


def scalar(value: object) -> str:
    """One YAML scalar: plain when that reads back as the same string, else quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./@:+~-]+", text) and yaml.safe_load(text) == text:
        return text
    return json.dumps(text)


def flow(items: Iterable[tuple[str, object]]) -> str:
    """A flow mapping: {a: 1, b: [x, y]}."""
    parts = []
    for key, value in items:
        if isinstance(value, list):
            shown = "[" + ", ".join(scalar(v) for v in value) + "]"
        else:
            shown = scalar(value)
        parts.append(f"{key}: {shown}")
    return "{" + ", ".join(parts) + "}"


class Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, indent: int, text: str, comment: str = "") -> None:
        line = " " * indent + text
        if comment:
            line = line.ljust(COMMENT_COLUMN - 1) + f" # {comment}"
        self.lines.append(line)

    def note(self, indent: int, comment: str) -> None:
        self.lines.append(" " * indent + f"# {comment}")


def _cluster(out: Text, machines: list[Machine], name: str, named: str) -> None:
    family, pretty = os_family(machines)
    names = [m.inv.hostname for m in machines]
    out.add(0, "cluster:")
    out.add(2, f"name: {scalar(name)}", named)
    out.add(2, f"os: {family}", f"/etc/os-release: {pretty}")
    emulated = [m.inv.hostname for m in machines if m.inv.virt == "qemu"]
    if emulated:
        # An emulated machine's /dev/kvm (the lab's nodes have one: TCG emulates SVM) would
        # run the VMs on a CPU extension that is itself emulated: the lab's spec says qemu.
        on = ", ".join(emulated)
        out.add(2, "hypervisor: qemu", f"{on} emulated (systemd-detect-virt: qemu): VMs too")
    elif all(m.inv.kvm for m in machines):
        out.add(2, "hypervisor: kvm", "/dev/kvm on both machines")
    else:
        lacking = ", ".join(m.inv.hostname for m in machines if not m.inv.kvm)
        out.add(2, "hypervisor: qemu", f"no /dev/kvm on {lacking}: VMs are emulated")
    if emulated:
        out.add(2, "timing:", f"systemd-detect-virt: qemu on {', '.join(emulated)} (emulated):")
        out.note(4, "slow nodes get the timing measured on hakvm's TCG lab (examples/lab.yaml)")
        for key, value in EMULATED_TIMING:
            out.add(4, f"{key}: {value}")
    out.add(2, "fencing:")
    out.add(4, "race_protection: static-delay")
    out.add(4, f"preferred_survivor: {names[0]}", "proposal: it wins a fence race")
    out.lines.append("")


def _heartbeat(out: Text, machines: list[Machine], plan: Plan) -> None:
    names = [m.inv.hostname for m in machines]
    out.add(0, "heartbeat:")
    if plan.heartbeat is not None:
        link = " <-> ".join(f"{n} {plan.heartbeat[n]}" for n in names)
        out.add(2, f"- network: {plan.subnets[1]}", f"back-to-back: {link}")
        out.add(4, "priority: 2", "corosync prefers it")
    out.add(2, f"- network: {plan.subnets[0]}", "the VM network; proposal: a free /24")
    out.add(4, "priority: 1")
    out.lines.append("")


def _answered(nic: str, m: Machine, machines: list[Machine]) -> list[str]:
    """Who answered `nic`'s link-local ping: "node02 eth1" for a NIC of either machine."""
    out = []
    for mac in sorted(m.inv.neighbours.get(nic, set())):
        owner = next(
            (f"{o.inv.hostname} {o.inv.mac_owner(mac)}" for o in machines if o.inv.mac_owner(mac)),
            None,
        )
        out.append(owner or f"{mac} (another machine)")
    return out


@dataclass
class Layout:
    """What the YAML of each node is written from."""

    machines: list[Machine]
    plan: Plan
    bond: str
    bridge: str


def _interfaces(out: Text, lay: Layout, index: int) -> None:
    m, plan = lay.machines[index], lay.plan
    inv = m.inv
    ssh_nic = next((n for n in inv.nics.values() if any(
        a.split("/")[0] == inv.ssh_address for a in n.ipv4)), None)  # fmt: skip
    out.add(4, "interfaces:")
    if ssh_nic is not None:
        out.note(6, f"{ssh_nic.describe()} carries {inv.ssh_address}, the SSH path: left alone")
    members = plan.vm_net[inv.hostname]
    for member in members:
        answered = ", ".join(_answered(member, m, lay.machines)) or "nobody"
        out.note(6, f"{inv.nics[member].describe()} answered by {answered}")
    address = f"{plan.subnets[0][index + 1]}/{plan.subnets[0].prefixlen}"
    port = members[0]
    if len(members) > 1:
        port = lay.bond
        out.add(6, "bonds:", plan.why)
        bond_fields: list[tuple[str, object]] = [("members", members), ("mode", plan.bond_mode)]
        out.add(8, f"{lay.bond}: {flow(bond_fields)}")
    out.add(6, "bridges:", "" if len(members) > 1 else plan.why)
    bridge_fields: list[tuple[str, object]] = [("ports", [port]), ("addresses", [address])]
    out.add(8, f"{lay.bridge}: {flow(bridge_fields)}", "VMs attach here")
    if plan.heartbeat is not None:
        hb_nic = plan.heartbeat[inv.hostname]
        hb = f"{plan.subnets[1][index + 1]}/{plan.subnets[1].prefixlen}"
        answered = ", ".join(_answered(hb_nic, m, lay.machines)) or "nobody"
        out.add(6, "ethernets:")
        out.note(8, f"{inv.nics[hb_nic].describe()} answered by {answered}")
        out.add(8, f"{hb_nic}: {flow([('addresses', [hb])])}", "the dedicated heartbeat link")
    taken = {*members, *(plan.heartbeat.values() if plan.heartbeat else ())}
    for nic in free_nics(inv):
        if nic.name not in taken:
            out.note(6, f"not used: {nic.describe()}")


def _bmc(out: Text, m: Machine) -> None:
    inv = m.inv
    if m.bmc is not None:
        fields: list[tuple[str, object]] = [
            ("address", m.bmc.address), ("port", m.bmc.port), ("user", m.bmc.user),
            ("password_file", m.bmc.password_file),
        ]  # fmt: skip
        out.note(4, m.bmc.comment)
        out.add(4, f"bmc: {flow(fields)}")
        return
    out.add(4, "bmc:")
    if inv.bmc is not None:
        out.add(6, f"address: {scalar(inv.bmc.address)}", f"ipmitool lan print ({inv.bmc.source})")
    else:
        out.add(6, f"address: TODO-{inv.hostname}-bmc", "TODO: ipmitool lan print did not answer")
    if inv.bmc is not None and inv.bmc.user:
        out.add(6, f"user: {scalar(inv.bmc.user)}", "ipmitool user list: an administrator")
    else:
        out.add(6, "user: TODO", "TODO: a BMC user allowed to power the machine off")
    out.add(6, f"password_file: {scalar(m.password_file)}",
            "TODO: write the BMC password into it, chmod 600")  # fmt: skip


def _storage(out: Text, m: Machine) -> None:
    disk, size = pool_disk(m)
    out.add(4, "storage:")
    out.add(6, "volume_group: hakvm")
    out.add(6, "thin_pool: drbdpool")
    share = f"{int(POOL_SHARE * 100)}% of {disk.name} ({format_size(disk.size)})"
    out.add(6, f"size: {format_size(size)}", f"{share}; the rest: pool metadata")
    what = f"{disk.name} {disk.model}".strip()
    out.note(6, f"{what}: empty (no partition table, filesystem, PV, holder or mount)")
    out.add(6, "create_from:", "apply wipes it and makes it the pool")
    out.add(8, f"device: {disk.name}")
    out.add(8, "destroy_existing_data: true")
    for other in m.inv.disks:
        if other is not disk:
            problems = disk_problems(other, m.inv)
            said = f"holds {what_is_on(other)}" if problems else "empty, smaller"
            out.note(6, f"not used: {other.name} ({format_size(other.size)}): {said}")


def _node(out: Text, lay: Layout, index: int) -> None:
    m = lay.machines[index]
    inv, a = m.inv, m.access
    out.add(2, f"- name: {inv.hostname}", f"hostname of {a.user}@{a.host}:{a.port}")
    ssh: list[tuple[str, object]] = [
        ("host", a.host), ("port", a.port), ("user", a.user), ("key_file", a.key_file),
        ("known_hosts", a.known_hosts),
    ]  # fmt: skip
    out.add(4, f"ssh: {flow(ssh)}")
    total = inv.memory_total
    if total is None:
        raise ProposeError(f"init: {inv.hostname}: neither lsmem nor /proc/meminfo answered")
    total = total // MIB * MIB
    free = f", {format_size(inv.memory_available // MIB * MIB)} free now" if (
        inv.memory_available) else ""  # fmt: skip
    out.add(4, f"memory: {format_size(total)}", f"the machine's RAM (lsmem){free}")
    out.add(4, f"reserved_memory: {format_size(reserved_memory(total))}",
            "proposal: kept for the host itself")  # fmt: skip
    _interfaces(out, lay, index)
    _bmc(out, m)
    _storage(out, m)


def propose(
    machines: list[Machine], *, cluster_name: str, source: str, named: str = "proposal"
) -> str:
    """The spec for these two machines, as commented YAML; ProposeError if they cannot be a
    cluster as they are (no cable between them, no empty disk, an unsupported OS...)."""
    check_names(machines)
    plan = plan_networks(machines)
    lay = Layout(machines, plan, _free_name("bond", machines), _free_name("br", machines))
    out = Text()
    out.note(0, f"Written by `{source}` from what the two machines reported. Each value says")
    out.note(0, "where it came from; 'proposal' marks a free choice, TODO what init cannot know.")
    out.note(0, "Next: hakvm validate FILE; hakvm plan FILE; hakvm apply FILE; hakvm drill FILE")
    out.lines.append("")
    _cluster(out, machines, cluster_name, named)
    _heartbeat(out, machines, plan)
    out.add(0, "nodes:")
    for i in range(len(machines)):
        _node(out, lay, i)
    for text in plan.unused:
        out.note(0, f"also between the machines, not used: {text}")
    out.lines.append("")
    out.add(0, "vms: []", "add VMs here, or later with hakvm vm add; for example:")
    vm: list[tuple[str, object]] = [("name", "vm1"), ("vcpus", 2), ("memory", "2GiB")]
    example = flow(vm)[:-1] + ", disk: {size: 20GiB}, preferred_node: "
    example += f"{machines[0].inv.hostname}, networks: [{{bridge: {lay.bridge}}}]}}"
    out.note(0, "vms:")
    out.note(0, f"  - {example}")
    return "\n".join(out.lines) + "\n"
