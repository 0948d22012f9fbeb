"""What every command family shares: the SPEC argument, the one way to load a spec, and
the one way to say something on stderr."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hakvm.errors import InputError, UnknownError
from hakvm.remote.connection import RemoteError
from hakvm.remote.lock import DEFAULT_WAIT_S
from hakvm.spec.derive import Derived
from hakvm.spec.models import ClusterSpec
from hakvm.spec.validate import validate_file

if TYPE_CHECKING:  # the renderers (jinja2) load only for the commands that render
    from hakvm.render.base import RenderContext

class Seconds(click.FloatRange):
    """A number of seconds in a range: click's FloatRange lets "nan" through (no comparison
    with it holds) and "inf" when the range has no maximum."""

    name = "number of seconds"

    def __init__(self, low: float, high: float = 86400.0) -> None:
        super().__init__(low, high)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:  # fmt: skip
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


# The loader, not click, says what is wrong with the file: for status and doctor that is
# "unknown" (3), not click's usage error (2, "critical" to a monitoring system).
SPEC_ARG = click.argument("spec", type=click.Path(path_type=Path))
JSON_FLAG = click.option("--json", "as_json", is_flag=True, help="machine-readable output")
# Every command that changes the nodes holds both nodes' locks (hakvm.remote.lock) for the run.
WAIT_OPTION = click.option(
    "--wait",
    "wait",
    type=Seconds(0),
    default=DEFAULT_WAIT_S,
    show_default=True,
    metavar="SECONDS",
    help="if another hakvm run holds a node, wait up to SECONDS for it, then exit 3 naming it",
)


def say(text: str) -> None:
    """One line of progress or warning for the user, on stderr."""
    click.echo(f"hakvm: {text}", err=True)


def _valid(spec_path: Path, *, monitoring: bool) -> tuple[ClusterSpec, Derived]:
    """A usable SPEC and its derived values, or print every problem and raise: an input
    error, or for `status`/`doctor` (`monitoring`) an unknown state, since monitoring reads
    2 as critical."""
    kind = UnknownError if monitoring else InputError
    report = validate_file(spec_path)
    if report.spec is None and len(report.errors) == 1 and not report.errors[0].path:
        raise kind(report.lines()[0])  # the file itself is unusable: one line says why
    if not report.ok or report.spec is None or report.derived is None:
        for line in report.lines():
            click.echo(line, err=True)
        raise kind(f"{spec_path}: {len(report.errors)} error(s); nothing was done")
    return report.spec, report.derived


def load_context(spec_path: Path, *, monitoring: bool = False) -> RenderContext:
    """Validate SPEC and return a render context (or raise, as `load_spec`)."""
    from hakvm.render.base import RenderContext, Secrets

    spec, derived = _valid(spec_path, monitoring=monitoring)
    return RenderContext(spec, derived, Secrets.redacted())


def load_spec(spec_path: Path, *, monitoring: bool = False) -> ClusterSpec:
    """Validate SPEC and return it, or print every problem and raise."""
    return _valid(spec_path, monitoring=monitoring)[0]


def advised(exc: RemoteError, advice: str) -> RemoteError:
    """The same kind of error (so the same exit code), with what to do now."""
    return type(exc)(f"{exc}; {advice}")


def health_style(health: str) -> str:
    styles = {"healthy": "green", "degraded": "yellow", "critical": "bold red"}
    return styles.get(health, "bold magenta")  # unknown; never empty: "[]" is not markup
