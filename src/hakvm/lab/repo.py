"""The lab's local apt repository: the .deb files the image build downloaded, indexed with
dpkg-scanpackages and served on host loopback by ``hakvm.lab.repod``.

Nodes have no route out, so this is where `hakvm apply`'s package phase gets packages in
the lab. The index is unsigned (``[trusted=yes]`` in the guests' sources.list): the files
were verified against Debian's archive keys when the image build downloaded them, and the
repository is reachable only from this machine's loopback and the lab guests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from hakvm.lab import procs
from hakvm.lab.state import GUEST_HOST_ADDRESS, LOOPBACK, Lab


class RepoError(Exception):
    """The repository could not be built or served."""


def sources_list(port: int) -> str:
    return (
        "# hakvm lab: packages come from the lab repository on the host's loopback\n"
        f"deb [trusted=yes] http://{GUEST_HOST_ADDRESS}:{port}/ ./\n"
    )


def build_repo(lab: Lab, debs: Path, owner: procs.LabUser | None) -> int:
    """Hard-link (or copy) the cached .debs into LAB_DIR/repo and write Packages; returns
    the number of packages."""
    repo = lab.repo_dir
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    count = 0
    for deb in sorted(debs.glob("*.deb")):
        target = repo / deb.name
        try:
            os.link(deb, target)
        except OSError:
            shutil.copy2(deb, target)
        count += 1
    scan = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"],
        cwd=repo, capture_output=True, check=False,
    )  # fmt: skip
    if scan.returncode != 0:
        raise RepoError(f"dpkg-scanpackages failed: {scan.stderr.decode()[-300:]}")
    (repo / "Packages").write_bytes(scan.stdout)
    for path in (repo, *repo.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return count


def repod_pid(lab: Lab) -> int | None:
    found = procs.find_process(lab.dir, "repod", "repo")
    return found.pid if found else None


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOOPBACK, port)) == 0


def start_repo(lab: Lab, port: int, user: procs.LabUser) -> int:
    pid = repod_pid(lab)
    if pid is not None:
        return pid
    log = lab.dir / "repod.log"
    argv = procs.as_lab_user(
        [sys.executable, "-m", procs.REPOD_MODULE, str(lab.dir), str(port)], user
    )
    with log.open("ab") as handle:
        if os.geteuid() == 0:
            os.chown(log, user.uid, user.gid)
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=handle, stderr=handle,
            start_new_session=True, cwd="/",
        )  # fmt: skip
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-2:]
            raise RepoError(f"repository daemon exited: {' | '.join(tail)}")
        if _listening(port):
            return proc.pid
        time.sleep(0.1)
    return proc.pid
