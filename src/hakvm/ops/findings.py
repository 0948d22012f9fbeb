"""What `hakvm doctor` reports, one finding per problem with its fix, and the exception a
check raises when its inputs are missing (reported as not run, never as passed). Shared by
ops/doctor.py and the checks kept beside it (ops/quorum_checks.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

# advice: hardening that leaves the health as it is (a monitoring system is not paged for it)
Severity = Literal["critical", "warning", "advice"]


class Finding(BaseModel):
    check: str = Field(description="short id, e.g. fencing-disabled")
    severity: Severity
    node: str | None = Field(description="the node it is on; null: cluster-wide or local")
    message: str = Field(description="what is wrong (one line)")
    fix: str = Field(description="the command or spec change that fixes it (one line)")


class Skipped(Exception):
    """A check's inputs are missing: it is reported as not run, never as passed."""


def critical(check: str, node: str | None, message: str, fix: str) -> Finding:
    return Finding(check=check, severity="critical", node=node, message=message, fix=fix)


def warning(check: str, node: str | None, message: str, fix: str) -> Finding:
    return Finding(check=check, severity="warning", node=node, message=message, fix=fix)
