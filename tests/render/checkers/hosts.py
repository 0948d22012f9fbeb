"""Real-resolver check of a merged /etc/hosts: glibc's `getent ahostsv4` answers with the
file bind-mounted over /etc/hosts in a private mount namespace (`unshare --mount`), so the
host's own /etc/hosts is never touched and the lookup goes through nsswitch like libvirt's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def resolve(hosts_text: str, names: list[str]) -> dict[str, list[str]]:
    """IPv4 addresses glibc returns for each name (in order, deduplicated) with `hosts_text`
    as /etc/hosts. A name that does not resolve maps to []."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("getent") is None:
        pytest.skip("the resolver check needs root, unshare and getent")
    with tempfile.TemporaryDirectory(prefix="hakvm-hosts-") as tmp:
        path = Path(tmp) / "hosts"
        path.write_text(hosts_text)
        script = (
            'mount --bind "$1" /etc/hosts || exit 99; shift; '
            'for n in "$@"; do echo "== $n"; getent ahostsv4 "$n"; done; exit 0'
        )
        proc = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
                str(path),
                *names,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise AssertionError(f"resolver check failed:\n{proc.stderr}")
    out: dict[str, list[str]] = {}
    current = ""
    for line in proc.stdout.splitlines():
        if line.startswith("== "):
            current = line[3:]
            out[current] = []
        elif line.strip():
            address = line.split()[0]
            if address not in out[current]:
                out[current].append(address)
    return out
