"""The cluster's /etc/hosts entries: a managed block, never the whole file.

The original recipe truncated /etc/hosts and wrote its own; hakvm only owns the lines between
`# BEGIN hakvm managed block` and `# END hakvm managed block`. `hakvm render` emits the block
as a fragment (`FRAGMENT_PATH`); apply reads the node's current /etc/hosts and writes back
`merge_hosts(current, block)`, which keeps every other line byte for byte.

Why names matter here: Pacemaker, corosync and DRBD are configured with addresses, but
libvirt live migration (VirtualDomain, `qemu+ssh://<peer>/system`) connects to the peer *by
name*, and the destination advertises its migration URI by name too: the source must resolve
the peer's name to a cluster address, whatever DNS says.
"""

from __future__ import annotations

from dataclasses import dataclass

from hakvm.render.base import RenderContext, Rendered, RenderedFile, templates
from hakvm.render.blocks import BEGIN, END, BlockMergeError, lines, merge_block, spans
from hakvm.render.drbd import replication_link
from hakvm.render.migration import migration_name
from hakvm.spec.derive import LinkAddress

HOSTS_PATH = "/etc/hosts"
# Not a file any resolver reads: a copy of the block apply merged into /etc/hosts, kept on
# the node so `plan` and an admin can see what hakvm owns.
FRAGMENT_PATH = "/etc/hakvm/hosts.block"
HostsMergeError = BlockMergeError  # unbalanced markers in the node's /etc/hosts


@dataclass(frozen=True)
class HostEntry:
    address: str
    names: tuple[str, ...]  # the first is the canonical name (reverse lookups return it)
    comment: str


def entries(ctx: RenderContext) -> list[HostEntry]:
    """One line per node per heartbeat link, ordered by link then node.

    The bare node name goes on exactly one address, the node's lowest-numbered heartbeat
    link (link 0, the one listed first: in both examples the dedicated back-to-back link,
    which does not share bandwidth with the VMs). One address per name keeps resolution
    deterministic: with glibc's `multi on` (Debian's /etc/host.conf) a name on two lines
    resolves to both, and libvirt would migrate over whichever came first. Every address
    also gets a `<node>-link<N>` alias, so each path can be reached (ping, ssh) by name, and
    the replication network's address a `<node>-migration` alias: live migration's target
    (a line of its own, after the links, when replication has a network of its own).
    """
    out: list[HostEntry] = []
    canonical_done: set[str] = set()
    found = replication_link(ctx)
    replication = found.link if isinstance(found, LinkAddress) else None
    for link in ctx.derived.links:
        for node in ctx.spec.nodes:
            address = link.addresses.get(node.name)
            if address is None:
                continue
            names: tuple[str, ...] = (f"{node.name}-link{link.link}",)
            if link.link == replication:
                names += (migration_name(node.name),)
            if node.name not in canonical_done:
                names = (node.name, *names)
                canonical_done.add(node.name)
            out.append(HostEntry(str(address), names, f"link {link.link} {link.network}"))
    if replication is None:
        for node in ctx.spec.nodes:
            comment = f"replication {found.network}"
            out.append(
                HostEntry(str(found.addresses[node.name]), (migration_name(node.name),), comment)
            )
    return out


def hosts_block(ctx: RenderContext) -> str:
    """The managed block, BEGIN and END marker lines included, newline-terminated."""
    return (
        templates()
        .get_template("hosts-block.j2")
        .render(begin=BEGIN, end=END, cluster=ctx.spec.cluster.name, entries=entries(ctx))
    )


# --- merging into an existing /etc/hosts -----------------------------------------------------


def merge_hosts(existing: str, block: str) -> str:
    """`existing` /etc/hosts with its managed block replaced by `block` (render.blocks)."""
    return merge_block(existing, block)


def hosts_conflicts(existing: str, block: str) -> list[str]:
    """Lines outside the managed block that give one of the block's names another address.

    glibc returns the first match (or, with `multi on`, every match), so such a line — the
    recipe's `10.0.10.253 node01`, or the installer's `127.0.1.1 node01` — can win over the
    block. Apply/doctor report them; hakvm never edits them.
    """
    wanted: dict[str, str] = {}
    for line in lines(block):
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            wanted[name.lower()] = fields[0]
    existing_lines = lines(existing)
    try:
        found = spans(existing_lines)
    except BlockMergeError:
        found = []
    inside = {i for start, end in found for i in range(start, end + 1)}
    out = []
    for i, line in enumerate(existing_lines):
        if i in inside:
            continue
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        for name in fields[1:]:
            if name.lower() in wanted and wanted[name.lower()] != fields[0]:
                out.append(line.rstrip("\n"))
                break
    return out


def render(ctx: RenderContext) -> Rendered:
    """The block as a fragment, the same on both nodes (merged into /etc/hosts at apply)."""
    block = hosts_block(ctx)
    return {
        node.name: [RenderedFile(FRAGMENT_PATH, block, renderer="hosts")] for node in ctx.spec.nodes
    }
