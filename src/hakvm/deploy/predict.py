"""What Pacemaker will do when the planned CIB patch lands, asked of Pacemaker itself.

`crm_simulate --simulate` runs the scheduler on a CIB (configuration plus the live status
section) and prints its transition summary: "Restart vm-a ( node01 ) due to resource
definition change" is the line an admin must see before applying, not after. It runs on a
node (every node has Pacemaker; the machine running hakvm may not), reading the CIB from
stdin, so nothing is written there.
"""

from __future__ import annotations

import re

from hakvm.remote.connection import NodeConnection, RemoteError

SIMULATE_ARGV = ("crm_simulate", "--simulate", "--xml-pipe")

# "  * Restart    vm-a    ( node01 )  due to resource definition change"
_ACTION_RE = re.compile(r"^\s+\*\s+(?P<action>[A-Z][a-z]+)\s+(?P<rest>.+?)\s*$")
# Actions that interrupt or move a running resource (Start/Promote of new things are expected).
DISRUPTIVE = frozenset({"Restart", "Stop", "Recover", "Move", "Migrate", "Demote", "Fence"})


def transition_summary(output: str) -> list[str]:
    """The scheduler's planned actions, one per line, whitespace collapsed."""
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("Transition Summary"))
    except StopIteration:
        return []
    actions = []
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        match = _ACTION_RE.match(line)
        if match is None:
            break  # the next section ("Executing Cluster Transition:")
        actions.append(" ".join(f"{match['action']} {match['rest']}".split()))
    return actions


def disruptive(actions: list[str]) -> list[str]:
    return [a for a in actions if a.split(" ", 1)[0] in DISRUPTIVE]


async def predict(conn: NodeConnection, cib_with_status: str) -> list[str] | None:
    """The transition Pacemaker would run for this CIB; None if the simulation failed."""
    try:
        result = await conn.run(list(SIMULATE_ARGV), stdin=cib_with_status.encode(), timeout=120)
    except RemoteError:
        return None
    if not result.ok:
        return None
    return transition_summary(result.stdout)
