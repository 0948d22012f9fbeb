"""The lab's package repository daemon: a read-only HTTP server on host loopback.

Started as ``python -m hakvm.lab.repod LAB_DIR PORT`` by the unprivileged lab user; it
serves LAB_DIR/repo (the image build's .deb files plus a Packages index), which the nodes
reach at 10.0.2.2:PORT through their user-mode management NIC.
"""

from __future__ import annotations

import functools
import http.server
import sys
from pathlib import Path

from hakvm.lab.state import LOOPBACK


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"repod: {self.address_string()} {format % args}\n")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m hakvm.lab.repod LAB_DIR PORT\n")
        return 2
    lab_dir, port = Path(argv[0]), int(argv[1])
    handler = functools.partial(_QuietHandler, directory=str(lab_dir / "repo"))
    # Loopback only: the repository is for this machine's lab guests, nobody else.
    with http.server.ThreadingHTTPServer((LOOPBACK, port), handler) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
