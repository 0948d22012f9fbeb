"""Faults on demand: link cuts (node power faults are nodes.kill_node / start_node).

A cut drops carrier on both ends through QMP (``set_link``), so both guests see the link
go down as with a pulled cable. Cuts are recorded in links.json first: a node that is
off or restarts meanwhile (fencing, ``lab kill``) re-applies them when it powers on.
"""

from __future__ import annotations

from hakvm.lab import nodes
from hakvm.lab.lifecycle import require_up
from hakvm.lab.state import NODES, Lab


def cut(lab: Lab, link: str) -> list[str]:
    """Drop carrier on both ends of link; returns the nodes whose NIC changed now."""
    require_up(lab)
    cut_set = lab.cut_links() | {link}
    lab.save_cut_links(cut_set)  # first: a node started meanwhile applies it itself
    return [node for node in NODES if nodes.set_link(lab.run, node, link, up=False)]


def heal(lab: Lab, links: list[str]) -> list[str]:
    require_up(lab)
    remaining = lab.cut_links() - set(links)
    lab.save_cut_links(remaining)
    done = []
    for link in links:
        for node in NODES:
            if nodes.set_link(lab.run, node, link, up=True):
                done.append(f"{node}/{link}")
    return done
