"""Check-then-act units. Operations read facts and yield steps only for differences (as in
pyinfra): "no step" means "no change". `plan` prints the steps; `apply` runs the same steps.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from hakvm.remote.connection import Remote
from hakvm.remote.qnetd import QnetdCa


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    stdin: bytes | None = None
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = 600.0

    def describe(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class Write:
    path: str
    content: bytes
    mode: int
    owner: str = "root"
    group: str = "root"

    def describe(self) -> str:
        return f"write {self.path} (mode {self.mode:04o}, {len(self.content)} bytes)"


class Nodes(Protocol):
    """What a Call gets when apply runs it: the apply's session (or the unit tests' fake
    nodes). Cluster-level actions look at both nodes."""

    def connected(self, name: str) -> Remote: ...

    async def probe(self, name: str) -> None: ...

    async def qnetd(self) -> tuple[Remote, QnetdCa]: ...


# A Call needs live feedback (waiting for DRBD to connect, a rollback-guarded network
# change, a CIB patch against the CIB as it is at that moment): deploy/actions.py.
CallFunc = Callable[[Nodes], Awaitable[None]]


@dataclass(frozen=True)
class Call:
    description: str
    func: CallFunc = field(compare=False)

    def describe(self) -> str:
        return self.description


Action = Run | Write | Call


@dataclass(frozen=True)
class Step:
    node: str
    phase: str
    title: str
    actions: tuple[Action, ...]
    diff: str = ""
    # The transition Pacemaker's scheduler computes for this change (CIB steps, plan only).
    predicted: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "node": self.node,
            "phase": self.phase,
            "title": self.title,
            "actions": [a.describe() for a in self.actions],
            "diff": self.diff,
            "pacemaker_predicts": list(self.predicted),
        }


def run(*argv: str, stdin: bytes | None = None, timeout: float = 600.0, **env: str) -> Run:
    return Run(tuple(argv), stdin, tuple(sorted(env.items())), timeout)


# `systemctl enable` and `disable` reload the whole manager (a daemon-reload) unless told
# not to: 10.8 s on an idle lab node against 0.39 s with --no-reload, 28-35 s while its VMs
# ran (2026-12-04). The symlinks are all they need to change: the units hakvm writes get a
# daemon-reload step of their own first, the packages' units are loaded already, and
# `systemctl show` reports the new UnitFileState at once (checked on the lab).
ENABLE = ("systemctl", "enable", "--no-reload")
DISABLE = ("systemctl", "disable", "--no-reload")
