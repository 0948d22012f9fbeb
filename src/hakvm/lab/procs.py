"""Lab processes: the unprivileged QEMU user, launching as it, and finding strays.

Why QEMU never runs as root: it parses guest-controlled device state (virtio rings,
network frames, the BMC's IPMI packets in bmcd) in a large C code base; as an
unprivileged system user, a guest escape reaches only the lab's own files. QEMU's own
``-runas`` drops privileges only after opening disks and sockets as root, so the
processes are started through ``setpriv`` instead and never hold root at all.

Every lab process carries the lab's absolute state dir in its argv (QEMU: its pidfile,
sockets and disks; bmcd: its arguments). That marker is how ``lab down`` and ``lab
status`` find them, even after the lab tool crashed and lost its pids.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence

from hakvm.lab.state import LAB_USER

BMCD_MODULE = "hakvm.lab.bmcd"
REPOD_MODULE = "hakvm.lab.repod"


@dataclasses.dataclass(frozen=True)
class LabUser:
    name: str
    uid: int
    gid: int


def current_user() -> LabUser:
    return LabUser(pwd.getpwuid(os.geteuid()).pw_name, os.geteuid(), os.getegid())


def ensure_lab_user() -> LabUser:
    """The user QEMU and bmcd run as: ``hakvm-lab`` (created) when root, else ourselves."""
    if os.geteuid() != 0:
        return current_user()
    try:
        entry = pwd.getpwnam(LAB_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                LAB_USER,
            ],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(LAB_USER)
    return LabUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def as_lab_user(argv: Sequence[str], user: LabUser) -> list[str]:
    """Prefix argv so it runs as ``user``, with no capabilities and no way back to root."""
    if os.geteuid() != 0 or user.uid == 0:
        return list(argv)
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [
        setpriv,
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
        *argv,
    ]


def cmdline(pid: int) -> list[str]:
    try:
        raw = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_zombie(pid: int) -> bool:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


@dataclasses.dataclass(frozen=True)
class LabProcess:
    pid: int
    kind: str  # "qemu" | "bmcd" | "repod"
    node: str


def classify(argv: Sequence[str], lab_dir: pathlib.Path) -> tuple[str, str] | None:
    """(kind, node) if argv is a process of the lab in ``lab_dir``, else None."""
    if not argv:
        return None
    prefix = f"{lab_dir}/"
    if "qemu-system" in os.path.basename(argv[0]):
        for arg in argv:
            # e.g. -pidfile /lab/node01/qemu.pid or file=/lab/node01/root.raw
            value = arg.split("=", 1)[-1] if "=" in arg and not arg.startswith("/") else arg
            if value.startswith(prefix):
                node = value[len(prefix) :].split("/", 1)[0]
                if node.startswith("node"):
                    return "qemu", node
        return None
    if REPOD_MODULE in argv:
        rest = list(argv[argv.index(REPOD_MODULE) + 1 :])
        if rest and rest[0] == str(lab_dir):
            return "repod", "repo"
        return None
    if BMCD_MODULE in argv:
        rest = list(argv[argv.index(BMCD_MODULE) + 1 :])
        if len(rest) >= 2 and rest[0] == str(lab_dir):
            return "bmcd", rest[1]
    return None


def find_lab_processes(lab_dir: pathlib.Path) -> list[LabProcess]:
    """Every live QEMU / bmcd process of this lab, found by its argv marker."""
    found: list[LabProcess] = []
    me = os.getpid()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        hit = classify(cmdline(pid), lab_dir)
        if hit is not None and not _is_zombie(pid):
            found.append(LabProcess(pid, hit[0], hit[1]))
    return sorted(found, key=lambda p: (p.node, p.kind, p.pid))


def find_process(lab_dir: pathlib.Path, kind: str, node: str) -> LabProcess | None:
    for proc in find_lab_processes(lab_dir):
        if proc.kind == kind and proc.node == node:
            return proc
    return None


def read_pidfile(path: pathlib.Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_matches(pid: int | None, lab_dir: pathlib.Path, kind: str, node: str) -> bool:
    """Whether pid is still that lab process (guards against recycled pids)."""
    if pid is None:
        return False
    return classify(cmdline(pid), lab_dir) == (kind, node) and not _is_zombie(pid)


def kill_hard(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL and wait until the process is gone (reaping it if it is our child)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            pass
        if _is_zombie(pid) or not pathlib.Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.02)
