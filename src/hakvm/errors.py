"""The shared error kinds and every exit code hakvm has (docs/exit-codes.md is the table).

A library module raises one of these kinds (or a subclass naming its own case) with one line
for the user; `hakvm.cli.main` turns the kind into the exit code. Nothing below `cli/` prints
or exits. Every message passes through `hakvm.redact.redact` when the error is made.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar

from hakvm.redact import redact


class ExitCode(IntEnum):
    """What every command but `status` and `doctor` exits with."""

    OK = 0  # success: valid spec, files written, nothing to change
    FAILED = 1  # an operation failed (a step on a node, a tool, a drill invariant)
    INPUT = 2  # bad input: invalid spec, bad command line, missing file
    STATE = 3  # the cluster or lab is not in a state where the command can run
    INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class MonitorCode(IntEnum):
    """What `status` and `doctor` exit with: the monitoring-plugin convention."""

    HEALTHY = 0
    DEGRADED = 1  # still serving, redundancy lost
    CRITICAL = 2  # a VM down, split-brain risk, no fencing, no quorum
    UNKNOWN = 3  # cannot tell: an unusable spec or command line, or no node answered


class HakvmError(Exception):
    """One line for the user; the class decides the exit code. A `hint` (what to do now) is
    said on a line of its own after it."""

    exit_code: ClassVar[int] = ExitCode.FAILED
    hint: str = ""

    def __init__(self, *args: object) -> None:
        # Every message is redacted as it is made: a tool's output quoted in an error (a
        # failed drbdsetup command line with its --shared-secret) never reaches a terminal,
        # a --json report or a log.
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class FailedError(HakvmError):
    """An operation failed: a step on a node, a tool, a drill invariant."""

    exit_code = ExitCode.FAILED


class InputError(HakvmError):
    """Bad input: an invalid spec, a name that is not in it, a missing file."""

    exit_code = ExitCode.INPUT


class StateError(HakvmError):
    """The cluster or lab is not in a state where the command can run."""

    exit_code = ExitCode.STATE


class UnknownError(HakvmError):
    """`status`/`doctor` cannot tell the cluster's state (monitoring reads 2 as critical)."""

    exit_code = MonitorCode.UNKNOWN
