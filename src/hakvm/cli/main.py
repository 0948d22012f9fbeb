"""The command line: one group, the command families registered on it, and the one map
from what went wrong to the exit code (docs/exit-codes.md). Commands parse, call the
library, print; they return an exit code or raise, and only here is an error turned into
a code and a line on stderr.
"""

from __future__ import annotations

import click

from hakvm import __version__
from hakvm.cli import demo, deploy, drill, init, monitor, moves, replace, spec, vm
from hakvm.errors import ExitCode, HakvmError, MonitorCode
from hakvm.lab.cli import lab


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hakvm")
def cli() -> None:
    """hakvm: two-node active/active KVM high-availability clusters from one YAML spec."""


for family in (spec, init, deploy, replace, demo, monitor, moves, drill, vm):
    for command in family.COMMANDS:
        cli.add_command(command)
cli.add_command(lab)


def exit_code(error: BaseException) -> int:
    """The one map from an error to hakvm's exit code."""
    if isinstance(error, click.exceptions.Exit):
        return int(error.exit_code)
    if isinstance(error, click.UsageError):
        # A monitoring system reads 2 as "critical": status and doctor say "unknown".
        command = error.ctx.command if error.ctx else None
        return MonitorCode.UNKNOWN if command in monitor.MONITORING else ExitCode.INPUT
    if isinstance(error, HakvmError):
        return int(error.exit_code)
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.FAILED  # click's own failures (Abort, a file it could not open)


def _say(error: BaseException) -> None:
    if isinstance(error, click.exceptions.Abort):
        lines = ["aborted"]
    elif isinstance(error, KeyboardInterrupt):
        lines = ["interrupted"]
    elif isinstance(error, click.ClickException):
        lines = [error.format_message()]
    elif isinstance(error, HakvmError) and error.hint:
        lines = [str(error), error.hint]
    else:
        lines = [str(error)]
    for line in lines:
        click.echo(f"hakvm: {line}", err=True)


def main(argv: list[str] | None = None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="hakvm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exit_code(exc)
    except (click.ClickException, click.exceptions.Abort, HakvmError, KeyboardInterrupt) as exc:
        _say(exc)
        return exit_code(exc)
    return int(rv) if isinstance(rv, int) else ExitCode.OK
