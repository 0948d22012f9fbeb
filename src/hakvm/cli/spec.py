"""The spec commands: `validate`, `schema`, `render`, `export pcs|crmsh` (no node touched)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hakvm.cli.common import SPEC_ARG, load_context
from hakvm.errors import ExitCode, FailedError
from hakvm.spec.validate import validate_file


@click.command()
@SPEC_ARG
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
def validate(spec: Path, as_json: bool) -> int:
    """Check SPEC: every problem at once, one line each (exit 0 valid, 2 invalid)."""
    report = validate_file(spec)
    if as_json:
        problems = [p.as_dict() for p in report.problems]
        click.echo(
            json.dumps({"file": str(spec), "valid": report.ok, "problems": problems}, indent=2)
        )
    else:
        for line in report.lines():
            click.echo(line)
        if report.ok:
            n_vms = len(report.spec.vms) if report.spec else 0
            click.echo(f"{spec}: valid ({n_vms} VMs, {len(report.warnings)} warning(s))")
    return ExitCode.OK if report.ok else ExitCode.INPUT


@click.command()
def schema() -> int:
    """Print the spec's JSON Schema (for editors and CI linters)."""
    from hakvm.spec.schema import json_schema

    click.echo(json.dumps(json_schema(), indent=2, sort_keys=True))
    return ExitCode.OK


def _output_dir(_ctx: click.Context, _param: click.Parameter, value: str) -> Path:
    """-o as a Path; an empty value (an unset variable, say) would be ".": refused."""
    if not value:
        raise click.BadParameter("empty: name a directory (-o out)")
    return Path(value)


@click.command()
@SPEC_ARG
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    default="out",
    show_default=True,
    callback=_output_dir,
    help="directory for the per-node trees and manifest.json",
)
@click.option("--json", "as_json", is_flag=True, help="print the manifest")
def render(spec: Path, output: Path, as_json: bool) -> int:
    """Render every configuration file for both nodes (secrets redacted)."""
    from hakvm.render.tree import manifest, render_all, write_tree

    rendered = render_all(load_context(spec))
    try:
        written = write_tree(rendered, output)
    except OSError as exc:
        raise FailedError(f"cannot write {output}: {exc.strerror}") from None
    if as_json:
        click.echo(json.dumps(manifest(rendered), indent=2, sort_keys=True))
    else:
        for node in sorted(rendered):
            click.echo(f"{node}: {len(rendered[node])} files in {output / node}")
        click.echo(f"{len(written)} files, manifest: {output / 'manifest.json'}")
    return ExitCode.OK


@click.group()
def export() -> None:
    """Equivalent command scripts for admins who use pcs or crmsh (no passwords in them)."""


@export.command("pcs")
@SPEC_ARG
def export_pcs(spec: Path) -> int:
    """Print the pcs commands that build the same Pacemaker configuration."""
    from hakvm.render.export import pcs_script

    click.echo(pcs_script(load_context(spec)), nl=False)
    return ExitCode.OK


@export.command("crmsh")
@SPEC_ARG
def export_crmsh(spec: Path) -> int:
    """Print the crmsh configuration that builds the same Pacemaker configuration."""
    from hakvm.render.export import crmsh_script

    click.echo(crmsh_script(load_context(spec)), nl=False)
    return ExitCode.OK


COMMANDS = [validate, schema, render, export]
