"""`hakvm drill --heal`: remove every trace a drill can leave, on a cluster in any state.

A drill heals its faults in a `finally`, Ctrl-C included; this is for what even that cannot
reach (the machine running the drill lost power, its connection hung). On each node:

- the nftables tables `inet hakvm_drill` (cuts, partitions), `inet hakvm_drill_bmc` (a
  blocked BMC: fencing is disabled while it is there) and `inet hakvm_drill_qnetd` (the
  quorum device's qnetd cut off: it casts no vote while it is there);
- the bond member bond-member-loss takes down, if it is down;
- witness processes still writing;
- DRBD runtime options that differ from the configuration (the resync rate
  node-crash-during-resync lowers): `drbdadm adjust`, only when resetting options is all it
  would do (attaching or connecting a resource is Pacemaker's job, not a heal's);

and in the lab, `lab heal` (every link), `lab bmc-start` for both nodes and, if it was
stopped, `lab qnetd-start`. Only what is found is touched, so it is idempotent and safe on a
cluster that no drill ever touched.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from hakvm.drill.faults import LabFaults, bond_member, clear_node, lab_of
from hakvm.drill.witness import stop_leftovers
from hakvm.remote import drbd
from hakvm.remote.connection import Remote
from hakvm.remote.session import Session
from hakvm.spec.models import ClusterSpec


async def restore_drbd_options(conn: Remote, resources: list[str]) -> list[str]:
    """`drbdadm adjust` for each resource whose runtime options differ from its configured
    ones, when that is all the adjust would change; what was restored or left alone."""
    out = []
    for name in resources:
        pending = await drbd.pending_adjust(conn, name)
        if not pending:
            continue  # not configured here, or nothing differs
        what = ", ".join(sorted(set(pending)))
        if set(pending) <= drbd.OPTION_COMMANDS:
            await conn.run(["drbdadm", "adjust", name], check=True, timeout=120)
            out.append(f"{conn.name}: DRBD {name}: configured options restored ({what})")
        else:
            out.append(f"{conn.name}: DRBD {name}: left alone (an adjust would also run {what})")
    return out


async def heal_drills(
    spec: ClusterSpec,
    spec_path: Path,
    lab_dir: Path,
    *,
    lock: AbstractAsyncContextManager[object] | None = None,
) -> list[str]:
    """Every trace of a drill removed from both nodes (and the lab, if the spec is the lab);
    one line per trace found. An unreachable node raises UnreachableError (exit 3) after
    the lab is healed: its traces could not be checked."""
    found: list[str] = []
    member = bond_member(spec)
    lab = lab_of(spec, lab_dir)
    async with lock or contextlib.nullcontext():
        if isinstance(lab, LabFaults):
            found += (await lab.clear()).undone
        async with Session(spec, spec_path) as session:
            for conn in await session.connect_all():
                down = member[1] if member is not None and member[0] == conn.name else None
                found += await clear_node(conn, down)
                found += await stop_leftovers(conn)
                found += await restore_drbd_options(conn, [vm.name for vm in spec.vms])
    return found
