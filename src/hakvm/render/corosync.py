"""corosync.conf: corosync 3 over knet, one link per heartbeat network, same file on both nodes.

The authkey (`/etc/corosync/authkey`) is a secret generated at apply and copied over SSH; it
is never rendered. Everything else the cluster membership depends on is here.
"""

from __future__ import annotations

from dataclasses import dataclass

from hakvm.render.base import RenderContext, Rendered, RenderedFile, templates
from hakvm.spec.derive import tie_breaker
from hakvm.spec.models import ClusterSpec

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


@dataclass(frozen=True)
class _Heuristics:
    mode: str
    commands: tuple[tuple[str, str], ...]  # (name, command line: no character needs quoting)


@dataclass(frozen=True)
class _Device:
    host: str
    port: int
    algorithm: str
    tie_breaker: str  # lowest, highest or a nodeid
    tls: str
    heuristics: _Heuristics | None


def _device(spec: ClusterSpec) -> _Device | None:
    qd = spec.quorum_device
    if qd is None:
        return None
    heuristics = None
    if qd.heuristics is not None:
        heuristics = _Heuristics(
            qd.heuristics.mode.value,
            tuple((c.name, " ".join(c.argv)) for c in qd.heuristics.commands),
        )
    return _Device(qd.host, qd.port, qd.algorithm.value, tie_breaker(spec), qd.tls, heuristics)


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
            device=_device(spec),
        )
    )


def render(ctx: RenderContext) -> Rendered:
    text = render_text(ctx)
    return {
        node.name: [RenderedFile(PATH, text, mode=0o644, renderer="corosync")]
        for node in ctx.spec.nodes
    }
