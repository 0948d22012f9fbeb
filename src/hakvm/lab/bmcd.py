"""Virtual BMC daemon for one lab node: ``python3 -m hakvm.lab.bmcd RUN_DIR NODE PORT USER``.

Started by ``hakvm lab up`` / ``lab bmc-start`` as the unprivileged lab user, detached
from the lab tool, on Debian's python3 from the root-owned copy of this package in the
runtime dir (it never imports from the checkout). The password arrives on stdin (one
line), never on argv or in the environment, so it shows up in no process listing.

Power semantics: on = start the node's QEMU from its saved argv (re-applying cut
links); off = SIGKILL (pulled plug); reset = QMP ``system_reset``.
"""

from __future__ import annotations

import logging
import pathlib
import sys

from hakvm.lab import nodes
from hakvm.lab.bmc import serve_bmc
from hakvm.lab.state import LOOPBACK, Runtime, check_node


class QemuPower:
    """PowerControl of one node's QEMU process."""

    def __init__(self, run: Runtime, node: str) -> None:
        self.run = run
        self.node = node

    def is_on(self) -> bool:
        return nodes.qemu_pid(self.run, self.node) is not None

    def power_on(self) -> None:
        nodes.start_node(self.run, self.node)

    def power_off(self) -> None:
        nodes.kill_node(self.run, self.node)

    def reset(self) -> None:
        nodes.reset_node(self.run, self.node)


def main(argv: list[str]) -> int:
    if len(argv) != 4 or not argv[2].isdigit():
        print(
            "usage: python3 -m hakvm.lab.bmcd RUN_DIR NODE PORT USER  (password on stdin)",
            file=sys.stderr,
        )
        return 2
    run = Runtime(pathlib.Path(argv[0]))
    node = check_node(argv[1])
    port, user = int(argv[2]), argv[3]
    password = sys.stdin.readline().strip()
    sys.stdin.close()
    if not password:
        print("bmcd: no password on stdin", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s bmcd[{node}] %(levelname)s %(message)s"
    )
    serve_bmc(node, LOOPBACK, port, user, password, QemuPower(run, node))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
