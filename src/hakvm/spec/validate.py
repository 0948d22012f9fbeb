"""Validation: every problem at once, one line each, with file:line, field path and a fix.

Structured like pcs' report items: checks append `Problem`s, nothing raises midway, and the
caller decides (errors -> exit 2; warnings are printed but do not fail).
"""

from __future__ import annotations

import difflib
import ipaddress
import stat
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from hakvm.spec.derive import (
    Derived,
    LinkAddress,
    derive,
    interface_of,
    network_addresses,
    node_addresses,
    replication_network,
)
from hakvm.spec.loader import LoadedSpec, PathKey, SpecLoadError, load_spec_file
from hakvm.spec.models import ClusterSpec, DiskMode, OsFamily, vlan_parent
from hakvm.spec.paths import resolve
from hakvm.spec.ports import port_problems
from hakvm.spec.units import format_size


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    severity: Severity
    path: PathKey
    message: str
    line: int | None = None

    def field(self) -> str:
        return format_path(self.path)

    def format(self, filename: str) -> str:
        where = f"{filename}:{self.line}" if self.line else filename
        prefix = "" if self.severity is Severity.ERROR else "warning: "
        field = f"{self.field()}: " if self.path else ""
        return f"{where}: {prefix}{field}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "field": self.field(),
            "line": self.line,
            "message": self.message,
        }


@dataclass
class Report:
    spec: ClusterSpec | None
    derived: Derived | None
    problems: list[Problem]
    filename: str

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        return self.spec is not None and not self.errors

    def lines(self) -> list[str]:
        ordered = sorted(
            self.problems, key=lambda p: (p.severity is not Severity.ERROR, p.line or 0)
        )
        return [p.format(self.filename) for p in ordered]


def format_path(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --- pydantic errors -> problems ------------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated so we can walk to the model that owns a field."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                return annotation
        else:
            return annotation


def _fields_at(loc: Sequence[str | int]) -> list[str]:
    """The field names allowed at `loc` (the location of an unknown key), for did-you-mean."""
    current: Any = ClusterSpec
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _clean_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    # Pydantic adds pseudo-locations for validators and unions; they mean nothing to users.
    return tuple(
        p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))
    )


def _explain(error: Any) -> str:  # noqa: PLR0912 - a table: one message per pydantic error kind
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "missing":
        return "required field is missing; add it"
    if kind in ("enum", "literal_error"):
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"{value!r} is not allowed; use one of {expected}"
    if kind == "string_pattern_mismatch":
        return f"{value!r} has the wrong form; expected a value matching {ctx.get('pattern')}"
    if kind in ("greater_than_equal", "greater_than"):
        bound = f"at least {ctx['ge']}" if "ge" in ctx else f"more than {ctx.get('gt')}"
        return f"{value!r} is too small; use {bound}"
    if kind in ("less_than_equal", "less_than"):
        bound = f"at most {ctx['le']}" if "le" in ctx else f"less than {ctx.get('lt')}"
        return f"{value!r} is too large; use {bound}"
    if kind in ("too_short", "too_long"):
        return f"has {ctx.get('actual_length')} items; {error['msg'].lower()}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{value!r} is not a whole number; write a number like 2"
    if kind in ("bool_type", "bool_parsing"):
        return f"{value!r} is not true or false"
    if kind in ("string_type",):
        return f"{value!r} is not text; quote it"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping of keys, got {type(value).__name__}"
    if kind == "list_type":
        return f"expected a list (- item lines), got {type(value).__name__}"
    if kind in ("ip_v4_interface", "ip_v4_address"):
        return f"{value!r} is not an IPv4 address with prefix; write it like 10.0.20.1/24"
    if kind == "ip_v4_network":
        return f"{value!r} is not an IPv4 network; write it like 10.0.20.0/24"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "path_type":
        return f"{value!r} is not a file path"
    return str(error["msg"])


def problems_from_validation(exc: ValidationError, loaded: LoadedSpec) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors():
        loc = _clean_loc(tuple(error["loc"]))
        if error["type"] == "extra_forbidden":
            key = str(loc[-1])
            choices = _fields_at(loc[:-1])
            close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "remove it"
            if choices and not close:
                hint += f" (allowed: {', '.join(choices)})"
            message = f"unknown key {key!r}; {hint}"
            problems.append(Problem(Severity.ERROR, loc, message, loaded.line_of(loc)))
            continue
        problems.append(Problem(Severity.ERROR, loc, _explain(error), loaded.line_of(loc)))
    return problems


# --- cross-field checks --------------------------------------------------------------------


class _Checks:
    def __init__(self, spec: ClusterSpec, derived: Derived, loaded: LoadedSpec) -> None:
        self.spec = spec
        self.derived = derived
        self.loaded = loaded
        self.problems: list[Problem] = []

    def error(self, path: PathKey, message: str) -> None:
        self.problems.append(Problem(Severity.ERROR, path, message, self.loaded.line_of(path)))

    def warn(self, path: PathKey, message: str) -> None:
        self.problems.append(Problem(Severity.WARNING, path, message, self.loaded.line_of(path)))

    def run(self) -> list[Problem]:
        for check in (
            self.unique_names,
            self.node_references,
            self.interfaces,
            self.vlans,
            self.addresses,
            self.heartbeat,
            self.replication,
            self.fencing,
            self.storage,
            self.memory,
            self.vm_networks,
            self.derived_values,
            self.quorum_device,
            self.secrets,
            self.monitoring,
        ):
            check()
        return self.problems

    def unique_names(self) -> None:
        seen: dict[str, int] = {}
        for i, node in enumerate(self.spec.nodes):
            if node.name in seen:
                self.error(("nodes", i, "name"), f"{node.name!r} is already node {seen[node.name]}")
            seen.setdefault(node.name, i)
        ssh_seen: dict[tuple[str, int], int] = {}
        for i, node in enumerate(self.spec.nodes):
            target = (node.ssh.host, node.ssh.port)
            if target in ssh_seen:
                self.error(
                    ("nodes", i, "ssh"),
                    f"same SSH target {target[0]}:{target[1]} as nodes[{ssh_seen[target]}]; "
                    "each node needs its own",
                )
            ssh_seen.setdefault(target, i)
        vm_seen: dict[str, int] = {}
        for i, vm in enumerate(self.spec.vms):
            if vm.name in vm_seen:
                self.error(
                    ("vms", i, "name"),
                    f"{vm.name!r} is already vms[{vm_seen[vm.name]}]; VM names must be unique",
                )
            vm_seen.setdefault(vm.name, i)

    def node_references(self) -> None:
        names = [n.name for n in self.spec.nodes]
        survivor = self.spec.cluster.fencing.preferred_survivor
        if survivor is not None and survivor not in names:
            self.error(
                ("cluster", "fencing", "preferred_survivor"),
                f"{survivor!r} is not a node; use one of {', '.join(names)}",
            )
        for i, vm in enumerate(self.spec.vms):
            if vm.preferred_node is not None and vm.preferred_node not in names:
                self.error(
                    ("vms", i, "preferred_node"),
                    f"{vm.preferred_node!r} is not a node; use one of {', '.join(names)}",
                )

    def interfaces(self) -> None:  # noqa: PLR0912 - every bond and bridge rule, in the order a reader checks them
        for i, node in enumerate(self.spec.nodes):
            ifaces = node.interfaces
            owner: dict[str, str] = {}
            for bond_name, bond in ifaces.bonds.items():
                path: PathKey = ("nodes", i, "interfaces", "bonds", bond_name, "members")
                if len(set(bond.members)) != len(bond.members):
                    self.error(path, "a member is listed twice")
                for member in bond.members:
                    if member in owner:
                        self.error(
                            path,
                            f"{member!r} is already a member of {owner[member]}; "
                            "a NIC can be in one bond only",
                        )
                    owner[member] = bond_name
                    if member in ifaces.bonds or member in ifaces.bridges:
                        self.error(path, f"{member!r} is a bond or bridge, not a NIC")
                    if member in ifaces.ethernets:
                        self.error(
                            path,
                            f"{member!r} is also configured under ethernets; a bond member "
                            "carries no configuration of its own: remove it there",
                        )
                if bond.mode.value == "active-backup" and len(bond.members) < 2:
                    self.warn(path, "active-backup with one member has nothing to fail over to")
                if len(bond.members) < 2:
                    self.warn(path, "a one-member bond is no redundancy; add a second NIC")
            for br_name, bridge in ifaces.bridges.items():
                path = ("nodes", i, "interfaces", "bridges", br_name, "ports")
                for port in bridge.ports:
                    if port in owner:
                        self.error(path, f"{port!r} is a member of {owner[port]}; use the bond")
                    if port in ifaces.bridges:
                        self.error(path, f"{port!r} is a bridge; bridges cannot be nested")
                    if port in ifaces.bonds and ifaces.bonds[port].addresses:
                        self.error(
                            path,
                            f"bond {port!r} has addresses; put them on bridge {br_name!r}",
                        )
                    owner[port] = br_name
            names = [*ifaces.bonds, *ifaces.ethernets, *ifaces.bridges, *ifaces.vlans]
            for name in {n for n in names if names.count(n) > 1}:
                self.error(
                    ("nodes", i, "interfaces"),
                    f"interface {name!r} is declared twice (as a bond/ethernet/bridge)",
                )

    def vlans(self) -> None:
        for i, node in enumerate(self.spec.nodes):
            ifaces = node.interfaces
            members = {m for bond in ifaces.bonds.values() for m in bond.members}
            ports = {p for bridge in ifaces.bridges.values() for p in bridge.ports}
            for name, vlan in ifaces.vlans.items():
                path: PathKey = ("nodes", i, "interfaces", "vlans", name)
                parent, vlan_id = vlan_parent(name)
                if not 1 <= vlan_id <= 4094:
                    self.error(path, f"VLAN id {vlan_id} is out of range; use 1-4094")
                if len(name) > 15:
                    self.error(path, f"{name!r} is longer than 15 characters (a Linux limit)")
                owner = ifaces.bonds.get(parent) or ifaces.ethernets.get(parent)
                if owner is None or parent in members:
                    self.error(
                        path,
                        f"{parent!r} is not a bond or ethernet of {node.name} (a bond member "
                        "is not either): a VLAN goes on a bond or NIC declared here",
                    )
                elif vlan.mtu > owner.mtu:
                    self.error(path, f"mtu {vlan.mtu} is above {parent}'s mtu {owner.mtu}")
                if name in ports:
                    self.error(path, "a VLAN cannot be a bridge port here; bridge its parent")

    def replication(self) -> None:
        rep = self.spec.replication
        if rep is not None:
            path: PathKey = ("replication", "network")
            found = network_addresses(self.spec, rep.network)
            missing = [n.name for n in self.spec.nodes if n.name not in found]
            if missing:
                self.error(
                    path,
                    f"{', '.join(missing)} has no address in {rep.network}; give both nodes "
                    "an address on the replication network (e.g. on a VLAN of the bond)",
                )
            for j, hb in enumerate(self.spec.heartbeat):
                if hb.network != rep.network and hb.network.overlaps(rep.network):
                    self.error(path, f"{rep.network} overlaps heartbeat[{j}] {hb.network}")
        for where, message, fix in replication_exposure(self.spec, self.derived):
            self.warn(where, f"{message}; {fix}")

    def addresses(self) -> None:
        seen: dict[ipaddress.IPv4Address, str] = {}
        for i, node in enumerate(self.spec.nodes):
            for addr in node_addresses(node):
                path: PathKey = ("nodes", i, "interfaces")
                if addr.ip in seen:
                    self.error(path, f"address {addr.ip} is also used by {seen[addr.ip]}")
                seen[addr.ip] = node.name
                if addr.ip == addr.network.network_address and addr.network.prefixlen < 31:
                    self.error(path, f"{addr} is a network address, not a host address")
                if addr.ip == addr.network.broadcast_address and addr.network.prefixlen < 31:
                    self.error(path, f"{addr} is the broadcast address, not a host address")

    def heartbeat(self) -> None:
        nets = [hb.network for hb in self.spec.heartbeat]
        for link in self.derived.links:
            path: PathKey = ("heartbeat", link.link, "network")
            missing = [n.name for n in self.spec.nodes if n.name not in link.addresses]
            if missing:
                self.error(
                    path,
                    f"{', '.join(missing)} has no address in {link.network}; "
                    "give both nodes an address on every heartbeat network",
                )
        for a in range(len(nets)):
            for b in range(a + 1, len(nets)):
                if nets[a].overlaps(nets[b]):
                    self.error(
                        ("heartbeat", b, "network"),
                        f"{nets[b]} overlaps heartbeat[{a}] {nets[a]}; links must be "
                        "separate networks",
                    )
        if len(nets) < 2:
            self.warn(
                ("heartbeat",),
                "one heartbeat link is a single point of failure; add a dedicated "
                "back-to-back link as a second one",
            )

    def fencing(self) -> None:
        for i, node in enumerate(self.spec.nodes):
            if node.bmc is None:
                self.error(
                    ("nodes", i, "bmc"),
                    "fencing is required (no split-brain without it): add the node's BMC",
                )
        bmcs = [(n.bmc.address, n.bmc.port) for n in self.spec.nodes if n.bmc]
        if len(bmcs) == 2 and bmcs[0] == bmcs[1]:
            self.error(
                ("nodes", 1, "bmc"),
                f"same BMC {bmcs[0][0]}:{bmcs[0][1]} as nodes[0]: a node would fence itself",
            )

    def storage(self) -> None:
        for i, node in enumerate(self.spec.nodes):
            st = node.storage
            if st.create_from is not None and not st.create_from.destroy_existing_data:
                self.error(
                    ("nodes", i, "storage", "create_from", "destroy_existing_data"),
                    f"{st.create_from.device} would be wiped: set destroy_existing_data: true "
                    "to confirm, or use an existing volume_group",
                )
            needed = sum(backing_size(vm.disk.size, vm.disk.mode) for vm in self.spec.vms)
            if needed > st.size:
                self.error(
                    ("nodes", i, "storage", "size"),
                    f"VM disks need {format_size(needed)} with DRBD metadata but "
                    f"{node.name} has {format_size(st.size)}; grow the storage or shrink disks",
                )
            if st.thin_pool is None:
                self.warn(
                    ("nodes", i, "storage", "thin_pool"),
                    "without a thin pool every new disk needs a full initial DRBD sync",
                )

    def memory(self) -> None:
        total = sum(vm.memory for vm in self.spec.vms)
        for i, node in enumerate(self.spec.nodes):
            usable = node.memory - node.reserved_memory
            if total > usable:
                message = (
                    f"after a failover {node.name} must hold all VMs: {format_size(total)} but "
                    f"only {format_size(max(usable, 0))} is usable (memory - reserved_memory); "
                    "shrink VMs or set allow_memory_overcommit: true"
                )
                if self.spec.allow_memory_overcommit:
                    self.warn(("nodes", i, "memory"), message)
                else:
                    self.error(("nodes", i, "memory"), message)

    def vm_networks(self) -> None:
        for i, vm in enumerate(self.spec.vms):
            for j, net in enumerate(vm.networks):
                for node in self.spec.nodes:
                    if net.bridge not in node.interfaces.bridges:
                        self.error(
                            ("vms", i, "networks", j, "bridge"),
                            f"bridge {net.bridge!r} is not defined on {node.name}; "
                            "a VM must find its bridge on both nodes",
                        )
            if vm.disk.mode is DiskMode.QCOW2_ON_XFS and vm.disk.size < 512 * 1024**2:
                self.error(
                    ("vms", i, "disk", "size"),
                    "qcow2-on-xfs needs at least 512MiB (XFS minimum); use mode: block",
                )

    def derived_values(self) -> None:
        for problem in self.derived.problems:
            self.error(("vms",), problem)
        macs: dict[str, str] = {}
        for i, vm in enumerate(self.spec.vms):
            vd = self.derived.vms[vm.name]
            for j, mac in enumerate(vd.macs):
                if mac in macs and macs[mac] != vm.name:
                    self.error(
                        ("vms", i, "networks", j, "mac"),
                        f"MAC {mac} is also used by {macs[mac]}; remove the explicit mac",
                    )
                macs[mac] = vm.name
        for path, message in port_problems(self.spec, self.derived):
            self.error(path, message)

    def quorum_device(self) -> None:
        qd = self.spec.quorum_device
        if qd is None:
            return
        for severity, path, message in quorum_device_problems(self.spec):
            (self.error if severity is Severity.ERROR else self.warn)(path, message)
        cluster = self.spec.cluster
        ignored = [
            (("cluster", "fencing", name), name)
            for name in sorted(cluster.fencing.model_fields_set)
            if name in ("race_protection", "preferred_survivor")  # the fence-race settings
        ]
        if "fence_delay_s" in cluster.timing.model_fields_set:
            ignored.append((("cluster", "timing", "fence_delay_s"), "fence_delay_s"))
        for path, name in ignored:
            self.warn(
                path,
                f"{name} is ignored with a quorum device: qnetd's vote decides a split (the "
                "other half cannot fence), no fence delay is configured; remove it",
            )

    def secrets(self) -> None:
        base = self.loaded.path.parent
        files: list[tuple[PathKey, Path, str]] = []
        for i, node in enumerate(self.spec.nodes):
            files.append((("nodes", i, "ssh", "key_file"), node.ssh.key_file, "SSH key"))
            if node.bmc is not None:
                files.append(
                    (("nodes", i, "bmc", "password_file"), node.bmc.password_file, "BMC password")
                )
        qd = self.spec.quorum_device
        if qd is not None and qd.ssh is not None:
            files.append((("quorum_device", "ssh", "key_file"), qd.ssh.key_file, "SSH key"))
        for path, file, what in files:
            self._check_secret(path, resolve(base, file), what)

    def monitoring(self) -> None:
        mon = self.spec.monitoring
        if mon.node_exporter and self.spec.cluster.os is not OsFamily.DEBIAN12:
            self.error(("monitoring", "node_exporter"), "installs Debian's "
                       "prometheus-node-exporter (debian12 only): set it false and run "
                       "node_exporter yourself, reading /var/lib/prometheus/node-exporter")
        if mon.alerts.webhook_url_file is None:
            return
        path: PathKey = ("monitoring", "alerts", "webhook_url_file")
        if not mon.events:
            self.error(path, "forwards the alert agent's events: needs monitoring.events true")
        file = resolve(self.loaded.path.parent, mon.alerts.webhook_url_file)
        self._check_secret(path, file, "webhook URL")

    def _check_secret(self, path: PathKey, file: Path, what: str) -> None:
        try:
            mode = file.stat().st_mode
        except FileNotFoundError:
            self.warn(path, f"{what} file {file} does not exist yet; apply needs it")
            return
        except OSError as exc:
            self.warn(path, f"{what} file {file} cannot be read: {exc.strerror}")
            return
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            self.warn(
                path,
                f"{what} file {file} is readable by group/others (mode "
                f"{stat.S_IMODE(mode):04o}); run chmod 600",
            )


def quorum_device_problems(spec: ClusterSpec) -> list[tuple[Severity, PathKey, str]]:
    """The quorum device's cross-field rules: the qnetd host is a third machine (a node
    cannot break its own tie), its tie-breaker a node, and what the device implies."""
    qd = spec.quorum_device
    if qd is None:
        return []
    found: list[tuple[Severity, PathKey, str]] = []

    def error(path: PathKey, message: str) -> None:
        found.append((Severity.ERROR, ("quorum_device", *path), message))

    third = "the qnetd host is a third machine, never a cluster node"
    for node in spec.nodes:
        owned = {str(a.ip) for a in node_addresses(node)} | {node.name, node.ssh.host}
        if qd.host in owned and not _loopback(qd.host):
            error(("host",), f"{qd.host} is {node.name}'s address: {third}")
        ssh = qd.ssh
        if ssh is not None and (ssh.host, ssh.port) == (node.ssh.host, node.ssh.port):
            error(("ssh",), f"{ssh.host}:{ssh.port} is {node.name}'s SSH target: {third}")
    names = [n.name for n in spec.nodes]
    if qd.tie_breaker not in ("lowest", "highest", *names):
        choices = f"lowest, highest or {', '.join(names)}"
        error(("tie_breaker",), f"{qd.tie_breaker!r} is not a node; use {choices}")
    policy = spec.cluster.no_quorum_policy
    if policy != "stop":
        found.append(
            (
                Severity.ERROR,
                ("cluster", "no_quorum_policy"),
                f"{policy!r} with a quorum device: the half that loses quorum must stop its "
                "VMs (the other half fences it and starts them); set it to stop",
            )
        )
    if qd.heuristics is not None and qd.heuristics.mode.value == "off":
        found.append(
            (
                Severity.WARNING,
                ("quorum_device", "heuristics", "mode"),
                "off: the commands never run; remove them or use sync",
            )
        )
    return found


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def replication_exposure(spec: ClusterSpec, derived: Derived) -> list[tuple[PathKey, str, str]]:
    """(field, what, fix) when guests can reach the replication network: its address sits on
    a bridge VMs attach to, or on a VLAN whose parent a VM bridge carries while a VM NIC on
    that bridge has clean_traffic off (it can send frames tagged into the VLAN)."""
    found = replication_network(spec, derived.links)
    if found is None:
        return []
    if isinstance(found, LinkAddress):
        where: PathKey = ("heartbeat", found.link, "network")
    else:
        where = ("replication", "network")
    exposed: dict[str, list[str]] = {}  # interface -> the VMs that reach it
    for node in spec.nodes:
        address = found.addresses.get(node.name)
        name = interface_of(node, address) if address is not None else None
        if name is None:
            continue
        ifaces = node.interfaces
        if name in ifaces.vlans:
            parent = vlan_parent(name)[0]
            bridges = {b for b, cfg in ifaces.bridges.items() if parent in cfg.ports}
            vms = [
                f"{vm.name} ({net.bridge}, clean_traffic off)"
                for vm in spec.vms
                for net in vm.networks
                if net.bridge in bridges and not net.clean_traffic
            ]
        else:
            vms = [vm.name for vm in spec.vms if any(n.bridge == name for n in vm.networks)]
        seen = exposed.setdefault(name, [])
        seen += [vm for vm in dict.fromkeys(vms) if vm not in seen]
    return [
        (
            where,
            f"DRBD replication and live migration run over {found.network} on {name}, which "
            f"VMs reach ({', '.join(vms)}): guests see disk writes and migrated memory in "
            "clear and can send as the peer, whose address the firewall trusts",
            "give replication a network no VM reaches, e.g. a VLAN on the bond "
            "(interfaces: vlans: {bond0.20: {addresses: [...]}}) and replication: {network: ...}",
        )
        for name, vms in exposed.items()
        if vms
    ]


def backing_size(disk_size: int, mode: DiskMode) -> int:
    """LV size for a VM disk: DRBD internal metadata, plus XFS/qcow2 room in that mode."""
    metadata = disk_size // 32768 + 4 * 1024**2  # ~32 KiB per GiB bitmap + AL, rounded up
    if mode is DiskMode.QCOW2_ON_XFS:
        overhead = max(disk_size // 20, 256 * 1024**2)
        return disk_size + overhead + metadata
    return disk_size + metadata


def validate_loaded(loaded: LoadedSpec, filename: str) -> Report:
    try:
        spec = ClusterSpec.model_validate(loaded.data)
    except ValidationError as exc:
        return Report(None, None, problems_from_validation(exc, loaded), filename)
    derived = derive(spec)
    problems = _Checks(spec, derived, loaded).run()
    return Report(spec, derived, problems, filename)


def validate_file(path: Path) -> Report:
    filename = str(path)
    try:
        loaded = load_spec_file(path)
    except SpecLoadError as exc:
        return Report(None, None, [Problem(Severity.ERROR, (), str(exc), exc.line)], filename)
    return validate_loaded(loaded, filename)
