"""Virtual BMC daemon for one lab node: ``python -m hakvm.lab.bmcd LAB_DIR NODE``.

Started by ``hakvm lab up`` / ``lab bmc-start`` as the unprivileged lab user, detached
from the lab tool. The password arrives on stdin (one line), never on argv or in the
environment, so it shows up in no process listing. The argv carries the lab dir: it is
the marker ``lab down`` uses to find the daemon.

Power semantics: on = start the node's QEMU from its saved argv (re-applying cut
links); off = SIGKILL (pulled plug); reset = QMP ``system_reset``.
"""

from __future__ import annotations

import logging
import pathlib
import sys

from hakvm.lab import nodes
from hakvm.lab.bmc import serve_bmc
from hakvm.lab.state import LOOPBACK, Lab, check_node


class QemuPower:
    """PowerControl of one node's QEMU process."""

    def __init__(self, lab: Lab, node: str) -> None:
        self.lab = lab
        self.node = node

    def is_on(self) -> bool:
        return nodes.qemu_pid(self.lab, self.node) is not None

    def power_on(self) -> None:
        nodes.start_node(self.lab, self.node)

    def power_off(self) -> None:
        nodes.kill_node(self.lab, self.node)

    def reset(self) -> None:
        nodes.reset_node(self.lab, self.node)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m hakvm.lab.bmcd LAB_DIR NODE  (password on stdin)", file=sys.stderr)
        return 2
    lab = Lab(pathlib.Path(argv[0]))
    node = check_node(argv[1])
    config = lab.load()
    password = sys.stdin.readline().strip()
    sys.stdin.close()
    if not password:
        print("bmcd: no password on stdin", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s bmcd[{node}] %(levelname)s %(message)s"
    )
    serve_bmc(
        node, LOOPBACK, config.bmc_port_of(node), config.bmc_user, password, QemuPower(lab, node)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
