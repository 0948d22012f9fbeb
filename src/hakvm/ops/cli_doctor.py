"""`hakvm doctor SPEC`: misconfigurations with their fixes, as a table or --json.

Exit codes as for monitoring: 0 nothing found, 1 only warnings, 2 any critical, 3 unknown
(the spec is invalid).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console, Group
from rich.table import Table

from hakvm.ops import doctor as dr
from hakvm.ops.cli import SPEC_ARG, _health_style, _load


def doctor_view(report: dr.DoctorReport) -> Group:
    style = _health_style(report.health)
    count = f"{len(report.findings)} finding(s)" if report.findings else "no findings"
    parts: list[object] = [
        f"cluster [bold]{report.cluster}[/bold]: [{style}]{report.health.upper()}[/], {count}"
    ]
    if report.findings:
        table = Table(show_lines=True)
        # Fold, never ellipsize: a fix is a command to copy whole.
        for col in ("finding", "node", "problem", "fix"):
            table.add_column(col, overflow="fold")
        for f in report.findings:
            severity = "[bold red]CRITICAL[/]" if f.severity == "critical" else "[yellow]warning[/]"
            table.add_row(f"{severity}\n{f.check}", f.node or "-", f.message, f.fix)
        parts.append(table)
    parts.append(f"checked: {', '.join(report.checks_run) or 'nothing'}")
    if report.skipped:
        parts.append("not checked:\n" + "\n".join(f"  - {s}" for s in report.skipped))
    return Group(*parts)  # type: ignore[arg-type]


@click.command("doctor")
@SPEC_ARG
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
def doctor_cmd(spec: Path, as_json: bool) -> int:
    """Find misconfigurations (fencing, heartbeat links, DRBD, quorum policy, clock skew,
    bonds, secret file modes, drift from the spec), each with its fix.

    Exit: 0 nothing found, 1 warnings only, 2 any critical, 3 invalid spec."""
    cluster = _load(spec)
    report = asyncio.run(dr.doctor(cluster, spec))
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        Console(highlight=False).print(doctor_view(report))
    return report.exit_code
