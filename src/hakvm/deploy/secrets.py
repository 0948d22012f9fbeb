"""Generated cluster secrets: the corosync authkey, the DRBD master secret and the live
migration SSH key pair (see hakvm.render.migration).

The nodes are the source of truth: a secret already on a node is adopted (so applying from
another machine never rotates a live cluster's keys); otherwise the local state directory's
copy is used, and only when neither exists is a new one generated. The local copies live in
a 0700 directory as 0600 files; nothing here is ever printed or passed in argv.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from hakvm.locks import local_lock
from hakvm.remote.facts import NodeFacts
from hakvm.render.migration import KEY_PATH as MIGRATION_KEY_PATH
from hakvm.spec.models import ClusterSpec
from hakvm.spec.paths import resolve

AUTHKEY_PATH = "/etc/corosync/authkey"
DRBD_MASTER_PATH = "/etc/hakvm/secrets/drbd-master"
AUTHKEY_BYTES = 256  # corosync-keygen's size; knet accepts 1024..4096 bits


@dataclass(frozen=True)
class ClusterSecrets:
    authkey: bytes
    drbd_master: str
    migration_key: bytes  # OpenSSH private key (ed25519)

    @property
    def migration_public_key(self) -> str:
        key = asyncssh.import_private_key(self.migration_key)
        return str(key.export_public_key("openssh").decode().strip())


def _new_migration_key() -> bytes:
    return bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh"))


def state_dir(cluster_name: str) -> Path:
    base = os.environ.get("HAKVM_STATE_DIR")
    root = Path(base) if base else Path("~/.local/state/hakvm").expanduser()
    return root / cluster_name


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _from_nodes(facts: Iterable[NodeFacts], path: str) -> bytes | None:
    for node in facts:
        fact = node.files.get(path)
        if fact is not None and fact.content:
            return fact.content
    return None


def load_or_create(cluster_name: str, facts: Iterable[NodeFacts]) -> ClusterSecrets:
    facts = list(facts)
    directory = state_dir(cluster_name)
    values: dict[str, bytes] = {}
    makers: list[tuple[str, str, Callable[[], bytes]]] = [
        ("corosync.authkey", AUTHKEY_PATH, lambda: secrets.token_bytes(AUTHKEY_BYTES)),
        ("drbd-master", DRBD_MASTER_PATH, lambda: secrets.token_hex(32).encode()),
        ("migration_ed25519", MIGRATION_KEY_PATH, _new_migration_key),
    ]
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # From "is there a secret" to "written": two first applies at once would otherwise
    # each generate their own, and the nodes would get two different keys.
    with local_lock(directory / ".lock", f"the state directory {directory}"):
        for name, remote_path, make in makers:
            local = directory / name
            value = _from_nodes(facts, remote_path)
            if value is None and local.exists():
                value = local.read_bytes()
            if value is None:
                value = make()
            if not local.exists() or local.read_bytes() != value:
                _write_private(local, value)
            values[name] = value
    return ClusterSecrets(
        values["corosync.authkey"],
        values["drbd-master"].decode().strip(),
        values["migration_ed25519"],
    )


@dataclass(frozen=True)
class BmcPassword:
    """A node's BMC password, read from the file its spec names (None: `problem` says why)."""

    content: bytes | None
    problem: str = ""


def read_bmc_passwords(spec: ClusterSpec, spec_dir: Path) -> dict[str, BmcPassword]:
    """node -> its BMC password; an unreadable file is recorded, for the fencing phase to
    refuse (the phases before it still run)."""
    out: dict[str, BmcPassword] = {}
    for node in spec.nodes:
        if node.bmc is None:
            continue
        path = resolve(spec_dir, node.bmc.password_file)
        try:
            out[node.name] = BmcPassword(path.read_bytes())
        except OSError as exc:
            problem = f"nodes.{node.name}.bmc.password_file: cannot read {path}: {exc.strerror}"
            out[node.name] = BmcPassword(None, problem)
    return out
