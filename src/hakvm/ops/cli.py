"""Operate commands: `status`, `vm ...`, `migrate`, `drain`/`undrain`, `doctor`.

Thin: each parses, calls `hakvm.ops`, prints a table or --json, maps the outcome to an exit
code. `status` and `doctor` use monitoring exit codes: 0 healthy, 1 degraded, 2 critical,
3 unknown (bad spec or cannot run).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from hakvm.ops import status as st
from hakvm.spec.models import ClusterSpec

EXIT_UNKNOWN = 3
T = TypeVar("T")
SPEC_ARG = click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))


class SpecUnknownError(click.ClickException):
    # Monitoring reads 2 as "critical": an unusable spec makes the state "unknown".
    exit_code = EXIT_UNKNOWN


def _load(spec: Path) -> ClusterSpec:
    from hakvm.cli import load_context

    try:
        return load_context(spec).spec
    except click.ClickException as exc:
        raise SpecUnknownError(exc.message) from None


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else "yes" if value else "[red]NO[/red]"


def _health_style(health: str) -> str:
    return {"healthy": "green", "degraded": "yellow", "critical": "bold red"}.get(health, "")


def status_view(report: st.StatusReport) -> Group:
    head = (
        f"cluster [bold]{report.cluster}[/bold]: "
        f"[{_health_style(report.health)}]{report.health.upper()}[/]"
        f"  quorum: {_yes_no(report.quorate)}  fencing: {_yes_no(report.stonith_enabled)}"
        f"  (seen from {report.seen_from or 'no node'})"
    )
    nodes = Table(title="nodes", title_justify="left")
    for col in ("node", "state", "DC", "quorate", "knet links", "bonds"):
        nodes.add_column(col)
    for n in report.nodes:
        links = " ".join(
            f"{lk.link}:{'up' if lk.peer_connected else '[red]down[/red]'}" for lk in n.links
        ) or ("-" if n.reachable else "[red]unreachable[/red]")
        bonds = (
            " ".join(
                f"{b.name} {len(b.members_up)}/{len(b.members_up) + len(b.members_down)}"
                for b in n.bonds
            )
            or "-"
        )
        quorate = "-" if n.quorate is None else "yes" if n.quorate else "[red]no[/red]"
        nodes.add_row(n.name, n.state, "yes" if n.is_dc else "", quorate, links, bonds)
    vms = Table(title="VMs", title_justify="left")
    for col in ("VM", "state", "on", "preferred", "DRBD (node: role disk/peer)"):
        vms.add_column(col)
    for vm in report.vms:
        drbd = "; ".join(
            f"{d.node}: {d.role} {d.disk}/{d.peer_disk}"
            + (f" {d.sync_percent:.1f}%" if d.sync_percent is not None else "")
            + (f" ETA {d.sync_eta_s}s" if d.sync_eta_s is not None else "")
            + ("" if d.connection == "Connected" else f" [{d.connection}]")
            for d in vm.drbd
        )
        vms.add_row(
            vm.name, vm.state, ", ".join(vm.running_on) or "-", vm.preferred_node or "-", drbd
        )
    parts: list[object] = [head, nodes, vms]
    if report.last_fencing:
        f = report.last_fencing
        parts.append(
            f"last fencing: {f.action} of {f.target} by {f.delegate or '?'}: "
            f"{f.status} at {f.completed}"
        )
    if report.problems:
        parts.append("problems:\n" + "\n".join(f"  - {p}" for p in report.problems))
    return Group(*parts)  # type: ignore[arg-type]


@click.command("status")
@SPEC_ARG
@click.option("--json", "as_json", is_flag=True, help="machine-readable (see --schema)")
@click.option("--schema", is_flag=True, help="print the JSON Schema of --json and exit")
@click.option(
    "--watch", type=click.FloatRange(min=1), metavar="SECONDS", help="refresh every SECONDS"
)
def status_cmd(spec: Path, as_json: bool, schema: bool, watch: float | None) -> int:
    """Nodes, quorum, knet links, DRBD, VM placement, failed actions, last fencing.

    Exit: 0 healthy, 1 degraded, 2 critical, 3 unknown."""
    if schema:
        click.echo(json.dumps(st.StatusReport.model_json_schema(), indent=2))
        return 0
    cluster = _load(spec)
    if watch is None:
        report = asyncio.run(st.status(cluster, spec))
        if as_json:
            click.echo(report.model_dump_json(indent=2))
        else:
            Console(highlight=False).print(status_view(report))
        return report.exit_code
    console = Console(highlight=False)
    report = asyncio.run(st.status(cluster, spec))
    try:
        with Live(status_view(report), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(watch)
                report = asyncio.run(st.status(cluster, spec))
                if as_json:
                    console.print_json(report.model_dump_json())
                else:
                    live.update(status_view(report), refresh=True)
    except KeyboardInterrupt:
        return report.exit_code


def _run_move(coro: Coroutine[Any, Any, T]) -> T:
    from hakvm.ops.migrate import MoveError
    from hakvm.remote.connection import RemoteError

    try:
        return asyncio.run(coro)
    except MoveError as exc:
        raise StateError(str(exc)) from None
    except RemoteError as exc:
        raise click.ClickException(str(exc)) from None


class StateError(click.ClickException):
    exit_code = 3  # the cluster is not in a state where the move can run


def _say(text: str) -> None:
    click.echo(f"hakvm: {text}", err=True)


def _move_line(m: Any) -> str:
    if m.kind == "live":
        down = f"{m.downtime_ms} ms" if m.downtime_ms is not None else "not reported"
        return f"{m.vm}: live-migrated {m.source} -> {m.target} in {m.seconds}s, downtime {down}"
    return f"{m.vm}: restarted {m.source} -> {m.target}: outage {m.outage_s}s"


@click.command("migrate")
@SPEC_ARG
@click.argument("vm")
@click.option("--to", "to", metavar="NODE", help="target node (default: the other one)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
def migrate_cmd(spec: Path, vm: str, to: str | None, as_json: bool) -> int:
    """Move VM: live migration (block disks) or clean restart (qcow2-on-xfs).

    Exit: 0 moved, 1 failed, 2 bad input, 3 pre-flight refused (cluster not ready)."""
    from hakvm.ops.migrate import migrate

    cluster = _load_strict(spec)
    result = _run_move(migrate(cluster, spec, vm, to, progress=_say))
    click.echo(json.dumps(result.as_dict()) if as_json else _move_line(result))
    return 0


@click.command("drain")
@SPEC_ARG
@click.argument("node")
@click.option("--json", "as_json", is_flag=True, help="machine-readable result")
def drain_cmd(spec: Path, node: str, as_json: bool) -> int:
    """Live-migrate every VM off NODE, then put NODE in standby (for maintenance)."""
    from hakvm.ops.migrate import drain

    cluster = _load_strict(spec)
    result = _run_move(drain(cluster, spec, node, progress=_say))
    if as_json:
        moves = [m.as_dict() for m in result.moves]
        click.echo(json.dumps({"node": node, "standby": result.standby, "moves": moves}))
    else:
        for m in result.moves:
            click.echo(_move_line(m))
        click.echo(f"{node}: standby (no VMs); `hakvm undrain SPEC {node}` brings it back")
    return 0


@click.command("undrain")
@SPEC_ARG
@click.argument("node")
def undrain_cmd(spec: Path, node: str) -> int:
    """Take NODE out of standby; VMs stay where they run (stickiness)."""
    from hakvm.ops.migrate import undrain

    cluster = _load_strict(spec)
    _run_move(undrain(cluster, spec, node))
    click.echo(f"{node}: online again; VMs stay where they are")
    return 0


def _load_strict(spec: Path) -> ClusterSpec:
    from hakvm.cli import load_context

    return load_context(spec).spec


def _drill_view(results: list[Any]) -> Group:
    parts: list[Any] = []
    for r in results:
        verdict = "[green]PASSED[/green]" if r.passed else "[bold red]FAILED[/bold red]"
        rec = f"{r.recovery_s}s" if r.recovery_s is not None else "-"
        parts.append(f"[bold]{r.scenario}[/bold]: {verdict}  recovery {rec}")
        timeline = Table(show_header=True, title_justify="left")
        timeline.add_column("t (s)", justify="right")
        timeline.add_column("event")
        for mark in r.timeline.as_dict():
            timeline.add_row(f"{mark['t']}", str(mark["event"]))
        parts.append(timeline)
        checks = Table(show_header=True)
        for col in ("invariant", "ok", "detail"):
            checks.add_column(col)
        for inv in r.invariants:
            checks.add_row(inv.name, "yes" if inv.ok else "[red]NO[/red]", inv.detail)
        parts.append(checks)
    return Group(*parts)


@click.command("drill")
@SPEC_ARG
@click.option("--scenario", "scenarios", multiple=True, metavar="NAME", help="repeatable")
@click.option("--all", "run_all", is_flag=True, help="every scenario, one after the other")
@click.option("--bound", type=float, default=600.0, show_default=True,
              help="seconds within which VMs must be responsive again")  # fmt: skip
@click.option("--lab-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="the lab the spec's nodes are ($HAKVM_LAB_DIR, .hakvm/lab)")  # fmt: skip
@click.option(
    "--inject",
    type=click.Choice(["auto", "lab", "nodes"]),
    default="auto",
    show_default=True,
    help="lab: the lab's commands; nodes: from inside the nodes (sysrq power-off, nftables "
    "cuts), what real nodes get; auto: lab when the spec is the lab",
)
@click.option(
    "--yes-really", is_flag=True, help="allow faults injected on the nodes themselves (real nodes)"
)
@click.option(
    "--witness-vm", metavar="VM", help="real nodes: the VM whose disk's last 16 MiB is overwritten"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable results")
def drill_cmd(  # noqa: PLR0917 - click passes options by keyword
    spec: Path,
    scenarios: tuple[str, ...],
    run_all: bool,
    bound: float,
    lab_dir: Path | None,
    inject: str,
    yes_really: bool,
    witness_vm: str | None,
    as_json: bool,
) -> int:
    """Inject faults and check recovery, fencing, acknowledged writes, split-brain.

    Progress goes to stderr. Exit: 0 every invariant held, 1 one failed, 2 bad input,
    3 cannot run (real nodes without --yes-really or --witness-vm, cluster not healthy
    first)."""
    from hakvm.drill.harness import DrillError
    from hakvm.drill.run import run_drills
    from hakvm.drill.scenarios import SCENARIOS
    from hakvm.lab.state import lab_dir_from_env
    from hakvm.ops.migrate import MoveError
    from hakvm.remote.connection import RemoteError

    names = list(SCENARIOS) if run_all else list(scenarios)
    unknown = [n for n in names if n not in SCENARIOS]
    if not names or unknown:
        raise click.UsageError(
            f"--scenario: {', '.join(unknown) or 'none given'}; "
            f"choose from {', '.join(SCENARIOS)} or --all"
        )
    cluster = _load_strict(spec)
    try:
        results = asyncio.run(
            run_drills(
                cluster, spec, names, lab_dir=lab_dir or lab_dir_from_env(), bound=bound,
                say=_say, inject=inject, yes_really=yes_really, witness_vm=witness_vm,
            )
        )  # fmt: skip
    except DrillError as exc:
        raise StateError(str(exc)) from None
    except (RemoteError, MoveError) as exc:  # a node did not answer, a move was refused
        raise StateError(f"drill: {exc}; check hakvm status before another drill") from None
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        Console(highlight=False).print(_drill_view(results))
    return 0 if all(r.passed for r in results) else 1


COMMANDS = [status_cmd, migrate_cmd, drain_cmd, undrain_cmd, drill_cmd]
