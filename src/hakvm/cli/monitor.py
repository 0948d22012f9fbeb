"""The monitoring commands, `status` and `doctor`: a table or --json, and the monitoring
exit code the report carries (0 healthy, 1 degraded, 2 critical, 3 unknown)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table

from hakvm.cli.common import SPEC_ARG, Seconds, health_style, load_spec
from hakvm.errors import ExitCode, MonitorCode
from hakvm.ops import status as st
from hakvm.spec.models import ClusterSpec

if TYPE_CHECKING:  # doctor (and the deploy planner it runs) only loads for `hakvm doctor`
    from hakvm.ops import doctor as dr


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else "yes" if value else "[red]NO[/red]"


def _qdevice(q: st.QdeviceStatus | None) -> str:
    if q is None:
        return "-"
    link = "connected" if q.connected else f"[red]{q.state or 'not running'}[/red]"
    return f"{link}, " + ("vote cast" if q.vote_cast else "[red]vote not cast[/red]")


def _nodes_table(report: st.StatusReport) -> Table:
    nodes = Table(title="nodes", title_justify="left")
    qdevice = any(n.qdevice for n in report.nodes)
    columns = ("node", "state", "DC", "quorate", "knet links", "bonds", "qdevice")
    for col in columns[: 6 + qdevice]:
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
        dc = "yes" if n.is_dc else ""
        row = [n.name, n.state, dc, quorate, links, bonds, _qdevice(n.qdevice)]
        nodes.add_row(*row[: 6 + qdevice])
    return nodes


def _vms_table(report: st.StatusReport) -> Table:
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
    return vms


def status_view(report: st.StatusReport) -> Group:
    head = (
        f"cluster [bold]{report.cluster}[/bold]: "
        f"[{health_style(report.health)}]{report.health.upper()}[/]"
        f"  quorum: {_yes_no(report.quorate)}  fencing: {_yes_no(report.stonith_enabled)}"
        f"  (seen from {report.seen_from or 'no node'})"
    )
    parts: list[RenderableType] = [head, _nodes_table(report), _vms_table(report)]
    if report.last_fencing:
        f = report.last_fencing
        parts.append(
            f"last fencing: {f.action} of {f.target} by {f.delegate or '?'}: "
            f"{f.status} at {f.completed}"
        )
    if report.problems:
        parts.append("problems:\n" + "\n".join(f"  - {p}" for p in report.problems))
    return Group(*parts)


def _show(report: st.StatusReport | dr.DoctorReport, shown: str | Group) -> int:
    """Print the report (its JSON, or its view); its monitoring code is the exit code."""
    if isinstance(shown, str):
        click.echo(shown)
    else:
        Console(highlight=False).print(shown)
    return report.exit_code


@click.command("status")
@SPEC_ARG
@click.option("--json", "as_json", is_flag=True, help="machine-readable (see --schema)")
@click.option("--schema", is_flag=True, help="print the JSON Schema of --json and exit")
@click.option(
    "--watch", type=Seconds(1), metavar="SECONDS", help="refresh every SECONDS"
)
def status_cmd(spec: Path, as_json: bool, schema: bool, watch: float | None) -> int:
    """Nodes, quorum, knet links, DRBD, VM placement, failed actions, last fencing.

    Exit: 0 healthy, 1 degraded, 2 critical, 3 unknown."""
    if schema:
        click.echo(json.dumps(st.StatusReport.model_json_schema(), indent=2))
        return ExitCode.OK
    cluster = load_spec(spec, monitoring=True)
    if watch is None:
        report = asyncio.run(st.status(cluster, spec))
        return _show(report, report.model_dump_json(indent=2) if as_json else status_view(report))
    return _watch(cluster, spec, watch, as_json)


def _watch(cluster: ClusterSpec, spec: Path, every: float, as_json: bool) -> int:
    """Refresh until Ctrl-C on one session (each node logged in to once); exit with the
    last report's code. --json: one report per line."""
    last: list[st.StatusReport] = []
    live = None if as_json else Live("asking the nodes...", auto_refresh=False,
                                     console=Console(highlight=False))  # fmt: skip

    def show(report: st.StatusReport) -> None:
        last[:] = [report]
        if live is None:
            click.echo(report.model_dump_json())
        else:
            live.update(status_view(report), refresh=True)

    with live or contextlib.nullcontext(), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(st.watch(cluster, spec, every, show))  # Ctrl-C ends the watch
    return last[0].exit_code if last else MonitorCode.UNKNOWN


def doctor_view(report: dr.DoctorReport) -> Group:
    style = health_style(report.health)
    count = f"{len(report.findings)} finding(s)" if report.findings else "no findings"
    parts: list[RenderableType] = [
        f"cluster [bold]{report.cluster}[/bold]: [{style}]{report.health.upper()}[/], {count}"
    ]
    if report.findings:
        table = Table(show_lines=True)
        # Fold, never ellipsize: a fix is a command to copy whole.
        for col in ("finding", "node", "problem", "fix"):
            table.add_column(col, overflow="fold")
        for f in report.findings:
            severity = {"critical": "[bold red]CRITICAL[/]", "warning": "[yellow]warning[/]"}.get(
                f.severity, "[cyan]advice[/]"
            )
            table.add_row(f"{severity}\n{f.check}", f.node or "-", f.message, f.fix)
        parts.append(table)
    parts.append(f"checked: {', '.join(report.checks_run) or 'nothing'}")
    if report.skipped:
        parts.append("not checked:\n" + "\n".join(f"  - {s}" for s in report.skipped))
    return Group(*parts)


@click.command("doctor")
@SPEC_ARG
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
def doctor_cmd(spec: Path, as_json: bool) -> int:
    """Find misconfigurations (fencing, heartbeat links, DRBD, quorum policy, clock skew,
    bonds, secret file modes, drift from the spec), each with its fix.

    Exit: 0 nothing found, 1 warnings only, 2 any critical, 3 invalid spec."""
    from hakvm.ops import doctor as dr

    cluster = load_spec(spec, monitoring=True)
    report = asyncio.run(dr.doctor(cluster, spec))
    return _show(report, report.model_dump_json(indent=2) if as_json else doctor_view(report))


COMMANDS = [status_cmd, doctor_cmd]
