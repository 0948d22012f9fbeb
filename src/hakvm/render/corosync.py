"""corosync.conf: corosync 3 over knet, one link per heartbeat network, same file on both nodes.

The authkey (`/etc/corosync/authkey`) is a secret generated at apply and copied over SSH; it
is never rendered. Everything else the cluster membership depends on is here.
"""

from __future__ import annotations

from dataclasses import dataclass

from hakvm.render.base import RenderContext, Rendered, RenderedFile, templates

PATH = "/etc/corosync/corosync.conf"
KEYFILE = "/etc/corosync/authkey"


@dataclass(frozen=True)
class _Link:
    number: int
    priority: int
    port: int
    network: str
    preferred: bool  # the link knet sends on while it is up


@dataclass(frozen=True)
class _Node:
    name: str
    nodeid: int
    addresses: tuple[str, ...]  # index = knet link number (ring<N>_addr)


def render_text(ctx: RenderContext) -> str:
    """The corosync.conf text (identical for both nodes)."""
    spec = ctx.spec
    ports = spec.cluster.ports
    # knet passive mode: the highest priority wins, ties go to the lowest link number.
    active = min(ctx.derived.links, key=lambda link: (-link.priority, link.link)).link
    links = [
        _Link(
            number=link.link,
            priority=link.priority,
            # One UDP port per link (port, port+1, ...), as the spec's ports.corosync documents
            # and the firewall renderer opens.
            port=ports.corosync + link.link,
            network=str(link.network),
            preferred=len(ctx.derived.links) > 1 and link.link == active,
        )
        for link in ctx.derived.links
    ]
    nodes = []
    for nodeid, node in enumerate(spec.nodes, start=1):
        addresses = []
        for link in ctx.derived.links:
            if node.name not in link.addresses:
                raise ValueError(
                    f"node {node.name} has no address on heartbeat network {link.network}"
                )
            addresses.append(str(link.addresses[node.name]))
        nodes.append(_Node(node.name, nodeid, tuple(addresses)))
    timing = spec.cluster.timing
    return (
        templates()
        .get_template("corosync.conf.j2")
        .render(
            cluster_name=spec.cluster.name,
            token_ms=timing.token_ms,
            consensus_ms=timing.consensus_ms,
            keyfile=KEYFILE,
            links=links,
            nodes=nodes,
        )
    )


def render(ctx: RenderContext) -> Rendered:
    text = render_text(ctx)
    return {
        node.name: [RenderedFile(PATH, text, mode=0o644, renderer="corosync")]
        for node in ctx.spec.nodes
    }
