"""Lab processes: the unprivileged QEMU user, launching as it, and finding them again.

Why QEMU never runs as root: it parses guest-controlled device state (virtio rings,
network frames, the BMC's IPMI packets in bmcd) in a large C code base; as an
unprivileged system user, a guest escape reaches only the lab's own files. QEMU's own
``-runas`` drops privileges only after opening disks and sockets as root, so the
processes are started through ``setpriv`` instead and never hold root at all.

A lab process is found through a pid file, never by its argv alone (anyone can put a
lab's path in an argv and have root kill their process): the BMC and repository daemons'
pid files are written by root into the lab's state dir, QEMU's by QEMU into its node dir.
A pid is only taken for the lab's if the process runs as the lab user and its argv is that
lab process's (its runtime dir in it), which also guards against recycled pids.

The BMC daemons run on Debian's own ``python3`` (with ``python3-pyghmi``) from a root-owned
copy of this package in the runtime dir: they never import from the checkout, which the
lab user may not be able to reach (a clone in root's 0700 home).
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

from hakvm.lab.state import LAB_USER, NODES, Lab, read_private_text, write_atomic

BMCD_MODULE = "hakvm.lab.bmcd"
REPOD_MODULE = "http.server"
QNETD_BINARY = "corosync-qnetd"  # the lab's quorum device server (hakvm.lab.qnetd)
# The interpreter the lab user's daemons run on: Debian's, with python3-pyghmi.
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclasses.dataclass(frozen=True)
class LabUser:
    name: str
    uid: int
    gid: int


def current_user() -> LabUser:
    return LabUser(pwd.getpwuid(os.geteuid()).pw_name, os.geteuid(), os.getegid())


def lab_uid() -> int:
    """The uid lab processes run as (``hakvm-lab`` if it exists, else ourselves)."""
    if os.geteuid() != 0:
        return os.geteuid()
    try:
        return pwd.getpwnam(LAB_USER).pw_uid
    except KeyError:
        return -1  # no lab user yet: no lab process can exist


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


def real_uid(pid: int) -> int | None:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclasses.dataclass(frozen=True)
class LabProcess:
    pid: int
    kind: str  # "qemu" | "bmcd" | "repod" | "qnetd"
    node: str


def classify(argv: Sequence[str], run_dir: pathlib.Path) -> tuple[str, str] | None:
    """(kind, node) if argv is a process of the lab whose runtime dir is ``run_dir``."""
    if not argv:
        return None
    prefix = f"{run_dir}/"
    if "qemu-system" in os.path.basename(argv[0]):
        for arg in argv:
            # e.g. -pidfile /run/node01/qemu.pid or file=/run/node01/root.raw
            value = arg.split("=", 1)[-1] if "=" in arg and not arg.startswith("/") else arg
            if value.startswith(prefix):
                node = value[len(prefix) :].split("/", 1)[0]
                if node.startswith("node"):
                    return "qemu", node
        return None
    if REPOD_MODULE in argv and str(run_dir / "repo") in argv:
        return "repod", "repo"
    if os.path.basename(argv[0]) == os.path.basename(QNETD_BINARY) and any(
        arg.startswith(f"nss_db_dir={run_dir}/qnetd/") for arg in argv
    ):
        return "qnetd", "qnetd"
    if BMCD_MODULE in argv:
        rest = list(argv[argv.index(BMCD_MODULE) + 1 :])
        if len(rest) >= 2 and rest[0] == str(run_dir):
            return "bmcd", rest[1]
    return None


def read_pidfile(path: pathlib.Path) -> int | None:
    try:
        return int(read_private_text(path, 32).strip())
    except (OSError, ValueError):
        return None


def pid_matches(pid: int | None, run_dir: pathlib.Path, kind: str, node: str) -> bool:
    """Whether pid is that lab process: the lab user's, with that argv, alive."""
    if pid is None or pid <= 1:
        return False
    return (
        real_uid(pid) == lab_uid()
        and classify(cmdline(pid), run_dir) == (kind, node)
        and not _is_zombie(pid)
    )


def qemu_pidfile(run_dir: pathlib.Path, node: str) -> pathlib.Path:
    return run_dir / node / "qemu.pid"


def pidfiles(lab: Lab) -> list[tuple[str, str, pathlib.Path]]:
    """(kind, node, pid file) of every process a lab can have."""
    found: list[tuple[str, str, pathlib.Path]] = []
    for node in NODES:
        found.append(("bmcd", node, lab.pidfile("bmcd", node)))
        found.append(("qemu", node, qemu_pidfile(lab.run.dir, node)))
    found.append(("repod", "repo", lab.pidfile("repod", "repo")))
    found.append(("qnetd", "qnetd", lab.pidfile("qnetd", "qnetd")))
    return found


def find_lab_processes(lab: Lab) -> list[LabProcess]:
    """Every live QEMU / bmcd / repod / qnetd process of this lab, found through its pid file."""
    found: list[LabProcess] = []
    for kind, node, path in pidfiles(lab):
        pid = read_pidfile(path)
        if pid is not None and pid != os.getpid() and pid_matches(pid, lab.run.dir, kind, node):
            found.append(LabProcess(pid, kind, node))
    return sorted(found, key=lambda p: (p.node, p.kind, p.pid))


def find_process(lab: Lab, kind: str, node: str) -> LabProcess | None:
    for proc in find_lab_processes(lab):
        if proc.kind == kind and proc.node == node:
            return proc
    return None


def socket_owner(port: int, proto: str) -> int | None:
    """The pid holding 127.0.0.1:port (a TCP listener, or a bound UDP socket), if any.

    From /proc/net/{tcp,udp} (the socket's inode) and /proc/PID/fd: "something listens"
    is not enough, it must be the daemon the lab just started (another local user could
    hold the port, and the nodes would install that user's packages as root)."""
    want = f"0100007F:{port:04X}"
    inodes: set[str] = set()
    try:
        lines = pathlib.Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        cols = line.split()
        if len(cols) > 9 and cols[1] == want and (proto == "udp" or cols[3] == "0A"):
            inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    return int(entry.name)
            except OSError:
                continue
    return None


class DaemonError(Exception):
    """A lab daemon could not be started."""


def spawn_daemon(
    lab: Lab,
    kind: str,
    node: str,
    argv: Sequence[str],
    user: LabUser,
    *,
    port: int,
    proto: str,
    stdin_text: str = "",
    cwd: str = "/",
    timeout: float = 5.0,
) -> int:
    """Start a lab daemon as ``user``, detached; return its pid once it holds ``port``.

    Its log is opened by root in the state dir (root's own: no symlink the lab user could
    plant there) and inherited; its pid file is written by root there too."""
    log_path = lab.log_file(kind, node)
    log_fd = os.open(
        log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        proc = subprocess.Popen(
            as_lab_user(argv, user),
            stdin=subprocess.PIPE,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,  # survives the lab tool and its terminal
            cwd=cwd,
        )
    finally:
        os.close(log_fd)
    assert proc.stdin is not None
    if stdin_text:
        proc.stdin.write(stdin_text.encode())
    proc.stdin.close()
    write_atomic(lab.pidfile(kind, node), f"{proc.pid}\n", mode=0o600)
    # A busy port or a bad configuration must fail `lab up`, not later.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise DaemonError(f"{kind} of {node} exited: {' | '.join(tail)}")
        holder = socket_owner(port, proto)
        if holder == proc.pid:
            return proc.pid
        time.sleep(0.1)
    holder = socket_owner(port, proto)
    procs_alive = proc.poll() is None
    kill_hard(proc.pid)
    if holder is not None and holder != proc.pid:
        raise DaemonError(
            f"127.0.0.1:{port}/{proto} is held by another process (pid {holder}); "
            "stop it or choose other lab ports"
        )
    raise DaemonError(
        f"{kind} of {node} did not bind 127.0.0.1:{port}/{proto} within {timeout:.0f}s"
        + ("" if procs_alive else " (it exited)")
    )


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
