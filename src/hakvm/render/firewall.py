"""The cluster's firewall: corosync, DRBD, libvirt migration and SSH, open only to the peer.

What is opened (`cluster_ports`), from the peer's addresses only:
- corosync knet: UDP `ports.corosync + N` for link N (exactly the ports corosync.conf uses),
  from the peer's address on every heartbeat network;
- DRBD: TCP, each VM's derived port (`ports.drbd_base + minor`), and libvirt live
  migration: TCP `migration_min`-`migration_max` (QEMU's direct stream), from the peer's
  replication address only (nftables; firewalld's zone opens its ports to every source);
- SSH: TCP 22, libvirt's `qemu+ssh://<peer>/system` control transport (the peer's name
  resolves to its link 0 address through the managed /etc/hosts block).

debian12 (nftables): a table of its own, `table inet hakvm`, loaded by its own systemd unit.
Debian's /etc/nftables.conf starts with `flush ruleset` and has no include directory, so
editing it would mean owning the admin's file; instead our table lives beside the admin's.
In nftables an `accept` only ends the chain it is in, while a `drop` anywhere is final: a
separate table can close ports but never open what another table drops. So the chain has
`policy accept` and drops only the cluster ports from everyone but the peer: it cannot lock
out management SSH, and it leaves everything else to the admin's own rules (on a host whose
own ruleset drops by default, the admin must open these ports there too).

rhel9 (firewalld): a zone `hakvm` whose sources are the peer's addresses. firewalld hands
traffic from a bound source to that zone instead of the interface's zone, so the peer gets
exactly these ports (plus ICMP) and everyone else keeps the default zone, where they are
closed.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from hakvm.render.base import RenderContext, Rendered, RenderedFile, templates
from hakvm.render.drbd import replication_link
from hakvm.spec.derive import LinkAddress
from hakvm.spec.models import Node, OsFamily

NFT_PATH = "/etc/hakvm/nftables-hakvm.nft"
NFT_UNIT_NAME = "hakvm-firewall.service"
NFT_UNIT_PATH = f"/etc/systemd/system/{NFT_UNIT_NAME}"
NFT_TABLE = "hakvm"
FIREWALLD_ZONE = "hakvm"
FIREWALLD_ZONE_PATH = f"/etc/firewalld/zones/{FIREWALLD_ZONE}.xml"
# libvirt's qemu+ssh URI carries no port: ssh uses 22 (the spec's ssh.port is how hakvm
# reaches a node, possibly through a port forward, not the port the peer dials).
SSH_PORT = 22

PACKAGES: dict[OsFamily, tuple[str, ...]] = {
    OsFamily.DEBIAN12: ("nftables",),
    OsFamily.RHEL9: ("firewalld",),
}


@dataclass(frozen=True)
class ClusterPorts:
    corosync_udp: tuple[tuple[int, int], ...]  # (knet link number, UDP port)
    drbd_tcp: tuple[tuple[str, int], ...]  # (VM name, TCP port), by port
    migration_tcp: tuple[int, int]  # inclusive range
    ssh_tcp: int


def cluster_ports(ctx: RenderContext) -> ClusterPorts:
    ports = ctx.spec.cluster.ports
    return ClusterPorts(
        # corosync.py renders mcastport = ports.corosync + link number; keep them in step.
        corosync_udp=tuple((link.link, ports.corosync + link.link) for link in ctx.derived.links),
        drbd_tcp=tuple(
            sorted(((name, vm.port) for name, vm in ctx.derived.vms.items()), key=lambda x: x[1])
        ),
        migration_tcp=(ports.migration_min, ports.migration_max),
        ssh_tcp=SSH_PORT,
    )


def peer(ctx: RenderContext, node: Node) -> Node:
    return next(n for n in ctx.spec.nodes if n.name != node.name)


def peer_addresses(ctx: RenderContext, node: Node) -> list[tuple[str, str]]:
    """(what, address) of the peer on every heartbeat network, by link ("link N"), then on
    the replication network when it is not one of them ("replication")."""
    other = peer(ctx, node).name
    out = [
        (f"link {link.link}", str(link.addresses[other]))
        for link in ctx.derived.links
        if other in link.addresses
    ]
    replication = replication_link(ctx)
    if not isinstance(replication, LinkAddress) and other in replication.addresses:
        out.append(("replication", str(replication.addresses[other])))
    return out


def replication_peer(ctx: RenderContext, node: Node) -> str:
    """The peer's address on the replication network: the only source DRBD and migration
    traffic comes from."""
    return str(replication_link(ctx).addresses[peer(ctx, node).name])


def _range(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


# --- debian12: nftables ----------------------------------------------------------------------


def nftables_text(ctx: RenderContext, node: Node) -> str:
    cp = cluster_ports(ctx)
    return (
        templates()
        .get_template("firewall-nftables.nft.j2")
        .render(
            cluster=ctx.spec.cluster.name,
            node=node.name,
            peer=peer(ctx, node).name,
            table=NFT_TABLE,
            unit=NFT_UNIT_NAME,
            peers=peer_addresses(ctx, node),
            replication_peer=replication_peer(ctx, node),
            corosync=cp.corosync_udp,
            drbd=cp.drbd_tcp,
            migration=_range(*cp.migration_tcp),
            ssh=cp.ssh_tcp,
        )
    )


def nftables_unit_text(ctx: RenderContext) -> str:
    return (
        templates()
        .get_template("firewall-nftables.service.j2")
        .render(cluster=ctx.spec.cluster.name, path=NFT_PATH, table=NFT_TABLE)
    )


# --- rhel9: firewalld ------------------------------------------------------------------------


def firewalld_zone_xml(ctx: RenderContext, node: Node) -> str:
    cp = cluster_ports(ctx)
    other = peer(ctx, node).name
    zone = etree.Element("zone")
    zone.append(
        etree.Comment(
            f" Managed by hakvm (cluster {ctx.spec.cluster.name}, node {node.name}): generated "
            "from the cluster spec, do not edit by hand or with firewall-cmd (permanent) "
            "(changes are overwritten on the next apply). "
        )
    )
    etree.SubElement(zone, "short").text = FIREWALLD_ZONE
    etree.SubElement(zone, "description").text = (
        f"hakvm cluster {ctx.spec.cluster.name}: the peer node {other} (its addresses are this "
        "zone's sources) reaches corosync, DRBD, libvirt migration and SSH; everyone else "
        "stays in the default zone, where these ports are closed."
    )
    zone.append(
        etree.Comment(
            " Sources bind the peer's traffic to this zone; a source can belong to one zone only. "
        )
    )
    for what, address in peer_addresses(ctx, node):
        where = f"heartbeat {what}" if what.startswith("link") else f"{what} network"
        zone.append(etree.Comment(f" {other}, {where} "))
        etree.SubElement(zone, "source", address=address)
    zone.append(etree.Comment(" libvirt's qemu+ssh migration transport "))
    etree.SubElement(zone, "service", name="ssh")
    for link, port in cp.corosync_udp:
        zone.append(etree.Comment(f" corosync knet link {link} "))
        etree.SubElement(zone, "port", port=str(port), protocol="udp")
    for vm, port in cp.drbd_tcp:
        zone.append(etree.Comment(f" DRBD replication of {vm} "))
        etree.SubElement(zone, "port", port=str(port), protocol="tcp")
    zone.append(etree.Comment(" libvirt live migration (QEMU's migration stream) "))
    etree.SubElement(zone, "port", port=_range(*cp.migration_tcp), protocol="tcp")
    return etree.tostring(zone, pretty_print=True, xml_declaration=True, encoding="utf-8").decode()


def render(ctx: RenderContext) -> Rendered:
    out: Rendered = {}
    for node in ctx.spec.nodes:
        if ctx.spec.cluster.os is OsFamily.DEBIAN12:
            files = [
                RenderedFile(NFT_PATH, nftables_text(ctx, node), renderer="firewall"),
                RenderedFile(NFT_UNIT_PATH, nftables_unit_text(ctx), renderer="firewall"),
            ]
        else:
            files = [
                RenderedFile(
                    FIREWALLD_ZONE_PATH, firewalld_zone_xml(ctx, node), renderer="firewall"
                )
            ]
        out[node.name] = sorted(files, key=lambda f: f.path)
    return out
