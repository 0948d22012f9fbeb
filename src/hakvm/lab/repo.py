"""The lab's local apt repository: the .deb files the image build downloaded, indexed with
dpkg-scanpackages and served on host loopback by Python's own ``http.server``, run by the
unprivileged lab user on Debian's python3 from the runtime dir.

Nodes have no route out, so this is where `hakvm apply`'s package phase gets packages in
the lab. The index is unsigned (``[trusted=yes]`` in the guests' sources.list): the files
were verified against Debian's archive keys when the image build downloaded them, and the
repository is reachable only from this machine's loopback and the lab guests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
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


def build_repo(lab: Lab, debs: Path) -> int:
    """Hard-link (or copy) the cached .debs into the runtime's repo/ (root-owned, read by
    the lab user) and write Packages; returns the number of packages."""
    repo = lab.run.repo_dir
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(mode=0o755)
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
    found = procs.find_process(lab, "repod", "repo")
    return found.pid if found else None


def start_repo(lab: Lab, port: int, user: procs.LabUser) -> int:
    pid = repod_pid(lab)
    if pid is not None:
        return pid
    argv = [
        procs.SYSTEM_PYTHON, "-E", "-s", "-m", procs.REPOD_MODULE,
        # Loopback only: the repository is for this machine's lab guests, nobody else.
        "--bind", LOOPBACK, "--directory", str(lab.run.repo_dir), str(port),
    ]  # fmt: skip
    try:
        return procs.spawn_daemon(lab, "repod", "repo", argv, user, port=port, proto="tcp")
    except procs.DaemonError as exc:
        raise RepoError(str(exc)) from None
