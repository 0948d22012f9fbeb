"""Operate commands: `status`, `vm ...`, `migrate`, `drain`/`undrain`, `doctor`.

Thin: each parses, calls `hakvm.ops`, prints a table or --json, maps the outcome to an exit
code. `status` and `doctor` use monitoring exit codes: 0 healthy, 1 degraded, 2 critical,
3 unknown (bad spec or cannot run).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from hakvm.ops import status as st
from hakvm.spec.models import ClusterSpec

EXIT_UNKNOWN = 3
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


COMMANDS = [status_cmd]
