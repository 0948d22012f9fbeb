"""Suite-wide rules."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Generator

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """In CI a skipped test is a failed test: `make test` installs every tool a test needs,
    so a skip there means a check silently did not run."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped in CI (a check that did not run is a failure): {reason}"


_SESSION_START = time.monotonic()
# A hung end-to-end test must fail on its own instead of eating CI's 90 minutes; a drill waits
# out its bound. The test function only: its fixtures bound each of their own steps (lab up
# 1800 s, a restore 900 s, a deploy 1800 s plus 900 s for health), and a test selected without
# the deploy tests deploys in its setup (26 min on a loaded host, 2026-12-02), which a bound on
# the whole would cut in its teardown's restore.
E2E_TIMEOUT_S = 1800


# CI stops a run at 90 minutes, apt, pip and lint included, and then prints no summary at all:
# past this many seconds of pytest, the remaining end-to-end tests fail at once, named.
BUDGET_S = float(os.environ.get("HAKVM_TEST_BUDGET_S", "4500"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S, func_only=True))


def pytest_runtest_setup(item: pytest.Item) -> None:
    elapsed = time.monotonic() - _SESSION_START
    if item.get_closest_marker("e2e") and elapsed > BUDGET_S:
        pytest.fail(
            f"not run: the suite's time budget is spent ({elapsed / 60:.0f} of "
            f"{BUDGET_S / 60:.0f} min, HAKVM_TEST_BUDGET_S)"
        )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """End-to-end tests take minutes each: say when each one ends and, for a failure, why,
    at once (CI keeps only part of a run's output and kills a run that overstays)."""
    if not report.failed and (report.when != "call" or "/e2e/" not in report.nodeid):
        return
    elapsed = time.monotonic() - _SESSION_START
    line = (
        f"\n[{elapsed / 60:5.1f} min] {report.nodeid} {report.when}: {report.outcome}"
        f" ({report.duration:.0f}s)"
    )
    if report.failed:
        lines = str(report.longreprtext).strip().splitlines()
        line += "\n    " + "\n    ".join(lines[-12:])
    sys.stderr.write(line + "\n")
