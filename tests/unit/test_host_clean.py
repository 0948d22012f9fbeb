"""`make deps` leaves the operator's machine without cluster daemons.

The test tools come with daemons (pcs enables pcsd on port 2224 on every interface; corosync
and pacemaker enable themselves): tools/install-debs keeps them from starting at install
time and disables and masks them. Checked on the machine itself, after `make deps`.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DAEMONS = ("pcsd", "pcsd-ruby", "corosync", "pacemaker", "corosync-qnetd", "prometheus")
# Processes and ports of the cluster and monitoring daemons the tests' packages bring.
DAEMON_COMMS = ("pcsd", "corosync", "pacemakerd", "pacemaker-based", "corosync-qnetd",
                "prometheus", "ruby")  # fmt: skip
DAEMON_PORTS = {2224, 5403, 5404, 5405, 5406, 9090, 9100}


def _makefile_packages() -> list[str]:
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    found: list[str] = []
    for name in ("DEMO_PACKAGES", "TEST_PACKAGES"):
        match = re.search(rf"^{name} := (.*)$", text, re.M)
        assert match, f"Makefile has no {name}"
        found += match.group(1).split()
    return found


def _installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Status}", package],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return result.stdout.strip() == "installed"


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="no systemctl")
@pytest.mark.parametrize("unit", DAEMONS)
def test_no_cluster_daemon_is_enabled(unit: str) -> None:
    state = subprocess.run(
        ["systemctl", "is-enabled", f"{unit}.service"], capture_output=True, text=True, check=False
    ).stdout.strip()
    assert state not in ("enabled", "enabled-runtime", "alias", "indirect"), (
        f"{unit}.service is {state}: make deps must leave no cluster daemon enabled"
    )


def _listeners() -> list[tuple[str, str, str]]:
    """(local address, port, process) of every listening TCP/UDP socket, from `ss`."""
    out = subprocess.run(
        ["ss", "-Hlntup"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    found = []
    for line in out:
        cols = line.split()
        local = cols[4]
        address, _, port = local.rpartition(":")
        users = cols[6] if len(cols) > 6 else ""
        found.append((address.strip("[]"), port, users))
    return found


@pytest.mark.skipif(shutil.which("ss") is None, reason="no ss (iproute2)")
def test_nothing_of_the_cluster_stack_listens_here() -> None:
    # On loopback only the lab's own (its qnetd, while a lab is up) and tests' may listen.
    for address, port, users in _listeners():
        if address.startswith("127.") or address in ("::1", "localhost"):
            continue
        daemon = any(f'"{comm}"' in users for comm in DAEMON_COMMS)
        assert not daemon, f"{users} listens on {address}:{port}"
        if port.isdigit():
            assert int(port) not in DAEMON_PORTS, f"{users or '?'} listens on {address}:{port}"


def test_the_daemons_packages_are_those_make_installs() -> None:
    """The checks above only mean something where make deps did install the packages."""
    packages = _makefile_packages()
    assert {"pcs", "corosync", "pacemaker"} <= set(packages)
    if not all(_installed(p) for p in ("pcs", "corosync", "pacemaker")):
        pytest.skip("the test packages are not installed (make deps)")
    record = pathlib.Path("/var/lib/hakvm/masked-units")
    masked = record.read_text().split() if record.is_file() else []
    for unit in masked:  # what install-debs masked stays masked
        state = subprocess.run(
            ["systemctl", "is-enabled", unit], capture_output=True, text=True, check=False
        ).stdout.strip()
        assert state == "masked", (unit, state)
