"""Moving VMs: `migrate`, `drain`, `undrain` (exit 3 when a pre-flight check refuses)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from hakvm.cli.common import SPEC_ARG, WAIT_OPTION, load_spec, say
from hakvm.errors import ExitCode
from hakvm.ops import migrate as moves
from hakvm.remote.lock import node_locks


def _move_line(m: moves.MoveResult) -> str:
    if m.kind == "live":
        down = f"{m.downtime_ms} ms" if m.downtime_ms is not None else "not reported"
        if m.downtime_net_ms is not None:
            down += f" ({m.downtime_net_ms} ms without the switch-over's transfer)"
        return f"{m.vm}: live-migrated {m.source} -> {m.target} in {m.seconds}s, downtime {down}"
    return f"{m.vm}: restarted {m.source} -> {m.target}: outage {m.outage_s}s"


@click.command("migrate")
@SPEC_ARG
@click.argument("vm")
@click.option("--to", "to", metavar="NODE", help="target node (default: the other one)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
@WAIT_OPTION
def migrate_cmd(spec: Path, vm: str, to: str | None, as_json: bool, wait: float) -> int:
    """Move VM: live migration (block disks) or clean restart (qcow2-on-xfs).

    Exit: 0 moved, 1 failed, 2 bad input, 3 pre-flight refused (cluster not ready)."""
    cluster = load_spec(spec)
    lock = node_locks(cluster, spec, wait=wait)
    result = asyncio.run(moves.migrate(cluster, spec, vm, to, progress=say, lock=lock))
    click.echo(json.dumps(result.as_dict()) if as_json else _move_line(result))
    return ExitCode.OK


@click.command("drain")
@SPEC_ARG
@click.argument("node")
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
@WAIT_OPTION
def drain_cmd(spec: Path, node: str, as_json: bool, wait: float) -> int:
    """Live-migrate every VM off NODE, then put NODE in standby (for maintenance)."""
    cluster = load_spec(spec)
    lock = node_locks(cluster, spec, wait=wait)
    result = asyncio.run(moves.drain(cluster, spec, node, progress=say, lock=lock))
    if as_json:
        done = [m.as_dict() for m in result.moves]
        click.echo(json.dumps({"node": node, "standby": result.standby, "moves": done}))
    else:
        for m in result.moves:
            click.echo(_move_line(m))
        click.echo(f"{node}: standby (no VMs); `hakvm undrain SPEC {node}` brings it back")
    return ExitCode.OK


@click.command("undrain")
@SPEC_ARG
@click.argument("node")
@WAIT_OPTION
def undrain_cmd(spec: Path, node: str, wait: float) -> int:
    """Take NODE out of standby; VMs stay where they run (stickiness)."""
    cluster = load_spec(spec)
    asyncio.run(moves.undrain(cluster, spec, node, lock=node_locks(cluster, spec, wait=wait)))
    click.echo(f"{node}: online again; VMs stay where they are")
    return ExitCode.OK


COMMANDS = [migrate_cmd, drain_cmd, undrain_cmd]
