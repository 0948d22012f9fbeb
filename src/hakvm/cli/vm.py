"""`hakvm vm list | add | remove`: one VM at a time.

Exit codes: 0 done, 1 a step on a node failed (re-run: every step is idempotent), 2 bad input
(the spec file is then unchanged), 3 the cluster is not in a state for it (a running VM
without --force; for `list`, an unusable spec, as `status` says "unknown").
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from hakvm.cli.common import SPEC_ARG, WAIT_OPTION, advised, load_spec, say
from hakvm.deploy import engine
from hakvm.deploy.steps import Step
from hakvm.errors import ExitCode, FailedError
from hakvm.ops import status
from hakvm.ops import vm as ops
from hakvm.remote.connection import RemoteError
from hakvm.remote.lock import node_locks
from hakvm.spec import edit
from hakvm.spec.models import ClusterSpec
from hakvm.spec.units import format_size


@click.group("vm")
def vm_group() -> None:
    """List, add or remove VMs; each command changes only the VM it names."""


def _drbd_cell(row: ops.VmRow) -> str:
    return "; ".join(f"{d.node}: {d.disk}/{d.peer_disk}" for d in row.drbd) or "-"


def _table(rows: Sequence[ops.VmRow]) -> Table:
    table = Table(title="VMs", title_justify="left")
    for col in ("VM", "vCPUs", "memory", "disk", "mode", "preferred", "state", "on", "DRBD"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r.name, str(r.vcpus), format_size(r.memory), format_size(r.disk_size), r.disk_mode,
            r.preferred_node or "-", r.state, ", ".join(r.running_on) or "-", _drbd_cell(r),
        )  # fmt: skip
    return table


@vm_group.command("list")
@SPEC_ARG
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
def list_cmd(spec: Path, as_json: bool) -> int:
    """Every VM of SPEC: its size, disk, preferred node and live state (exit 0; 3 bad spec)."""
    cluster = load_spec(spec, monitoring=True)
    report = asyncio.run(status.status(cluster, spec))
    rows = ops.vm_rows(cluster, report)
    if as_json:
        vms = [r.as_dict() for r in rows]
        click.echo(json.dumps({"cluster": cluster.cluster.name, "vms": vms}, indent=2))
    else:
        Console(highlight=False).print(_table(rows))
        if report.seen_from is None:
            say("no node answered with Pacemaker's state: VM states are unknown")
    return ExitCode.OK


def _edit_failed(exc: edit.SpecEditError) -> edit.SpecEditError:
    """The validator's lines first; the error itself is the last line."""
    for line in exc.lines:
        click.echo(line, err=True)
    return exc


async def _add_and_apply(spec_path: Path, entry: dict[str, Any], wait: float) -> int:
    """Holding the node lock: add the VM to the spec (a second `vm add` is refused before it
    touches the file, or waits and then starts from the file with this VM in it), apply."""
    async with node_locks(load_spec(spec_path), spec_path, wait=wait):
        try:
            cluster = edit.add_to_spec(spec_path, entry)
        except edit.SpecEditError as exc:
            raise _edit_failed(exc) from None
        click.echo(f"{spec_path}: added {entry['name']}")
        return await _apply(spec_path, cluster)


async def _apply(spec_path: Path, cluster: ClusterSpec) -> int:
    def progress(phase: str, node: str, step: Step | None, event: str) -> None:
        if step is not None and event != "start":
            mark = "ok" if event == "done" else "FAILED"
            say(f"{phase}: {node}: {step.title} ... {mark}")

    try:
        report = await engine.apply(cluster, spec_path, progress)
    except RemoteError as exc:
        raise advised(exc, "the spec is updated: re-run hakvm apply") from None
    except engine.ApplyError as exc:
        raise FailedError(f"{exc}; the spec is updated: re-run hakvm apply") from None
    except engine.RefusedError as exc:  # nothing was changed on the nodes
        exc.hint = f"the spec is updated: hakvm apply {spec_path} (with what the line above says)"
        raise
    return report.changes


@vm_group.command("add")
@SPEC_ARG
@click.argument("name")
@click.option("--memory", required=True, metavar="SIZE", help="guest RAM, e.g. 4GiB")
@click.option("--disk", "disk", required=True, metavar="SIZE", help="disk size, e.g. 40GiB")
@click.option("--vcpus", type=int, default=1, show_default=True)
@click.option("--preferred-node", metavar="NODE", help="where it runs when both nodes are up")
@click.option("--bridge", "bridges", multiple=True, metavar="BR", help="a NIC on BR (repeat)")
@click.option("--mode", type=click.Choice(["block", "qcow2-on-xfs"]), help="disk mode")
@click.option("--no-autostart", is_flag=True, help="define it stopped (target-role Stopped)")
@click.option(
    "--force-stop", is_flag=True, help="stop it by destroy (guests that ignore ACPI shutdown)"
)
@click.option("--no-apply", is_flag=True, help="only write the spec file")
@WAIT_OPTION
def add_cmd(
    *,  # click passes parameters by name
    spec: Path,
    name: str,
    memory: str,
    disk: str,
    vcpus: int,
    preferred_node: str | None,
    bridges: tuple[str, ...],
    mode: str | None,
    no_autostart: bool,
    force_stop: bool,
    no_apply: bool,
    wait: float,
) -> int:
    """Add VM NAME to SPEC (whole spec validated first), then apply to create it."""
    entry = edit.new_entry(
        name, memory, disk, vcpus=vcpus, preferred_node=preferred_node, bridges=bridges,
        mode=mode, autostart=not no_autostart, force_stop=force_stop,
    )  # fmt: skip
    try:
        edit.add_to_spec(spec, entry, check_only=not no_apply)
    except edit.SpecEditError as exc:
        raise _edit_failed(exc) from None
    if no_apply:
        click.echo(f"{spec}: added {name}")
        click.echo(f"not applied: `hakvm apply {spec}` creates {name} on the nodes")
        return ExitCode.OK
    changes = asyncio.run(_add_and_apply(spec, entry, wait))
    click.echo(f"{name}: {changes} step(s) changed")
    return ExitCode.OK


def _print_removal(spec: Path, result: ops.RemoveResult) -> None:
    name = result.vm
    if result.cib_removed:
        click.echo(f"{name}: removed from the CIB: {', '.join(result.cib_removed)}")
    for node, files in result.files_removed.items():
        if files:
            click.echo(f"{name}: removed {', '.join(files)} on {node}")
    for lv in result.lvs_removed:
        click.echo(f"{name}: removed logical volume {lv}")
    if result.lvs_kept:
        kept = ", ".join(result.lvs_kept)
        click.echo(f"{name}: kept logical volume {kept} (its data; --delete-storage removes it)")
    if result.spec_updated:
        click.echo(f"{spec}: removed {name}")


@vm_group.command("remove")
@SPEC_ARG
@click.argument("name")
@click.option("--force", is_flag=True, help="stop the VM if it is running")
@click.option("--delete-storage", is_flag=True, help="also lvremove its volume on both nodes")
@click.option("--no-apply", is_flag=True, help="only edit the spec file; touch no node")
@WAIT_OPTION
def remove_cmd(  # noqa: PLR0917 - click passes options by keyword
    spec: Path, name: str, force: bool, delete_storage: bool, no_apply: bool, wait: float
) -> int:
    """Stop VM NAME, delete it from the cluster and both nodes, then from SPEC.

    Its logical volumes are kept unless --delete-storage. Safe to re-run after an
    interruption; exit 3 if it is running and --force is not given."""
    if no_apply and delete_storage:
        raise click.UsageError("--delete-storage needs the nodes: drop --no-apply")
    cluster = load_spec(spec)
    try:
        if no_apply:
            edit.remove_from_spec(spec, name)
            click.echo(f"{spec}: removed {name}; the nodes were not touched")
            click.echo(f"`hakvm vm remove {spec} {name}` still stops it and cleans the nodes up")
            return ExitCode.OK
        result = asyncio.run(
            ops.remove_vm(
                cluster,
                spec,
                name,
                force=force,
                delete_storage=delete_storage,
                progress=say,
                lock=node_locks(cluster, spec, wait=wait),
            )
        )
    except edit.SpecEditError as exc:
        raise _edit_failed(exc) from None
    except RemoteError as exc:
        raise advised(exc, "re-run the same command to finish") from None
    _print_removal(spec, result)
    return ExitCode.OK


COMMANDS = [vm_group]
