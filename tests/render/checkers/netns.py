"""Throw-away network namespaces for real-tool checks that need "local" addresses.

corosync -t and drbdadm both insist that one of the configured addresses is on this host.
Each check gets its own namespace holding only `lo` with those addresses, so nothing the
tools do can reach a real network, and the host's addresses never matter.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pytest

_counter = itertools.count()


def require(*tools: str) -> None:
    """Skip the calling test unless we are root (namespaces) and every tool is installed."""
    if os.geteuid() != 0:
        pytest.skip("real-tool check needs root (it creates a network namespace)")
    for tool in ("ip", *tools):
        if shutil.which(tool) is None and not os.path.exists(tool):
            pytest.skip(f"{tool} is not installed")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def netns(addresses: Iterable[str]) -> Iterator[str]:
    """A new namespace with `addresses` (IPv4, /32) on its `lo`; yields its name."""
    name = f"hakvm-chk-{os.getpid()}-{next(_counter)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        for address in sorted(set(addresses)):
            _ip("-n", name, "addr", "add", f"{address}/32", "dev", "lo")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
