"""Virtual BMC: the real ipmitool and fence_ipmilan against serve_bmc over lanplus.

The BMC runs in a subprocess (tests/unit/_fake_bmc.py) because serve_bmc blocks
forever and pyghmi keeps process-global session state; the fake PowerControl
mirrors its state and calls into a JSON file that these tests read.
"""

from __future__ import annotations

import json
import pathlib
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hakvm.lab.bmc import serve_bmc
from hakvm.lab.procs import SYSTEM_PYTHON

pytestmark = pytest.mark.realtool

HELPER = pathlib.Path(__file__).with_name("_fake_bmc.py")
SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
USER = "admin"
PASSWORD = "Lab-bmc-S3cret"  # test-only credential


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # `make deps` installs them; a silent skip would hide a broken CI
        pytest.fail(f"{name} not installed (apt-get install ipmitool fence-agents)")
    return path


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Bmc:
    port: int
    state_file: pathlib.Path
    password_file: pathlib.Path
    password_script: pathlib.Path
    log_file: pathlib.Path

    def state(self) -> dict[str, object]:
        return dict(json.loads(self.state_file.read_text()))

    def calls(self) -> list[str]:
        calls = self.state()["calls"]
        assert isinstance(calls, list)
        return [str(c) for c in calls]

    def is_on(self) -> bool:
        return self.state()["on"] is True

    def ipmitool(
        self, *args: str, password_file: pathlib.Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            _tool("ipmitool"), "-I", "lanplus", "-H", "127.0.0.1", "-p", str(self.port),
            "-U", USER, "-f", str(password_file or self.password_file), *args,
        ]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    def fence(
        self, action: str, *extra: str, password_script: pathlib.Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            _tool("fence_ipmilan"), "--lanplus", "-a", "127.0.0.1", "-u", str(self.port),
            "-l", USER, "-S", str(password_script or self.password_script), "-o", action, *extra,
        ]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _secret_files(directory: pathlib.Path, password: str) -> tuple[pathlib.Path, pathlib.Path]:
    """A 0600 password file and a -S script that prints it (password never on argv)."""
    directory.mkdir(parents=True, exist_ok=True)
    password_file = directory / "password"
    password_file.touch(mode=0o600)
    password_file.write_text(password)
    script = directory / "password.sh"
    script.write_text(f"#!/bin/sh\nexec cat {shlex.quote(str(password_file))}\n")
    script.chmod(0o700)
    return password_file, script


def _start(
    tmp_path: pathlib.Path, initial: dict[str, object]
) -> tuple[subprocess.Popen[bytes], Bmc]:
    password_file, script = _secret_files(tmp_path / "secret", PASSWORD)
    state_file = tmp_path / "state.json"
    log_file = tmp_path / "bmc.log"
    for _attempt in range(3):  # the free port can be taken between probe and bind
        state_file.write_text(json.dumps({"calls": [], **initial}))
        port = _free_udp_port()
        with log_file.open("wb") as log:
            # Debian's python3 and python3-pyghmi, as the lab's BMC daemons run (pyghmi
            # 1.5 asks the credentials for `in` and `[]`, 1.6 only for `.get`).
            argv = [SYSTEM_PYTHON, "-s", str(HELPER), str(state_file), str(port), USER]
            argv.append(str(password_file))  # a path: the password itself never goes on argv
            proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=log, env={"PYTHONPATH": str(SRC)}
            )
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            if "listening" in log_file.read_text():
                return proc, Bmc(port, state_file, password_file, script, log_file)
            time.sleep(0.02)
        proc.kill()
        proc.wait()
    pytest.fail(f"virtual BMC did not start:\n{log_file.read_text()}")


@pytest.fixture
def bmc(tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> Iterator[Bmc]:
    # Initial fake state via indirect parametrization: {"on": bool, "fail": [method, ...]}.
    initial: dict[str, object] = getattr(request, "param", {"on": True})
    proc, handle = _start(tmp_path, initial)
    try:
        yield handle
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert PASSWORD not in handle.log_file.read_text(), "password leaked into the BMC log"


def test_ipmitool_chassis_power(bmc: Bmc) -> None:
    r = bmc.ipmitool("chassis", "power", "status")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Chassis Power is on"
    assert bmc.calls() == []

    r = bmc.ipmitool("chassis", "power", "off")
    assert r.returncode == 0, r.stderr
    assert (bmc.is_on(), bmc.calls()) == (False, ["power_off"])
    assert bmc.ipmitool("chassis", "power", "status").stdout.strip() == "Chassis Power is off"

    r = bmc.ipmitool("chassis", "power", "on")
    assert r.returncode == 0, r.stderr
    assert (bmc.is_on(), bmc.calls()) == (True, ["power_off", "power_on"])

    r = bmc.ipmitool("chassis", "power", "cycle")
    assert r.returncode == 0, r.stderr
    assert (bmc.is_on(), bmc.calls()[2:]) == (True, ["power_off", "power_on"])

    r = bmc.ipmitool("chassis", "power", "reset")
    assert r.returncode == 0, r.stderr
    assert (bmc.is_on(), bmc.calls()[4:]) == (True, ["reset"])

    # soft has no guest agent to ask in the lab: it is a hard off.
    r = bmc.ipmitool("chassis", "power", "soft")
    assert r.returncode == 0, r.stderr
    assert (bmc.is_on(), bmc.calls()[5:]) == (False, ["power_off"])


@pytest.mark.parametrize("bmc", [{"on": False}], indirect=True)
def test_ipmitool_state_dependent_actions(bmc: Bmc) -> None:
    # Reset of an off node is refused like on hardware (0xD5), without calling control.
    r = bmc.ipmitool("chassis", "power", "reset")
    assert r.returncode != 0
    assert "not supported in present state" in r.stderr
    assert bmc.calls() == []

    # Cycle of an off node just powers it on.
    assert bmc.ipmitool("chassis", "power", "cycle").returncode == 0
    assert (bmc.is_on(), bmc.calls()) == (True, ["power_on"])

    # On when already on must not start a second machine.
    assert bmc.ipmitool("chassis", "power", "on").returncode == 0
    assert bmc.calls() == ["power_on"]

    r = bmc.ipmitool("mc", "guid")
    assert r.returncode == 0, r.stderr
    assert "System GUID" in r.stdout


def test_fence_ipmilan_status_off_on_reboot(bmc: Bmc) -> None:
    # --power-wait=0 only skips fence_ipmilan's fixed 2 s sleep after each off/on, to
    # keep the test fast; it still polls status until the new state shows.
    fast = "--power-wait=0"
    r = bmc.fence("status")
    assert (r.returncode, r.stdout.strip()) == (0, "Status: ON"), r.stderr

    r = bmc.fence("off", fast)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (bmc.is_on(), bmc.calls()) == (False, ["power_off"])

    r = bmc.fence("status")
    assert (r.returncode, r.stdout.strip()) == (2, "Status: OFF"), r.stderr

    # fence_ipmilan checks status first: an off node is not switched off again.
    r = bmc.fence("off", fast)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Already OFF" in r.stdout
    assert bmc.calls() == ["power_off"]

    r = bmc.fence("on", fast)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (bmc.is_on(), bmc.calls()) == (True, ["power_off", "power_on"])

    # reboot = off, wait until status reports off, on, wait until status reports on.
    r = bmc.fence("reboot", fast)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (bmc.is_on(), bmc.calls()) == (True, ["power_off", "power_on"] * 2)


def test_wrong_password_is_refused(bmc: Bmc, tmp_path: pathlib.Path) -> None:
    wrong_file, wrong_script = _secret_files(tmp_path / "wrong", "not-the-password")

    r = bmc.ipmitool("chassis", "power", "off", password_file=wrong_file)
    assert r.returncode != 0
    assert "Unable to establish IPMI v2 / RMCP+ session" in r.stderr

    r = bmc.fence("off", password_script=wrong_script)
    assert r.returncode not in (0, 2), r.stdout

    assert (bmc.is_on(), bmc.calls()) == (True, [])
    # The right password still works afterwards.
    assert bmc.ipmitool("chassis", "power", "status").returncode == 0


@pytest.mark.parametrize("bmc", [{"on": True, "fail": ["power_off"]}], indirect=True)
def test_failing_control_is_reported_not_faked(bmc: Bmc) -> None:
    r = bmc.ipmitool("chassis", "power", "off")
    assert r.returncode != 0
    assert "Unspecified error" in r.stderr
    assert bmc.is_on()

    # fence_ipmilan keeps polling status for --power-timeout (default 20 s): shorten it.
    r = bmc.fence("off", "--power-wait=0", "--power-timeout=1")
    assert r.returncode != 0, r.stdout
    assert bmc.is_on()
    assert "power off failed" in bmc.log_file.read_text()


@pytest.mark.parametrize("bmc", [{"on": True, "slow": 0.6}], indirect=True)
def test_retransmitted_request_is_not_repeated(bmc: Bmc) -> None:
    # A cycle (2 x 0.6 s) slower than ipmitool's retransmit interval (~1 s): the BMC sees
    # the request again and must not execute it twice (that would kill the fresh node).
    r = bmc.ipmitool("chassis", "power", "cycle")
    assert r.returncode == 0, r.stderr
    assert (bmc.is_on(), bmc.calls()) == (True, ["power_off", "power_on"])
    assert "not repeated" in bmc.log_file.read_text()


@pytest.fixture
def no_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    # If validation were broken, serve_bmc would bind and block forever: fail instead.
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("serve_bmc got past validation")

    monkeypatch.setattr("hakvm.lab.bmc._LabBmc", refuse)


class _NeverCalled:
    def is_on(self) -> bool:
        raise AssertionError("must not get this far")

    def power_on(self) -> None:
        raise AssertionError

    def power_off(self) -> None:
        raise AssertionError

    def reset(self) -> None:
        raise AssertionError


@pytest.mark.parametrize(
    "address",
    ["0.0.0.0", "192.168.122.1", "10.0.0.1", "::1", "::", "::ffff:127.0.0.1", "localhost", ""],
)
@pytest.mark.usefixtures("no_bind")
def test_refuses_non_loopback_address(address: str) -> None:
    with pytest.raises(ValueError, match="address"):
        serve_bmc("n", address, 6230, USER, PASSWORD, _NeverCalled())


@pytest.mark.parametrize(
    ("port", "user", "password"),
    [(0, USER, PASSWORD), (70000, USER, PASSWORD), (6230, "", PASSWORD),
     (6230, USER, ""), (6230, USER, "x" * 21)],
)  # fmt: skip
@pytest.mark.usefixtures("no_bind")
def test_refuses_bad_parameters(port: int, user: str, password: str) -> None:
    with pytest.raises(ValueError) as exc:
        serve_bmc("n", "127.0.0.2", port, user, password, _NeverCalled())
    assert not password or password not in str(exc.value)
