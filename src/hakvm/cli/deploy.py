"""`plan` and `apply`: the same phases, shown or run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console

from hakvm.cli.common import SPEC_ARG, WAIT_OPTION, load_context
from hakvm.deploy import engine
from hakvm.deploy.guards import RunOptions
from hakvm.deploy.phases import PHASES
from hakvm.deploy.steps import Step
from hakvm.errors import ExitCode, HakvmError
from hakvm.remote.connection import UnreachableError
from hakvm.remote.lock import node_locks
from hakvm.remote.pacemaker import disruptive
from hakvm.spec.models import ClusterSpec

PARTLY_CHANGED = "the nodes may be partly changed; re-run apply to converge"


def _print_prediction(console: Console, predicted: tuple[str, ...]) -> None:
    if not predicted:
        return
    console.print("      Pacemaker predicts (crm_simulate):")
    hurts = set(disruptive(predicted))
    for action in predicted:
        style = "bold red" if action in hurts else ""
        console.print(f"        {action}", style=style, markup=False)


def _print_run(report: engine.RunReport, *, planned: bool) -> None:
    console = Console(highlight=False)
    if planned and report.secrets:
        console.print("[bold]secrets[/bold] (compared by hash on the nodes, never read)")
        for line in report.secrets:
            console.print(f"  {line}", markup=False, soft_wrap=True)
    for phase in report.phases:
        if not phase.steps:
            for note in phase.notes:
                console.print(f"[bold]{phase.name}[/bold]: {note}")
            continue
        took = "" if planned else f" ({phase.seconds:.1f}s)"
        console.print(f"[bold]{phase.name}[/bold]{took}")
        for step in phase.steps:
            console.print(f"  {step.node}: {step.title}")
            if planned:
                for action in step.actions:
                    console.print(f"      $ {action.describe()}", markup=False)
                if step.diff:
                    console.print(step.diff.rstrip(), markup=False)
                _print_prediction(console, step.predicted)
    verb = "would change" if planned else "changed"
    if report.changes == 0:
        console.print(f"no changes: the cluster matches the spec ({report.seconds:.1f}s)")
    else:
        console.print(f"{report.changes} step(s) {verb} ({report.seconds:.1f}s)")


async def _locked_apply(
    cluster: ClusterSpec,
    spec: Path,
    progress: engine.Progress,
    *,
    stop_after: str | None,
    wait: float,
    options: RunOptions,
) -> engine.RunReport:
    async with node_locks(cluster, spec, wait=wait):  # no change before: no hint if refused
        try:
            return await engine.apply(
                cluster, spec, progress, stop_after=stop_after, options=options
            )
        except HakvmError as exc:
            # unreachable, or refused before the first phase ran: nothing was done
            if not isinstance(exc, UnreachableError | engine.RefusedError):
                exc.hint = PARTLY_CHANGED
            raise


Guards = tuple[str | None, tuple[str, ...]]  # --replace-cluster, --adopt


def _options(vms: list[str], replace_cluster: str | None, adopt: tuple[str, ...]) -> RunOptions:
    for name in adopt:
        if name not in vms:
            raise click.BadParameter(f"{name} is not a VM of the spec", param_hint="--adopt")
    return RunOptions(replace_cluster=replace_cluster, adopt=frozenset(adopt))


def _run_deploy(
    spec: Path,
    *,
    apply_: bool,
    as_json: bool,
    stop_after: str | None,
    guards: Guards,
    wait: float = 0.0,
) -> int:
    ctx = load_context(spec)
    options = _options([vm.name for vm in ctx.spec.vms], *guards)
    console = Console(stderr=True, highlight=False)

    def progress(phase: str, node: str, step: Step | None, event: str) -> None:
        if as_json:
            return
        if step is None:
            console.print(f"[bold]{phase}[/bold]: {event}")
        elif event != "start":
            mark = "ok" if event == "done" else "FAILED"
            console.print(f"  {node}: {step.title} ... {mark}", markup=False)

    if apply_:
        report = asyncio.run(
            _locked_apply(
                ctx.spec, spec, progress, stop_after=stop_after, wait=wait, options=options
            )
        )
    else:
        report = asyncio.run(engine.plan(ctx.spec, spec, options))  # read-only: never locks
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_run(report, planned=not apply_)
    return ExitCode.OK


def _guard_options(command: Callable[..., int]) -> Callable[..., int]:
    """--replace-cluster and --adopt: what apply may take over besides what hakvm made."""
    command = click.option(
        "--adopt", multiple=True, metavar="VM",
        help="use VM's existing logical volume though hakvm did not create it (repeat)",
    )(command)  # fmt: skip
    return click.option(
        "--replace-cluster", metavar="NAME",
        help="replace the cluster NAME the nodes belong to (its configuration is moved aside)",
    )(command)  # fmt: skip


@click.command()
@SPEC_ARG
@click.option("--json", "as_json", is_flag=True, help="machine-readable steps and diffs")
@_guard_options
def plan(spec: Path, as_json: bool, replace_cluster: str | None, adopt: tuple[str, ...]) -> int:
    """Show, per node, the ordered changes apply would make (changes nothing)."""
    guards = (replace_cluster, adopt)
    return _run_deploy(spec, apply_=False, as_json=as_json, stop_after=None, guards=guards)


@click.command()
@SPEC_ARG
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
@click.option("--stop-after", metavar="PHASE", help="stop after this phase (testing, staging)")
@WAIT_OPTION
@_guard_options
def apply(  # noqa: PLR0917 - click passes every option by keyword, this signature is its
    spec: Path,
    as_json: bool,
    stop_after: str | None,
    wait: float,
    replace_cluster: str | None,
    adopt: tuple[str, ...],
) -> int:
    """Converge both nodes to the spec, phase by phase; safe to re-run at any time."""
    if stop_after is not None and stop_after not in [name for name, _ in PHASES]:
        raise click.BadParameter(
            f"unknown phase; use one of {', '.join(n for n, _ in PHASES)}",
            param_hint="--stop-after",
        )
    guards = (replace_cluster, adopt)
    return _run_deploy(
        spec, apply_=True, as_json=as_json, stop_after=stop_after, guards=guards, wait=wait
    )


COMMANDS = [plan, apply]
