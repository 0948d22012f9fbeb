"""known_hosts files: which host key a node presents, whether the file trusts it, and trusting
a new one, which only ever happens because the user said so (`hakvm init
--accept-new-host-keys`, `hakvm replace-node --new-host-key SHA256:...`).

A changed key is never accepted silently: `init` refuses it (a machine that is not the one
the file knows), `replace-node` replaces the one node's entries once its new fingerprint is
confirmed, leaving every other host's lines as they were.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncssh

from hakvm.errors import InputError
from hakvm.remote.connection import server_host_key
from hakvm.spec.models import SshTarget

KeyState = Literal["trusted", "unknown", "changed"]


@dataclass(frozen=True)
class HostKeyCheck:
    """What a node presented and what the known_hosts file says about it."""

    host: str
    port: int
    key: asyncssh.SSHKey
    state: KeyState  # trusted; unknown (no entry for the host); changed (entries, none match)
    known_hosts: Path

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    @property
    def where(self) -> str:
        return host_pattern(self.host, self.port)


def fingerprint(key: asyncssh.SSHKey) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -lf` prints it."""
    return str(key.get_fingerprint("sha256"))


def host_pattern(host: str, port: int) -> str:
    """How known_hosts names a host: `host`, or `[host]:port` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def same_fingerprint(given: str, key: asyncssh.SSHKey) -> bool:
    """Whether a fingerprint the user typed is this key's ("SHA256:" may be left out)."""
    given = given.strip()
    return (given if given.startswith("SHA256:") else f"SHA256:{given}") == fingerprint(key)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"known_hosts file {path}: cannot read it: {exc}") from None


def _host_keys(text: str, host: str, port: int) -> list[asyncssh.SSHKey]:
    try:
        known = asyncssh.import_known_hosts(text)
    except (ValueError, asyncssh.Error) as exc:
        raise InputError(f"known_hosts: not a known_hosts file: {exc}") from None
    return list(known.match(host, host, port)[0])


def trusted_keys(path: Path, host: str, port: int) -> list[asyncssh.SSHKey]:
    """The keys `path` trusts for host:port (hashed entries included)."""
    return _host_keys(_read(path), host, port)


async def check(target: SshTarget, known_hosts: Path) -> HostKeyCheck:
    """Ask the node for its host key (of a type the file trusts for it, if any) and compare."""
    trusted = trusted_keys(known_hosts, target.host, target.port)
    algorithms = sorted({k.get_algorithm() for k in trusted})
    key = await server_host_key(target, algorithms)
    if any(k.public_data == key.public_data for k in trusted):
        state: KeyState = "trusted"
    else:
        state = "changed" if trusted else "unknown"
    return HostKeyCheck(target.host, target.port, key, state, known_hosts)


def trust(found: HostKeyCheck) -> None:
    """Write the presented key into the known_hosts file: appended for an unknown host; for a
    changed one, that host's key lines are replaced and every other line is kept."""
    path = found.known_hosts
    kept = []
    for line in _read(path).splitlines():
        plain = line.strip()
        if (
            found.state == "changed"
            and plain
            and not plain.startswith(("#", "@"))
            and _host_keys(plain + "\n", found.host, found.port)
        ):
            continue
        kept.append(line)
    public = found.key.export_public_key("openssh").decode().split()
    kept.append(f"{found.where} {public[0]} {public[1]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(kept) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
