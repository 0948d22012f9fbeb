"""The command line: one group, the command families registered on it, and the one map
from what went wrong to the exit code (docs/exit-codes.md). Commands parse, call the
library, print; they return an exit code or raise, and only here is an error turned into
a code and a line on stderr.
"""

from __future__ import annotations

import importlib

import click

from hakvm import __version__
from hakvm.errors import ExitCode, HakvmError, MonitorCode

# Each command's module (its family's `COMMANDS`; the lab's group): a command imports only
# its own family, so `hakvm status` does not load the deploy planner, the drills or the lab.
FAMILIES = {
    "validate": "hakvm.cli.spec", "schema": "hakvm.cli.spec", "render": "hakvm.cli.spec",
    "export": "hakvm.cli.spec", "plan": "hakvm.cli.deploy", "apply": "hakvm.cli.deploy",
    "demo": "hakvm.cli.demo", "status": "hakvm.cli.monitor", "doctor": "hakvm.cli.monitor",
    "migrate": "hakvm.cli.moves", "drain": "hakvm.cli.moves", "undrain": "hakvm.cli.moves",
    "drill": "hakvm.cli.drill", "vm": "hakvm.cli.vm", "serve": "hakvm.cli.serve",
    "init": "hakvm.cli.init", "replace-node": "hakvm.cli.replace",
    "lab": "hakvm.lab.cli",
}  # fmt: skip
MONITORING = ("status", "doctor")  # exit with monitoring codes (`lab status` does not)


class Commands(click.Group):
    """The command families, each imported when one of its commands runs (or `--help`
    lists them all)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*FAMILIES, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in FAMILIES:
            return self.commands.get(cmd_name)
        module = importlib.import_module(FAMILIES[cmd_name])
        commands: list[click.Command] = getattr(module, "COMMANDS", None) or [module.lab]
        return next(c for c in commands if c.name == cmd_name)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hakvm")
def cli() -> None:
    """hakvm: two-node active/active KVM high-availability clusters from one YAML spec."""


def exit_code(error: BaseException) -> int:
    """The one map from an error to hakvm's exit code."""
    if isinstance(error, click.exceptions.Exit):
        return int(error.exit_code)
    if isinstance(error, click.UsageError):
        # A monitoring system reads 2 as "critical": status and doctor say "unknown".
        ctx = error.ctx
        top = ctx is not None and ctx.parent is not None and ctx.parent.parent is None
        monitoring = top and ctx is not None and ctx.command.name in MONITORING
        return MonitorCode.UNKNOWN if monitoring else ExitCode.INPUT
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
