"""Interactive serial console over the node's QEMU chardev unix socket."""

from __future__ import annotations

import contextlib
import os
import pathlib
import selectors
import socket
import sys
import termios
import tty
from collections.abc import Iterator

ESCAPE = b"\x1d"  # Ctrl-]
QUIET_SECONDS = 3.0


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def attach(path: pathlib.Path) -> None:
    """Relay stdin/stdout to the console socket until Ctrl-] or EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        out = sys.stdout.buffer
        in_fd = sys.stdin.fileno()
        if os.isatty(in_fd):
            sys.stderr.write("connected to serial console; Ctrl-] to leave\r\n")
            sock.sendall(b"\r")  # wake the getty prompt
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        sel.register(in_fd, selectors.EVENT_READ)
        interactive = os.isatty(in_fd)
        # Scripted use (stdin not a terminal): after stdin ends, show the console's
        # answer until it has been quiet for a moment.
        quiet_for: float | None = None
        with _raw_terminal(in_fd):
            while True:
                events = sel.select(timeout=quiet_for)
                if not events:
                    return
                for key, _ in events:
                    if key.fileobj is sock:
                        data = sock.recv(4096)
                        if not data:
                            return
                        out.write(data)
                        out.flush()
                        continue
                    data = os.read(in_fd, 1024)
                    if (interactive and ESCAPE in data) or (not data and interactive):
                        return
                    if not data:
                        sel.unregister(in_fd)
                        quiet_for = QUIET_SECONDS
                        continue
                    sock.sendall(data)
