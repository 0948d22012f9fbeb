"""Minimal synchronous QMP client for the lab's QEMU nodes.

Why hand-written instead of the official ``qemu.qmp`` package: ``qemu.qmp`` is
asyncio-only; its synchronous wrapper lives in ``qemu.qmp.legacy`` (explicitly
legacy) and it would be one more dependency. The lab only needs "connect, one
command, disconnect" from plain synchronous code (BMC power callbacks run in
pyghmi's own loop), which is ~60 lines of newline-delimited JSON over a unix
socket. A connection per command keeps it stateless and safe to call from any
thread.
"""

from __future__ import annotations

import json
import pathlib
import socket
import time
from typing import Any

__all__ = ["QmpClient", "QmpError"]


class QmpError(Exception):
    """QMP returned an error, timed out, or the monitor socket is unusable."""


class QmpClient:
    def __init__(self, socket_path: pathlib.Path, timeout: float = 5.0) -> None:
        self.socket_path = pathlib.Path(socket_path)
        self.timeout = timeout

    def command(self, name: str, /, **arguments: object) -> object:
        """Run one QMP command and return its ``return`` value.

        ``name`` is positional-only so that QMP arguments called ``name`` (e.g.
        ``command("set_link", name="net0", up=False)``) can be passed as keywords.
        """
        deadline = time.monotonic() + self.timeout
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.socket_path))
                reader = _LineReader(sock, deadline)
                greeting = reader.message()
                if "QMP" not in greeting:
                    raise QmpError(f"{self.socket_path}: not a QMP greeting: {greeting!r}")
                self._execute(sock, reader, "qmp_capabilities", {})
                return self._execute(sock, reader, name, arguments)
        except TimeoutError as exc:
            raise QmpError(f"{self.socket_path}: {name}: timed out after {self.timeout}s") from exc
        except OSError as exc:  # missing socket, connection refused, reset, ...
            raise QmpError(f"{self.socket_path}: {name}: {exc}") from exc

    @staticmethod
    def _execute(
        sock: socket.socket, reader: _LineReader, name: str, arguments: dict[str, object]
    ) -> object:
        # The "id" is echoed back by QEMU, so a reply is told apart from async
        # events (e.g. STOP/RESUME), which QEMU may send before the reply.
        request: dict[str, object] = {"execute": name, "id": name}
        if arguments:
            request["arguments"] = arguments
        sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            msg = reader.message()
            if "event" in msg:
                continue
            if "error" in msg:
                err = msg["error"]
                desc = err.get("desc", err) if isinstance(err, dict) else err
                raise QmpError(f"{name}: {desc}")
            if "return" in msg:
                return msg["return"]
            raise QmpError(f"{name}: unexpected QMP message: {msg!r}")


class _LineReader:
    """Reads newline-delimited JSON objects, bounded by one overall deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buf = b""

    def message(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._sock.settimeout(remaining)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise QmpError("QMP connection closed by QEMU")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            msg = json.loads(line)
        except ValueError as exc:
            raise QmpError(f"invalid QMP JSON: {line[:200]!r}") from exc
        if not isinstance(msg, dict):
            raise QmpError(f"invalid QMP message: {msg!r}")
        return msg
