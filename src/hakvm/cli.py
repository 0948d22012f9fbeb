"""Command line: parse, call the library, print (plain lines, rich tables or --json), map
errors to exit codes. No logic lives here.

Exit codes (also in the README):
  0  success: valid spec, files written, no changes needed
  1  an operation failed (a step on a node, a tool, a drill invariant)
  2  bad input: invalid spec, bad command line, missing file
  3  the cluster or lab is not in a state where the command can run
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hakvm import __version__
from hakvm.render.base import RenderContext, Secrets
from hakvm.spec.validate import validate_file

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_STATE = 3


class SpecInvalidError(click.ClickException):
    exit_code = EXIT_INVALID


def load_context(spec_path: Path) -> RenderContext:
    """Validate and return a render context, or print every problem and exit 2."""
    report = validate_file(spec_path)
    if not report.ok or report.spec is None or report.derived is None:
        for line in report.lines():
            click.echo(line, err=True)
        raise SpecInvalidError(f"{spec_path}: {len(report.errors)} error(s); nothing was done")
    return RenderContext(report.spec, report.derived, Secrets.redacted())


SPEC_ARG = click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hakvm")
def cli() -> None:
    """hakvm: two-node active/active KVM high-availability clusters from one YAML spec."""


@cli.command()
@SPEC_ARG
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
def validate(spec: Path, as_json: bool) -> int:
    """Check SPEC: every problem at once, one line each (exit 0 valid, 2 invalid)."""
    report = validate_file(spec)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "file": str(spec),
                    "valid": report.ok,
                    "problems": [p.as_dict() for p in report.problems],
                },
                indent=2,
            )
        )
    else:
        for line in report.lines():
            click.echo(line)
        if report.ok:
            n_vms = len(report.spec.vms) if report.spec else 0
            click.echo(f"{spec}: valid ({n_vms} VMs, {len(report.warnings)} warning(s))")
    return EXIT_OK if report.ok else EXIT_INVALID


@cli.command()
def schema() -> int:
    """Print the spec's JSON Schema (for editors and CI linters)."""
    from hakvm.spec.schema import json_schema

    click.echo(json.dumps(json_schema(), indent=2, sort_keys=True))
    return EXIT_OK


@cli.command()
@SPEC_ARG
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out"),
    show_default=True,
    help="directory for the per-node trees and manifest.json",
)
@click.option("--json", "as_json", is_flag=True, help="print the manifest")
def render(spec: Path, output: Path, as_json: bool) -> int:
    """Render every configuration file for both nodes (secrets redacted)."""
    from hakvm.render.tree import manifest, render_all, write_tree

    ctx = load_context(spec)
    rendered = render_all(ctx)
    try:
        written = write_tree(rendered, output)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    if as_json:
        click.echo(json.dumps(manifest(rendered), indent=2, sort_keys=True))
    else:
        for node in sorted(rendered):
            click.echo(f"{node}: {len(rendered[node])} files in {output / node}")
        click.echo(f"{len(written)} files, manifest: {output / 'manifest.json'}")
    return EXIT_OK


@cli.group()
def export() -> None:
    """Equivalent command scripts for admins who use pcs or crmsh (no passwords in them)."""


@export.command("pcs")
@SPEC_ARG
def export_pcs(spec: Path) -> int:
    """Print the pcs commands that build the same Pacemaker configuration."""
    from hakvm.render.export import pcs_script

    click.echo(pcs_script(load_context(spec)), nl=False)
    return EXIT_OK


@export.command("crmsh")
@SPEC_ARG
def export_crmsh(spec: Path) -> int:
    """Print the crmsh configuration that builds the same Pacemaker configuration."""
    from hakvm.render.export import crmsh_script

    click.echo(crmsh_script(load_context(spec)), nl=False)
    return EXIT_OK


def _print_prediction(console: object, predicted: tuple[str, ...]) -> None:
    from rich.console import Console

    from hakvm.remote.pacemaker import disruptive

    assert isinstance(console, Console)
    if not predicted:
        return
    console.print("      Pacemaker predicts (crm_simulate):")
    hurts = set(disruptive(list(predicted)))
    for action in predicted:
        style = "bold red" if action in hurts else ""
        console.print(f"        {action}", style=style, markup=False)


def _print_run(report: object, *, planned: bool) -> None:
    from rich.console import Console

    from hakvm.deploy.engine import RunReport

    assert isinstance(report, RunReport)
    console = Console(highlight=False)
    for phase in report.phases:
        if not phase.steps:
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


def _run_deploy(spec: Path, *, apply_: bool, as_json: bool, stop_after: str | None) -> int:
    import asyncio

    from rich.console import Console

    from hakvm.deploy.engine import ApplyError, apply, plan
    from hakvm.remote.connection import RemoteError

    ctx = load_context(spec)
    console = Console(stderr=True, highlight=False)

    def progress(phase: str, node: str, step: object, event: str) -> None:
        if as_json:
            return
        title = getattr(step, "title", "")
        if step is None:
            console.print(f"[bold]{phase}[/bold]: {event}")
        elif event != "start":
            mark = "ok" if event == "done" else "FAILED"
            console.print(f"  {node}: {title} ... {mark}", markup=False)

    try:
        if apply_:
            report = asyncio.run(apply(ctx.spec, spec, progress, stop_after=stop_after))
        else:
            report = asyncio.run(plan(ctx.spec, spec))
    except (ApplyError, RemoteError) as exc:
        click.echo(f"hakvm: {exc}", err=True)
        if apply_:
            click.echo("hakvm: the nodes may be partly changed; re-run apply to converge", err=True)
        return EXIT_FAILED
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_run(report, planned=not apply_)
    return EXIT_OK


@cli.command()
@SPEC_ARG
@click.option("--json", "as_json", is_flag=True, help="machine-readable steps and diffs")
def plan(spec: Path, as_json: bool) -> int:
    """Show, per node, the ordered changes apply would make (changes nothing)."""
    return _run_deploy(spec, apply_=False, as_json=as_json, stop_after=None)


@cli.command()
@SPEC_ARG
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
@click.option("--stop-after", metavar="PHASE", help="stop after this phase (testing, staging)")
def apply(spec: Path, as_json: bool, stop_after: str | None) -> int:
    """Converge both nodes to the spec, phase by phase; safe to re-run at any time."""
    from hakvm.deploy.phases import PHASES

    if stop_after is not None and stop_after not in [name for name, _ in PHASES]:
        raise click.BadParameter(
            f"unknown phase; use one of {', '.join(n for n, _ in PHASES)}",
            param_hint="--stop-after",
        )
    return _run_deploy(spec, apply_=True, as_json=as_json, stop_after=stop_after)


@cli.command()
@click.argument(
    "spec", type=click.Path(path_type=Path, dir_okay=False), default=Path("examples/lab.yaml")
)
def demo(spec: Path) -> int:
    """Build the lab, deploy SPEC, pull the plug on a node and show the failover."""
    from hakvm.deploy.engine import ApplyError
    from hakvm.drill.demo import run_demo
    from hakvm.remote.connection import RemoteError

    ctx = load_context(spec)
    try:
        return run_demo(ctx.spec, spec)
    except (ApplyError, RemoteError) as exc:
        click.echo(f"hakvm: demo failed: {exc}", err=True)
        return EXIT_FAILED


def _register_subcommands() -> None:
    # Imported here so that a broken optional layer never breaks `hakvm validate`.
    from hakvm.lab.cli import lab
    from hakvm.ops.cli import COMMANDS
    from hakvm.ops.cli_doctor import doctor_cmd
    from hakvm.ops.cli_vm import vm_group

    if "lab" not in cli.commands:
        cli.add_command(lab)
    for command in [*COMMANDS, doctor_cmd, vm_group]:
        if command.name not in cli.commands:
            cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    _register_subcommands()
    try:
        rv = cli.main(args=argv, prog_name="hakvm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("hakvm: aborted", err=True)
        return EXIT_FAILED
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:
        click.echo(f"hakvm: {exc.format_message()}", err=True)
        return EXIT_INVALID
    except click.ClickException as exc:
        click.echo(f"hakvm: {exc.format_message()}", err=True)
        return exc.exit_code if exc.exit_code != 1 else EXIT_FAILED
    except KeyboardInterrupt:
        click.echo("hakvm: interrupted", err=True)
        return 130
    return rv if isinstance(rv, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
