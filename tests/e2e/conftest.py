"""Session-wide QEMU lab for end-to-end tests.

The ``lab`` fixture brings up both nodes once per test session (``hakvm lab up``) and
tears them down at the end (``hakvm lab down``); later deploy tests reuse it.

Environment:
  HAKVM_E2E_LAB_DIR  state dir (default <repo>/.hakvm/e2e-lab; must be traversable by
                     the unprivileged QEMU user, so not under /root or /tmp/pytest-of-*)
  HAKVM_E2E_KEEP=1   leave the lab running after the session (for debugging)
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from hakvm.lab import specfile, ssh
from hakvm.lab.state import NODES, Lab

REPO = pathlib.Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class LabHandle:
    """What tests need to reach the lab nodes."""

    state_dir: pathlib.Path
    ssh_ports: dict[str, int]
    bmc_ports: dict[str, int]
    bmc_user: str
    key: pathlib.Path
    known_hosts: pathlib.Path
    up_seconds: float = 0.0

    def run(
        self, node: str, argv: Sequence[str], timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run argv on node as root over SSH (host key pinned); never raises on exit code."""
        port = self.ssh_ports[node]
        mux = self.state_dir / f".ssh-mux-{port}"
        ssh.ensure_master(port, self.key, self.known_hosts, mux)
        return subprocess.run(
            ssh.ssh_argv(
                port, self.key, self.known_hosts, ssh.remote_command(argv), control_path=mux
            ),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )

    def check(self, node: str, argv: Sequence[str], timeout: float = 120) -> str:
        """Run argv on node and return stdout; fails the test on a non-zero exit."""
        result = self.run(node, argv, timeout)
        assert result.returncode == 0, (
            f"{node}: {' '.join(argv)} -> {result.returncode}\n{result.stdout}{result.stderr}"
        )
        return result.stdout

    def hakvm(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run ``hakvm lab --lab-dir STATE ARGS...``."""
        return subprocess.run(
            [sys.executable, "-m", "hakvm.cli", "lab", "--lab-dir", str(self.state_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def status(self) -> dict[str, Any]:
        result = self.hakvm("status", "--json")
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def wait_ssh(self, node: str, timeout: float = 300) -> float:
        return ssh.wait_for_ssh(self.ssh_ports[node], self.key, self.known_hosts, timeout)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lab_last: runs after every other test of the session (takes the lab down)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Lab checks first (they leave bare nodes), other e2e tests next, lab_last at the end."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("lab_last"):
            return 2
        return 0 if item.path.name == "test_lab.py" else 1

    items.sort(key=rank)  # stable: file order is kept within each rank


def lab_spec(lab: LabHandle, directory: pathlib.Path, **overrides: Any) -> pathlib.Path:
    """examples/lab.yaml pointed at this lab's key, known_hosts, ports and BMC passwords."""
    return specfile.lab_spec(
        REPO / "examples" / "lab.yaml", lab.state_dir, directory / "lab.yaml", overrides
    )


def _lab_dir() -> pathlib.Path:
    raw = os.environ.get("HAKVM_E2E_LAB_DIR")
    return pathlib.Path(raw) if raw else REPO / ".hakvm" / "e2e-lab"


@pytest.fixture(scope="session")
def lab() -> Iterator[LabHandle]:
    if os.geteuid() != 0:
        pytest.skip("the QEMU lab needs root (image build, unprivileged QEMU user)")
    for tool in ("qemu-system-x86_64", "debootstrap", "debugfs", "ssh", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (make deps)")
    state_dir = _lab_dir()
    handle = LabHandle(
        state_dir=state_dir,
        ssh_ports={},
        bmc_ports={},
        bmc_user="",
        key=state_dir / "id_ed25519",
        known_hosts=state_dir / "known_hosts",
    )
    handle.hakvm("down")  # strays of an earlier, crashed session
    started = time.monotonic()
    result = handle.hakvm("up")
    assert result.returncode == 0, f"lab up failed:\n{result.stdout}\n{result.stderr}"
    handle.up_seconds = time.monotonic() - started
    lab_state = Lab(state_dir)
    config = lab_state.load()
    handle.state_dir = lab_state.dir
    handle.ssh_ports = {n: config.ssh_port_of(n) for n in NODES}
    handle.bmc_ports = {n: config.bmc_port_of(n) for n in NODES}
    handle.bmc_user = config.bmc_user
    try:
        yield handle
    finally:
        if os.environ.get("HAKVM_E2E_KEEP") != "1":
            handle.hakvm("down")


STATE_DIR = REPO / ".hakvm" / "e2e-state"


@pytest.fixture(scope="session")
def spec_file(lab: LabHandle, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """examples/lab.yaml pointed at the session's lab (shared by deploy, operate, drills)."""
    return lab_spec(lab, tmp_path_factory.mktemp("spec"))


def hakvm(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run a hakvm command with the e2e state dir (cluster secrets) as a user would."""
    env = dict(os.environ, HAKVM_STATE_DIR=str(STATE_DIR))
    return subprocess.run(
        [sys.executable, "-m", "hakvm.cli", *args],
        capture_output=True, text=True, timeout=timeout, check=False, env=env,
    )  # fmt: skip


def wait_for(what: str, predicate: Any, timeout: float, interval: float = 3) -> float:
    """Poll predicate until truthy; return seconds waited, or fail with the last answer."""
    started = time.monotonic()
    last: Any = None
    while time.monotonic() - started < timeout:
        try:
            last = predicate()
            if last:
                return time.monotonic() - started
        except (AssertionError, subprocess.TimeoutExpired, ValueError) as exc:
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
