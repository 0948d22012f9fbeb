"""Cluster network interfaces: ifupdown stanzas (debian12) or NetworkManager keyfiles (rhel9).

Only the interfaces the spec names (`node.interfaces`: bonds, their members, ethernets,
VLANs, bridges and their ports) are configured; every other interface, the management NIC above
all, is left exactly as the admin set it up. No gateway or default route is ever rendered:
the cluster networks are point-to-point between the two nodes (and the VMs' bridge).
"""

from __future__ import annotations

import fnmatch
import posixpath
import textwrap
import uuid
from dataclasses import dataclass

from hakvm.render.base import RenderContext, Rendered, RenderedFile, templates
from hakvm.spec.models import Bond, BondMode, ClusterSpec, Node, OsFamily, vlan_parent

# debian12: the stock /etc/network/interfaces (written by the installer and by ifupdown's
# postinst) starts with `source /etc/network/interfaces.d/*`, which picks this file up.
IFUPDOWN_PATH = "/etc/network/interfaces.d/hakvm"
# rhel9: NetworkManager's keyfile directory; NM ignores a keyfile readable by others.
NM_DIR = "/etc/NetworkManager/system-connections"
NM_PREFIX = "hakvm-"
MODULES_LOAD_PATH = "/etc/modules-load.d/hakvm.conf"
MODPROBE_PATH = "/etc/modprobe.d/hakvm-bonding.conf"

# What the rendered files need on the node (installed by the deploy step, not here):
# ifupdown runs the ifenslave hooks for bond-* options and the bridge-utils hooks for
# bridge_* options; without bridge-utils, ifupdown silently brings up no bridge at all.
PACKAGES: dict[OsFamily, tuple[str, ...]] = {
    OsFamily.DEBIAN12: ("ifupdown", "ifenslave", "bridge-utils"),
    OsFamily.RHEL9: ("NetworkManager",),
}

# Beats the profiles the installer or NM itself created for the same NICs (priority 0), so
# our profile is the one NM autoconnects on each cluster interface at boot.
NM_AUTOCONNECT_PRIORITY = 10
_UUID_NAMESPACE = uuid.UUID("6a1f8e0e-6c1d-5d8e-9a43-0c7d2b1f4e10")


# --- the interface graph ---------------------------------------------------------------------


@dataclass(frozen=True)
class Interface:
    """One interface to configure, whatever the OS: the common view both renderers use."""

    name: str
    kind: str  # "bond" | "ethernet" | "vlan" | "bridge"
    mtu: int | None  # None: left to the controller (bond members take the bond's MTU)
    addresses: tuple[str, ...]  # CIDR, e.g. 10.88.0.1/24
    controller: str | None = None  # the bond or bridge this interface is a port of
    controller_kind: str | None = None
    bond: Bond | None = None
    ports: tuple[str, ...] = ()
    stp: bool = False
    comment: str = ""
    parent: str | None = None  # a VLAN's bond or NIC
    vlan_id: int | None = None


def interfaces(node: Node) -> list[Interface]:
    """The node's cluster interfaces in bring-up order: bonds with their members, plain
    ethernets, VLANs (on a bond or NIC, which must exist first), then bridges (a bridge's
    ports must exist before it is brought up)."""
    spec_if = node.interfaces
    controller: dict[str, tuple[str, str]] = {}
    for bond_name, bond in spec_if.bonds.items():
        for member in bond.members:
            _claim(controller, member, bond_name, "bond", node)
    for br_name, bridge in spec_if.bridges.items():
        for port in bridge.ports:
            _claim(controller, port, br_name, "bridge", node)

    out: list[Interface] = []
    for bond_name, bond in spec_if.bonds.items():
        ctl, ctl_kind = controller.get(bond_name, (None, None))
        _no_addresses_on_port(node, bond_name, ctl, [str(a) for a in bond.addresses])
        out.append(
            Interface(
                name=bond_name,
                kind="bond",
                mtu=bond.mtu,
                addresses=tuple(str(a) for a in bond.addresses),
                controller=ctl,
                controller_kind=ctl_kind,
                bond=bond,
                ports=tuple(bond.members),
            )
        )
        for member in bond.members:
            eth = spec_if.ethernets.get(member)
            if eth is not None and eth.addresses:
                raise ValueError(
                    f"node {node.name}: {member} is a member of {bond_name} and cannot have "
                    f"addresses of its own"
                )
            out.append(
                Interface(
                    name=member,
                    kind="ethernet",
                    mtu=None,
                    addresses=(),
                    controller=bond_name,
                    controller_kind="bond",
                )
            )
    done = {i.name for i in out}
    for eth_name, eth in spec_if.ethernets.items():
        if eth_name in done:
            continue
        ctl, ctl_kind = controller.get(eth_name, (None, None))
        _no_addresses_on_port(node, eth_name, ctl, [str(a) for a in eth.addresses])
        out.append(
            Interface(
                name=eth_name,
                kind="ethernet",
                mtu=eth.mtu,
                addresses=tuple(str(a) for a in eth.addresses),
                controller=ctl,
                controller_kind=ctl_kind,
            )
        )
    out.extend(_vlans(node))
    done = {i.name for i in out}
    for br_name, bridge in spec_if.bridges.items():
        # A bridge port the spec names only in `ports` (a plain NIC): NM needs a port
        # profile for it; ifupdown's bridge_ports enslaves it without a stanza.
        for port in bridge.ports:
            if port not in done and port not in spec_if.bridges:
                out.append(
                    Interface(
                        name=port,
                        kind="ethernet",
                        mtu=None,
                        addresses=(),
                        controller=br_name,
                        controller_kind="bridge",
                    )
                )
                done.add(port)
        out.append(
            Interface(
                name=br_name,
                kind="bridge",
                mtu=bridge.mtu,
                addresses=tuple(str(a) for a in bridge.addresses),
                ports=tuple(bridge.ports),
                stp=bridge.stp,
            )
        )
    return out


def _vlans(node: Node) -> list[Interface]:
    out = []
    for name, vlan in node.interfaces.vlans.items():
        parent, vlan_id = vlan_parent(name)
        addresses = tuple(str(a) for a in vlan.addresses)
        out.append(Interface(name, "vlan", vlan.mtu, addresses, parent=parent, vlan_id=vlan_id))
    return out


def _claim(claims: dict[str, tuple[str, str]], port: str, ctl: str, kind: str, node: Node) -> None:
    if port in claims and claims[port][0] != ctl:
        raise ValueError(f"node {node.name}: {port} is a port of both {claims[port][0]} and {ctl}")
    claims[port] = (ctl, kind)


def _no_addresses_on_port(node: Node, name: str, ctl: str | None, addresses: list[str]) -> None:
    if ctl is not None and addresses:
        raise ValueError(
            f"node {node.name}: {name} is a port of {ctl}; put its addresses "
            f"({', '.join(addresses)}) on {ctl} instead"
        )


def _bond_options(bond: Bond) -> list[tuple[str, str]]:
    """Bond options in the kernel's names; LACP-only options only in 802.3ad mode (the
    bonding driver and NM both reject lacp_rate in other modes)."""
    opts = [("mode", bond.mode.value), ("miimon", str(bond.miimon))]
    if bond.mode is BondMode.LACP:
        opts.append(("lacp_rate", bond.lacp_rate))
        opts.append(("xmit_hash_policy", bond.xmit_hash_policy))
    return opts


def _wrap(text: str) -> tuple[str, ...]:
    return tuple(textwrap.wrap(text, width=88))


def _bond_comment(name: str, bond: Bond) -> str:
    text = (
        f"{name}: {bond.mode.value} over {' '.join(bond.members)}; link checked every "
        f"{bond.miimon} ms (miimon)"
    )
    if bond.mode is BondMode.LACP:
        text += f"; lacp_rate {bond.lacp_rate}" + (
            " (a LACPDU per second: a dead member leaves the aggregate in ~3 s, not ~90 s)"
            if bond.lacp_rate == "fast"
            else ""
        )
    return text


# --- debian12: ifupdown ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Stanza:
    name: str
    method: str
    options: tuple[tuple[str, str], ...]
    extra_addresses: tuple[str, ...]
    comments: tuple[str, ...]


def _stanzas(node: Node) -> list[_Stanza]:
    out = []
    for iface in interfaces(node):
        options: list[tuple[str, str]] = []
        comments: list[str] = []
        addresses = iface.addresses
        method = "static" if addresses else "manual"
        if addresses:
            options.append(("address", addresses[0]))
        if iface.kind == "bond" and iface.bond is not None:
            comments.extend(_wrap(_bond_comment(iface.name, iface.bond)))
            options.append(("bond-slaves", " ".join(iface.ports)))
            options.extend((f"bond-{k.replace('_', '-')}", v) for k, v in _bond_options(iface.bond))
        elif iface.kind == "vlan":
            comments.append(
                f"{iface.name}: VLAN {iface.vlan_id} on {iface.parent} (ifupdown creates it "
                "from its name), no bridge: no guest on it"
            )
        elif iface.kind == "bridge":
            options.append(("bridge_ports", " ".join(iface.ports)))
            if iface.stp:
                options.append(("bridge_stp", "on"))
            else:
                comments.extend(
                    _wrap(
                        f"{iface.name}: no STP and no forward delay, so the bridge forwards as "
                        f"soon as a port is up (no 30 s listening/learning stall after a failover)"
                    )
                )
                options.append(("bridge_stp", "off"))
                options.append(("bridge_fd", "0"))
        if iface.controller_kind == "bond" and iface.controller is not None:
            # Enslaved by the bond's pre-up hook; the bond sets the member MTU.
            options.append(("bond-master", iface.controller))
        elif iface.controller_kind == "bridge":
            comments.append(f"{iface.name}: a port of {iface.controller}, no address of its own")
        if iface.mtu is not None:
            options.append(("mtu", str(iface.mtu)))
        out.append(
            _Stanza(
                name=iface.name,
                method=method,
                options=tuple(options),
                extra_addresses=addresses[1:],
                comments=tuple(comments),
            )
        )
    return out


def ifupdown_sources_fragment(interfaces_text: str) -> bool:
    """Whether an /etc/network/interfaces text includes IFUPDOWN_PATH, through `source GLOB`
    (the Debian installer's `source /etc/network/interfaces.d/*`) or `source-directory DIR`.

    Without it the rendered stanzas work with `ifup -i FILE` but vanish at the next boot
    (networking.service runs `ifup -a` on /etc/network/interfaces only): plan and doctor
    must check this fact. Relative paths are relative to /etc/network, as for ifupdown.
    """
    for raw in interfaces_text.splitlines():
        fields = raw.split()
        if len(fields) != 2 or fields[0] not in ("source", "source-directory"):
            continue
        target = posixpath.join("/etc/network", fields[1])
        if fields[0] == "source" and fnmatch.fnmatchcase(IFUPDOWN_PATH, target):
            return True
        if fields[0] == "source-directory" and fnmatch.fnmatchcase(
            posixpath.dirname(IFUPDOWN_PATH), target.rstrip("/")
        ):
            return True
    return False


def ifupdown_text(ctx: RenderContext, node: Node) -> str:
    return (
        templates()
        .get_template("network-ifupdown.j2")
        .render(cluster=ctx.spec.cluster.name, node=node.name, stanzas=_stanzas(node))
    )


# --- rhel9: NetworkManager keyfiles ----------------------------------------------------------


@dataclass(frozen=True)
class _Section:
    name: str
    items: tuple[tuple[str, str], ...]
    comments: tuple[str, ...] = ()


def profile_uuid(cluster: str, node: str, iface: str) -> str:
    """Stable per (cluster, node, interface): a re-render updates the same NM profile."""
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{cluster}/{node}/{iface}"))


def _nm_sections(spec: ClusterSpec, node: Node, iface: Interface) -> list[_Section]:
    cluster = spec.cluster.name
    conn: list[tuple[str, str]] = [
        ("id", NM_PREFIX + iface.name),
        ("uuid", profile_uuid(cluster, node.name, iface.name)),
        ("type", iface.kind),
        ("interface-name", iface.name),
        ("autoconnect", "true"),
        ("autoconnect-priority", str(NM_AUTOCONNECT_PRIORITY)),
    ]
    conn_comments: list[str] = []
    if iface.kind in ("bond", "bridge"):
        # Activating the controller by hand (nmcli con up) brings its ports up with it.
        conn.append(("autoconnect-slaves", "1"))
    if iface.controller is not None and iface.controller_kind is not None:
        # master/slave-type, not controller/port-type: NM before 1.46 (RHEL 9.0-9.3) silently
        # ignores the new names and would then run DHCP on the port. The UUID pins the port
        # to our controller profile, not to any profile that happens to own the name.
        conn_comments.append(f"a port of {iface.controller} ({NM_PREFIX}{iface.controller})")
        conn.append(("master", profile_uuid(cluster, node.name, iface.controller)))
        conn.append(("slave-type", iface.controller_kind))
    sections = [_Section("connection", tuple(conn), tuple(conn_comments))]
    if iface.mtu is not None:
        sections.append(_Section("ethernet", (("mtu", str(iface.mtu)),)))
    if iface.kind == "vlan" and iface.parent is not None:
        parent = profile_uuid(cluster, node.name, iface.parent)
        sections.append(
            _Section(
                "vlan",
                (("id", str(iface.vlan_id)), ("parent", parent)),
                (f"VLAN {iface.vlan_id} on {iface.parent} ({NM_PREFIX}{iface.parent}), no bridge",),
            )
        )
    if iface.kind == "bond" and iface.bond is not None:
        sections.append(
            _Section(
                "bond",
                tuple(_bond_options(iface.bond)),
                _wrap(_bond_comment(iface.name, iface.bond)),
            )
        )
    if iface.kind == "bridge":
        if iface.stp:
            sections.append(_Section("bridge", (("stp", "true"),)))
        else:
            sections.append(
                _Section(
                    "bridge",
                    (("stp", "false"), ("forward-delay", "0")),
                    ("no STP and no forward delay: the bridge forwards as soon as a port is up",),
                )
            )
    if iface.controller is None:
        # Ports carry no IP configuration at all (NM would refuse it).
        if iface.addresses:
            ipv4: list[tuple[str, str]] = [("method", "manual")]
            ipv4.extend((f"address{i}", a) for i, a in enumerate(iface.addresses, start=1))
            # No gateway: the cluster networks never carry the default route.
            ipv4.append(("never-default", "true"))
            sections.append(_Section("ipv4", tuple(ipv4)))
        else:
            sections.append(_Section("ipv4", (("method", "disabled"),)))
        # The cluster networks are IPv4-only: no SLAAC address or rogue-RA route appears on
        # the host side (guests bridged through br0 still do IPv6 as they like).
        sections.append(_Section("ipv6", (("method", "disabled"),)))
    return sections


def nm_profiles(ctx: RenderContext, node: Node) -> list[RenderedFile]:
    template = templates().get_template("network-nmconnection.j2")
    files = []
    for iface in interfaces(node):
        text = template.render(
            cluster=ctx.spec.cluster.name,
            node=node.name,
            iface=iface.name,
            sections=_nm_sections(ctx.spec, node, iface),
        )
        files.append(
            RenderedFile(
                path=f"{NM_DIR}/{NM_PREFIX}{iface.name}.nmconnection",
                content=text,
                mode=0o600,
                renderer="network",
            )
        )
    return files


# --- common --------------------------------------------------------------------------------


def render(ctx: RenderContext) -> Rendered:
    out: Rendered = {}
    env = templates()
    for node in ctx.spec.nodes:
        files: list[RenderedFile] = []
        if ctx.spec.cluster.os is OsFamily.DEBIAN12:
            files.append(RenderedFile(IFUPDOWN_PATH, ifupdown_text(ctx, node), renderer="network"))
        else:
            files.extend(nm_profiles(ctx, node))
        if node.interfaces.bonds:
            files.append(
                RenderedFile(
                    MODULES_LOAD_PATH,
                    env.get_template("network-modules-load.conf.j2").render(),
                    renderer="network",
                )
            )
            files.append(
                RenderedFile(
                    MODPROBE_PATH,
                    env.get_template("network-modprobe-bonding.conf.j2").render(),
                    renderer="network",
                )
            )
        out[node.name] = sorted(files, key=lambda f: f.path)
    return out
