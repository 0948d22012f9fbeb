"""`hakvm drill`: inject faults, check what must hold, show the timeline and invariants."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.table import Table

from hakvm.cli.common import SPEC_ARG, WAIT_OPTION, Seconds, load_spec, say
from hakvm.drill.harness import DrillResult
from hakvm.drill.heal import heal_drills
from hakvm.drill.run import run_drills
from hakvm.drill.scenarios import NAMED_ONLY, SCENARIOS, scenarios_for
from hakvm.errors import ExitCode, StateError
from hakvm.lab.state import lab_dir_from_env
from hakvm.ops.migrate import MoveError
from hakvm.remote.connection import RemoteError
from hakvm.remote.lock import node_locks


def drill_view(results: list[DrillResult]) -> Group:
    parts: list[RenderableType] = []
    for r in results:
        verdict = "[green]PASSED[/green]" if r.passed else "[bold red]FAILED[/bold red]"
        rec = f"{r.recovery_s}s" if r.recovery_s is not None else "-"
        parts.append(f"[bold]{r.scenario}[/bold]: {verdict}  recovery {rec}")
        timeline = Table(show_header=True, title_justify="left")
        timeline.add_column("t (s)", justify="right")
        timeline.add_column("event")
        for t, mark in r.timeline.marks:
            timeline.add_row(f"{t}", mark.text)
        parts.append(timeline)
        if r.journal is not None:
            parts.append(journal_line(r.journal))
        checks = Table(show_header=True)
        for col in ("invariant", "ok", "detail"):
            checks.add_column(col)
        for inv in r.invariants:
            checks.add_row(inv.name, "yes" if inv.ok else "[red]NO[/red]", inv.detail)
        parts.append(checks)
    return Group(*parts)


def journal_line(found: dict[str, Any]) -> str:
    """The components the survivor's own events give, to the uncertainty of its clock."""

    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s"

    started = ", ".join(f"{vm} started {s(t)}" for vm, t in found["started_s"].items())
    return (
        f"from {found['clock']} events (±{found['uncertainty_s']:.2f}s): lost "
        f"{s(found['detected_s'])}, fenced {s(found['fenced_s'])}"
        + (f", {started}" if started else "")
    )


@click.command("drill")
@SPEC_ARG
@click.option("--scenario", "scenarios", multiple=True, metavar="NAME", help="repeatable")
@click.option("--all", "run_all", is_flag=True,
              help=f"every scenario but {', '.join(NAMED_ONLY)}, one after the other")
@click.option("--bound", type=Seconds(1), default=600.0, show_default=True,
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
@click.option(
    "--victim", metavar="NODE", help="the node a node failure takes down (default: the one "
    "running the most VMs; with --witness-vm, that VM's node): it must run a VM"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable results")
@click.option(
    "--heal", is_flag=True, help="no drill: remove every trace of one (nftables tables, a "
    "downed bond member, witness processes, DRBD runtime options; the lab's links, BMCs, qnetd)"
)  # fmt: skip
@WAIT_OPTION
def drill_cmd(  # noqa: PLR0917 - click passes options by keyword
    spec: Path,
    scenarios: tuple[str, ...],
    run_all: bool,
    bound: float,
    lab_dir: Path | None,
    inject: str,
    yes_really: bool,
    witness_vm: str | None,
    victim: str | None,
    as_json: bool,
    heal: bool,
    wait: float,
) -> int:
    """Inject faults and check recovery, fencing, acknowledged writes, split-brain.

    Progress goes to stderr. Exit: 0 every invariant held (--heal: healed, or nothing to
    heal), 1 one failed, 2 bad input, 3 cannot run (real nodes without --yes-really or
    --witness-vm, cluster not healthy first, a node that does not answer)."""
    if heal:
        if scenarios or run_all:
            raise click.UsageError("--heal runs no drill: drop --scenario and --all")
        return _heal(spec, lab_dir or lab_dir_from_env(), as_json=as_json, wait=wait)
    unknown = [n for n in scenarios if n not in SCENARIOS]
    if not (run_all or scenarios) or unknown:
        raise click.UsageError(
            f"--scenario: {', '.join(unknown) or 'none given'}; "
            f"choose from {', '.join(SCENARIOS)} or --all"
        )
    cluster = load_spec(spec)
    nodes = [n.name for n in cluster.nodes]
    if victim is not None and victim not in nodes:
        raise click.UsageError(f"--victim {victim}: not a node of the spec ({', '.join(nodes)})")
    names = scenarios_for(cluster) if run_all else list(scenarios)
    try:
        results = asyncio.run(
            run_drills(
                cluster, spec, names, lab_dir=lab_dir or lab_dir_from_env(), bound=bound,
                say=say, inject=inject, yes_really=yes_really, witness_vm=witness_vm,
                victim=victim, lock=node_locks(cluster, spec, wait=wait),
            )
        )  # fmt: skip
    except (RemoteError, MoveError) as exc:  # a node did not answer, a move was refused
        raise StateError(f"drill: {exc}; check hakvm status before another drill") from None
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        Console(highlight=False).print(drill_view(results))
    return ExitCode.OK if all(r.passed for r in results) else ExitCode.FAILED


def _heal(spec: Path, lab_dir: Path, *, as_json: bool, wait: float) -> int:
    cluster = load_spec(spec)
    lock = node_locks(cluster, spec, wait=wait)
    found = asyncio.run(heal_drills(cluster, spec, lab_dir, lock=lock))
    if as_json:
        click.echo(json.dumps({"healed": found}, indent=2))
    else:
        for line in found or ["no trace of a drill on the nodes"]:
            click.echo(line)
    return ExitCode.OK


COMMANDS = [drill_cmd]
