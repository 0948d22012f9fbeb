"""Fencing operations as the fencer logged them in `/var/log/pacemaker/pacemaker.log`: when a
fence was asked for, the static delay it waited, and when it ended with which result. The
alert agent's events give only the end; this gives the fencer's share of a recovery on the
node's own clock (the benchmark records it beside each drill). Pure parser of recorded lines
(tests/unit/data/fencelog); `GREP` is the command that fetches them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LOG = "/var/log/pacemaker/pacemaker.log"
# Only the fencer's three lines per operation; the log itself is tens of MB on a busy node.
# -a: a node that lost power leaves NUL bytes where its last writes were (seen on the lab's
# crashed nodes); without it grep stops at them with "binary file matches", dropping every
# fencing logged after the node came back.
GREP = [
    "grep",
    "-ahE",
    r"pacemaker-fenced.*(wants to fence|Delaying '|: Operation '[a-z]+' targeting .* by )",
    LOG,
]

# "Dec 03 09:07:35.188 node02 pacemaker-fenced    [783] (handle_fence_request) ..."
_STAMP = re.compile(r"^\w{3} \d\d (\d\d):(\d\d):(\d\d\.\d+) ")
_ASKED = re.compile(r"wants to fence \((\w+)\) (\S+) using")
_DELAY = re.compile(r"Delaying '(\w+)' action targeting (\S+) using \S+ for (\d+)s")
_DONE = re.compile(r": Operation '(\w+)' targeting (\S+) by (\S+) for \S+: (.+?)(?: \||$)")
_DAY = 24 * 3600.0


@dataclass(frozen=True)
class FenceOperation:
    """One fencing of `target`: seconds on the logging node's clock (of day, made monotonic
    across midnight), the delay the fencer waited inside it, and the fencer's result."""

    action: str
    target: str
    asked_at: float
    delay_s: float
    ended_at: float | None
    executioner: str | None
    result: str | None

    @property
    def took_s(self) -> float | None:
        """From the request to the result, the delay included."""
        return None if self.ended_at is None else self.ended_at - self.asked_at

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.startswith("OK")


def _seconds(line: str, last: float) -> float | None:
    found = _STAMP.match(line)
    if found is None:
        return None
    hours, minutes, seconds = found.groups()
    at = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    while at + _DAY / 2 < last:  # the log crossed midnight (it has no year, nor day change)
        at += _DAY
    return at


@dataclass
class _Asked:
    action: str
    target: str
    asked_at: float
    delay_s: float = 0.0

    def matches(self, action: str, target: str) -> bool:
        return self.action == action and self.target == target

    def ended(
        self, at: float | None, executioner: str | None, result: str | None
    ) -> FenceOperation:
        return FenceOperation(
            self.action, self.target, self.asked_at, self.delay_s, at, executioner, result
        )


def fence_operations(text: str) -> list[FenceOperation]:
    """Every fencing the lines describe, in the order asked. A result is matched to the
    oldest open request for the same target and action; a result with no request in these
    lines (the log rotated between them) is left out."""
    done: list[FenceOperation] = []
    asked: list[_Asked] = []
    last = 0.0
    # The first line written after a power loss follows that loss's NULs: strip them.
    for line in (raw.lstrip("\0") for raw in text.splitlines()):
        at = _seconds(line, last)
        if at is None:
            continue
        last = at
        if request := _ASKED.search(line):
            asked.append(_Asked(request[1], request[2], at))
        elif delay := _DELAY.search(line):
            waiting = next((op for op in asked if op.matches(delay[1], delay[2])), None)
            if waiting is not None:
                waiting.delay_s = float(delay[3])
        elif result := _DONE.search(line):
            action, target, executioner, outcome = result.groups()
            request_of = next((op for op in asked if op.matches(action, target)), None)
            if request_of is not None:
                asked.remove(request_of)
                done.append(request_of.ended(at, executioner, outcome))
    done.extend(op.ended(None, None, None) for op in asked)
    return sorted(done, key=lambda op: op.asked_at)


def last_fencing_of(text: str, target: str) -> FenceOperation | None:
    """The newest fencing of `target` in these lines, ended or not: a reboot or an off. An
    "on" through the fence device (`stonith_admin --unfence`, which powers a node fenced with
    `off` on again) is not one: bench/run.py read the drill's power-on as the fencing of the
    `off` runs of 2026-12-04 until this was seen."""
    mine = [op for op in fence_operations(text) if op.target == target and op.action != "on"]
    return mine[-1] if mine else None
