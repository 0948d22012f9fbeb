"""What `hakvm lab up` checks before it builds or starts anything.

Each problem is one line naming it and its fix (a LabStateError: exit 3), raised before
the image build, so a machine that cannot run the lab learns so in a second, not after
minutes of debootstrap.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess

from hakvm.lab import procs
from hakvm.lab.state import LINKS, LOOPBACK, NODES, LabConfig, LabStateError

# Binaries the lab runs, and the Debian package that has each (make deps-demo installs them).
TOOLS: tuple[tuple[str, str], ...] = (
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
    ("debootstrap", "debootstrap"),
    ("debugfs", "e2fsprogs"),
    ("mkfs.ext4", "e2fsprogs"),
    ("setpriv", "util-linux"),
    ("unshare", "util-linux"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("dpkg-scanpackages", "dpkg-dev"),
    ("ipmitool", "ipmitool"),
    # The quorum device's server (on this host, never a node) and the NSS tools its CA is
    # made with; tools/install-debs masks the system service the package enables.
    ("corosync-qnetd", "corosync-qnetd"),
    ("certutil", "libnss3-tools"),
    ("pk12util", "libnss3-tools"),
)
# Measured: a node image is 1.2 GiB used, each node's copy of it grows to about 2 GiB and
# its DRBD disk to 2-3 GiB over a make test; a build needs 1.5 GiB of .deb files plus the tree.
RUN_FREE_BYTES = 10 << 30
BUILD_FREE_BYTES = 4 << 30
# Host headroom beyond the nodes' own memory (QEMU's own, the BMC daemons, the tools).
MEMORY_MARGIN_MIB = 768


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabStateError(
            "the lab needs root (it builds the node image with debootstrap and runs QEMU as "
            "the unprivileged user hakvm-lab): run it as root, e.g. `sudo make demo`"
        )


def check_tools() -> None:
    for tool, package in TOOLS:
        if shutil.which(tool) is None:
            raise LabStateError(f"{tool} is missing: apt-get install {package} (or make deps-demo)")
    probe = subprocess.run(
        [procs.SYSTEM_PYTHON, "-E", "-s", "-c", "import pyghmi.ipmi.bmc"],
        capture_output=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        raise LabStateError(
            f"the lab's BMC daemons need pyghmi for {procs.SYSTEM_PYTHON}: "
            "apt-get install python3-pyghmi (or make deps-demo)"
        )


def wanted_ports(config: LabConfig) -> list[tuple[int, int, str]]:
    """(socket type, port, what) of every port the lab binds on 127.0.0.1."""
    wanted: list[tuple[int, int, str]] = []
    for node in NODES:
        wanted.append((socket.SOCK_STREAM, config.ssh_port_of(node), f"SSH port of {node}"))
        wanted.append((socket.SOCK_DGRAM, config.bmc_port_of(node), f"BMC port of {node}"))
        for link in LINKS:
            local, _ = config.link_ports(link, node)
            wanted.append((socket.SOCK_DGRAM, local, f"{link} port of {node}"))
    wanted.append((socket.SOCK_STREAM, config.repo_port, "package repository port"))
    wanted.append((socket.SOCK_STREAM, config.qnetd_port, "qnetd (quorum device) port"))
    return wanted


def check_ports_free(config: LabConfig) -> None:
    """Every port the lab needs is free on 127.0.0.1 (a listener of anybody's counts)."""
    for kind, port, what in wanted_ports(config):
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                # As QEMU's hostfwd listener does: connections of a lab that was just taken
                # down linger in TIME_WAIT on the port, which only a listener would conflict with.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
                holder = procs.socket_owner(port, proto)
                by = f" by pid {holder} ({_comm(holder)})" if holder else ""
                raise LabStateError(
                    f"{what} {LOOPBACK}:{port}/{proto} is already in use{by}: stop that "
                    "process, or give the lab other ports (hakvm lab up --help)"
                ) from None


def _comm(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def available_memory_mib() -> int:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def check_memory(config: LabConfig) -> None:
    need = len(NODES) * config.memory_mib + MEMORY_MARGIN_MIB
    have = available_memory_mib()
    if have < need:
        raise LabStateError(
            f"not enough free memory for the lab: {have} MiB available, {need} MiB needed "
            f"({len(NODES)} nodes x {config.memory_mib} MiB + {MEMORY_MARGIN_MIB}); free some, "
            "or use hakvm lab up --memory with less per node"
        )


def free_bytes(path: pathlib.Path) -> int:
    """Free space for root on the filesystem that holds (or will hold) ``path``."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    stats = os.statvfs(probe)
    return stats.f_bavail * stats.f_frsize


def check_disk(path: pathlib.Path, need: int, what: str) -> None:
    have = free_bytes(path)
    if have < need:
        raise LabStateError(
            f"not enough free disk for {what} at {path}: {have >> 30} GiB free, "
            f"{need >> 30} GiB needed; free some space there"
        )


def check_all(config: LabConfig, run_dir: pathlib.Path, cache: pathlib.Path, build: bool) -> None:
    """Every check, cheapest first; raises LabStateError on the first problem."""
    require_root()
    check_tools()
    check_ports_free(config)
    check_memory(config)
    check_disk(run_dir, RUN_FREE_BYTES, "the lab's node disks")
    if build:
        check_disk(cache, BUILD_FREE_BYTES, "the node image build")
