"""Values derived from the spec, never typed by hand: DRBD minors and ports, MACs, link addresses.

Minors are allocated in declaration order, but an allocation already in use on the cluster
(read from the nodes' DRBD configuration by `plan`) is always kept: removing or reordering VMs
in the spec must never renumber a live DRBD resource.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from hakvm.spec.models import ClusterSpec, FenceRaceProtection, Node, Vm, vlan_parent

MAX_DRBD_MINOR = 255  # DRBD 8.4's minor_count ceiling; 9.x allows more, 8.4 is the floor


@dataclass(frozen=True)
class VmDerived:
    minor: int
    port: int
    macs: tuple[str, ...]

    @property
    def device(self) -> str:
        return f"/dev/drbd{self.minor}"


@dataclass(frozen=True)
class NetworkAddresses:
    network: ipaddress.IPv4Network
    addresses: Mapping[str, ipaddress.IPv4Address]  # node name -> address on that network


@dataclass(frozen=True)
class LinkAddress(NetworkAddresses):
    link: int  # knet link number
    priority: int


@dataclass(frozen=True)
class Derived:
    vms: Mapping[str, VmDerived]
    links: tuple[LinkAddress, ...]
    preferred_survivor: str
    problems: tuple[str, ...] = field(default=())  # allocation problems, reported by validate


def derive_mac(cluster_name: str, vm_name: str, index: int) -> str:
    """A stable locally administered MAC in QEMU/KVM's 52:54:00 range."""
    digest = hashlib.sha256(f"{cluster_name}/{vm_name}/{index}".encode()).digest()
    return "52:54:00:{:02x}:{:02x}:{:02x}".format(*digest[:3])


def resync_attribute(vm: str) -> str:
    """The transient node attribute DRBD's before-resync-target handler sets while this
    node resyncs the VM's disk (its local copy is not yet whole); after-resync-target
    clears it. The CIB keeps the VM off a node that has it. (render/drbd.py has the same
    function for the handlers and the CIB; here `hakvm status` reads it without loading the
    renderers.)"""
    return f"hakvm-resyncing-{vm}"


def allocate_minors(vms: list[Vm], existing: Mapping[str, int] | None = None) -> dict[str, int]:
    """Keep existing minors; give every new VM the lowest free one, in declaration order."""
    existing = existing or {}
    minors: dict[str, int] = {}
    used: set[int] = set()
    for vm in vms:
        if vm.name in existing:
            minors[vm.name] = existing[vm.name]
            used.add(existing[vm.name])
    # Minors held by resources that are no longer in the spec stay reserved until removed.
    used.update(existing.values())
    next_free = 0
    for vm in vms:
        if vm.name in minors:
            continue
        while next_free in used:
            next_free += 1
        minors[vm.name] = next_free
        used.add(next_free)
    return minors


def node_addresses(node: Node) -> list[ipaddress.IPv4Interface]:
    ifaces = node.interfaces
    out: list[ipaddress.IPv4Interface] = []
    for group in (ifaces.bonds, ifaces.ethernets, ifaces.bridges, ifaces.vlans):
        for cfg in group.values():
            out.extend(cfg.addresses)
    return out


def interface_of(node: Node, address: ipaddress.IPv4Address | str) -> str | None:
    """The name of the node's interface that holds `address`."""
    ifaces = node.interfaces
    for group in (ifaces.bonds, ifaces.ethernets, ifaces.bridges, ifaces.vlans):
        for name, cfg in group.items():
            if any(str(a.ip) == str(address) for a in cfg.addresses):
                return name
    return None


def network_addresses(
    spec: ClusterSpec, network: ipaddress.IPv4Network
) -> dict[str, ipaddress.IPv4Address]:
    """node name -> its first address in `network`."""
    found: dict[str, ipaddress.IPv4Address] = {}
    for node in spec.nodes:
        for addr in node_addresses(node):
            if addr.ip in network:
                found.setdefault(node.name, addr.ip)
    return found


def link_addresses(spec: ClusterSpec) -> tuple[LinkAddress, ...]:
    return tuple(
        LinkAddress(
            link=number,
            network=hb.network,
            priority=hb.priority,
            addresses=network_addresses(spec, hb.network),
        )
        for number, hb in enumerate(spec.heartbeat)
    )


def on_bond(node: Node, ip: ipaddress.IPv4Address) -> bool:
    """True when `ip` sits on a bond, on a bridge with a bond among its ports, or on a VLAN
    of a bond."""
    name = interface_of(node, ip)
    ifaces = node.interfaces
    if name in ifaces.vlans:
        name = vlan_parent(name)[0]
    if name in ifaces.bridges:
        return any(port in ifaces.bonds for port in ifaces.bridges[name].ports)
    return name in ifaces.bonds


def replication_network(
    spec: ClusterSpec, links: tuple[LinkAddress, ...]
) -> NetworkAddresses | None:
    """The network DRBD replicates over and live migrations use; None: no candidate.

    `replication.network` when the spec has one (the heartbeat link itself when it is one
    of them). Otherwise a heartbeat link whose address is on a bond (or a bridge or VLAN
    over a bond) on both nodes; among several such links, or when there is none, the one
    corosync uses last (lowest priority, then highest link number; knet prefers the highest
    priority, then the lowest number). The bond has the bandwidth and redundancy replication
    needs, and keeping replication off the link corosync is using keeps a resync from
    delaying heartbeats.
    """
    names = [n.name for n in spec.nodes]
    if spec.replication is not None:
        network = spec.replication.network
        same = [link for link in links if link.network == network]
        if same:
            return same[0]
        return NetworkAddresses(network, network_addresses(spec, network))
    complete = [link for link in links if all(n in link.addresses for n in names)]
    if not complete:
        return None
    bonded = [
        link for link in complete if all(on_bond(n, link.addresses[n.name]) for n in spec.nodes)
    ]
    return min(bonded or complete, key=lambda link: (link.priority, -link.link))


def derive(spec: ClusterSpec, existing_minors: Mapping[str, int] | None = None) -> Derived:
    minors = allocate_minors(spec.vms, existing_minors)
    problems = []
    vms: dict[str, VmDerived] = {}
    if over := [vm.name for vm in spec.vms if minors[vm.name] > MAX_DRBD_MINOR]:
        problems.append(f"more than {MAX_DRBD_MINOR + 1} DRBD minors are needed: {over[0]} "
                        f"and {len(over) - 1} more VM(s) get none")  # fmt: skip
    for vm in spec.vms:
        minor = minors[vm.name]
        macs = tuple(
            net.mac or derive_mac(spec.cluster.name, vm.name, i)
            for i, net in enumerate(vm.networks)
        )
        vms[vm.name] = VmDerived(minor=minor, port=spec.cluster.ports.drbd_base + minor, macs=macs)
    survivor = spec.cluster.fencing.preferred_survivor or spec.nodes[0].name
    return Derived(
        vms=vms,
        links=link_addresses(spec),
        preferred_survivor=survivor,
        problems=tuple(problems),
    )


def race_protection(spec: ClusterSpec) -> FenceRaceProtection | None:
    """How a fence race between the two halves of a split is decided in the CIB; None with a
    quorum device: the half without qnetd's vote loses quorum and cannot fence at all."""
    if spec.quorum_device is not None:
        return None
    return spec.cluster.fencing.race_protection


def uses_static_delay(spec: ClusterSpec) -> bool:
    return race_protection(spec) is FenceRaceProtection.STATIC_DELAY


def tie_breaker(spec: ClusterSpec) -> str:
    """quorum.device.net.tie_breaker: lowest, highest, or the named node's corosync nodeid
    (position in the spec from 1, as the corosync renderer numbers them)."""
    wanted = spec.quorum_device.tie_breaker if spec.quorum_device else "lowest"
    names = [n.name for n in spec.nodes]
    return str(names.index(wanted) + 1) if wanted in names else wanted


def tie_breaker_node(spec: ClusterSpec) -> str:
    """The node ffsplit gives the vote to when both halves are equal (and both reach qnetd)."""
    rule = tie_breaker(spec)
    if rule == "lowest":
        return spec.nodes[0].name
    if rule == "highest":
        return spec.nodes[-1].name
    return spec.nodes[int(rule) - 1].name
