"""Test helper: run hakvm.lab.bmc.serve_bmc with a fake PowerControl.

Run as ``python _fake_bmc.py STATE_FILE PORT USER PASSWORD_FILE`` (the password is
read from a file, never passed on argv). The fake's power state and every call it
receives are mirrored into STATE_FILE (JSON, replaced atomically) so the test
process can assert on them; an initial STATE_FILE sets the starting power state.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
import time

from hakvm.lab.bmc import serve_bmc


class FakePower:
    def __init__(self, state_file: pathlib.Path) -> None:
        self.state_file = state_file
        initial = json.loads(state_file.read_text())
        self.on: bool = initial["on"]
        self.fail: list[str] = initial.get("fail", [])  # methods that raise, to test errors
        self.slow: float = initial.get("slow", 0.0)  # seconds each power change takes
        self.calls: list[str] = []
        self._save()

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"on": self.on, "calls": self.calls}))
        os.replace(tmp, self.state_file)

    def _maybe_fail(self, method: str) -> None:
        time.sleep(self.slow)
        if method in self.fail:
            self._save()
            raise RuntimeError(f"fake {method} failure")

    def is_on(self) -> bool:
        return self.on

    def power_on(self) -> None:
        self.calls.append("power_on")
        self._maybe_fail("power_on")
        self.on = True
        self._save()

    def power_off(self) -> None:
        self.calls.append("power_off")
        self._maybe_fail("power_off")
        self.on = False
        self._save()

    def reset(self) -> None:
        self.calls.append("reset")
        self._maybe_fail("reset")
        self._save()


def main() -> None:
    state_file, port, user, password_file = sys.argv[1:]
    # serve_bmc logs "listening" once bound; the test waits for that line on stderr.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    password = pathlib.Path(password_file).read_text()
    serve_bmc("node1", "127.0.0.1", int(port), user, password, FakePower(pathlib.Path(state_file)))


if __name__ == "__main__":
    main()
