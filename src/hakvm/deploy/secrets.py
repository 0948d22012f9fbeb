"""Generated cluster secrets: the corosync authkey, the DRBD master secret and the live
migration SSH key pair (see hakvm.render.migration).

Where each comes from: a node's copy when one holds a valid one (so applying from another
machine never rotates a live cluster's keys), else the local state directory's, else (apply
only) a new one. Every value is checked for length and format where it is read: a bad copy
in the state directory stops the command (one line naming the file and the fix, exit 3); a
bad copy on a node (empty, a render placeholder, garbage) is never adopted.

What crosses the wire: the nodes report each secret file's mode, size and SHA-256 (facts),
never its bytes. `apply` reads a node's copy only to adopt it (the state directory has none,
or another one); `plan` and `doctor` read none: they compare hashes ("present, matches"),
and where the state directory lacks a secret a node holds they carry a stand-in for it
(hakvm.redact.stand_in, never written), and they neither generate nor write a secret.
Local copies are written atomically (temp file, fsync, rename) as 0600 files in a 0700
directory; nothing here is ever printed or passed in argv.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from hakvm.agent.layout import WEBHOOK_URL_PATH
from hakvm.errors import StateError
from hakvm.locks import local_lock
from hakvm.redact import NOT_READ, contains_placeholder, remember_secret, stand_in, stand_in_digest
from hakvm.remote.facts import FileFact, NodeFacts
from hakvm.render.base import Secrets
from hakvm.render.cib import password_file_path
from hakvm.render.drbd import resource_path
from hakvm.render.migration import KEY_PATH as MIGRATION_KEY_PATH
from hakvm.spec.models import ClusterSpec
from hakvm.spec.paths import resolve

AUTHKEY_PATH = "/etc/corosync/authkey"
DRBD_MASTER_PATH = "/etc/hakvm/secrets/drbd-master"
AUTHKEY_BYTES = 256  # corosync-keygen's size
AUTHKEY_RANGE = (128, 512)  # what corosync accepts (1024 to 4096 bits)
_MASTER_RE = re.compile(rb"[0-9a-f]{64}\n?")

# (node, path) -> that file's bytes on that node: how apply adopts a node's copy.
Reader = Callable[[str, str], Awaitable[bytes]]


class SecretFileError(StateError):
    """A secret in the local state directory is unusable (one line: the file and the fix)."""


@dataclass(frozen=True)
class SecretState:
    """Where a secret comes from and how each node's copy compares (plan shows it)."""

    what: str
    source: str  # "state dir", "new" (generated at apply), or the node it is adopted from
    nodes: tuple[tuple[str, str], ...]  # (node, "present, matches" | ... | "absent")

    def line(self) -> str:
        origin = {"state dir": "the state dir's copy", "new": "generated at apply"}
        where = origin.get(self.source, f"{self.source}'s copy")
        return f"{self.what} ({where}): " + "; ".join(f"{n} {s}" for n, s in self.nodes)


@dataclass(frozen=True)
class ClusterSecrets:
    """The secrets apply writes. Built by `plan` or `doctor`, a value may be a stand-in (a
    node's copy known by its hash, or one generated at apply): `complete` says none is."""

    authkey: bytes
    drbd_master: str  # "": not read (files derived from it are rendered with a placeholder)
    migration_key: bytes  # OpenSSH private key (ed25519)
    migration_public: str = ""  # the key's public half, when the key itself was not read
    drbd_master_stand_in: bytes = b""
    states: tuple[SecretState, ...] = ()

    @property
    def migration_public_key(self) -> str:
        if self.migration_public or contains_placeholder(self.migration_key):
            return self.migration_public or self.migration_key.decode()
        key = asyncssh.import_private_key(self.migration_key)
        return str(key.export_public_key("openssh").decode().strip())

    @property
    def drbd_master_file(self) -> bytes:
        """What /etc/hakvm/secrets/drbd-master holds."""
        if self.drbd_master:
            return self.drbd_master.encode() + b"\n"
        return self.drbd_master_stand_in or stand_in("")

    @property
    def for_render(self) -> Secrets:
        """What the renderers get: the master, or the placeholder saying why it is absent
        (a node's copy plan did not read, or one apply generates)."""
        if self.drbd_master:
            return Secrets(self.drbd_master)
        adopted = bool(stand_in_digest(self.drbd_master_file))
        return Secrets.redacted(NOT_READ) if adopted else Secrets.redacted()

    @property
    def complete(self) -> bool:
        values = (self.authkey, self.migration_key, self.drbd_master_file)
        return not any(contains_placeholder(v) for v in values)


# --- the three kinds ------------------------------------------------------------------------


def _new_migration_key() -> bytes:
    return bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh"))


def _authkey_problem(value: bytes) -> str | None:
    low, high = AUTHKEY_RANGE
    if not low <= len(value) <= high:
        return f"{len(value)} bytes, corosync takes {low} to {high}"
    if len(set(value)) == 1:
        return "one byte repeated, not a random key"
    return None


def _master_problem(value: bytes) -> str | None:
    return None if _MASTER_RE.fullmatch(value) else "not 64 lowercase hex characters"


def _key_problem(value: bytes) -> str | None:
    try:
        asyncssh.import_private_key(value)
    except (asyncssh.KeyImportError, ValueError):
        return "not an OpenSSH private key without a passphrase"
    return None


@dataclass(frozen=True)
class Kind:
    name: str  # the file in the state directory
    path: str  # the file on the nodes
    what: str
    make: Callable[[], bytes]
    check: Callable[[bytes], str | None]
    plausible: Callable[[FileFact], bool]  # a node's copy, judged by its facts alone
    on_node: Callable[[bytes], bytes] = bytes  # the node file's content for a value
    from_node: Callable[[bytes], bytes] = bytes  # and back


KINDS = (
    Kind("corosync.authkey", AUTHKEY_PATH, "corosync authkey",
         lambda: secrets.token_bytes(AUTHKEY_BYTES), _authkey_problem,
         lambda f: AUTHKEY_RANGE[0] <= f.length <= AUTHKEY_RANGE[1]),
    Kind("drbd-master", DRBD_MASTER_PATH, "DRBD master secret",
         lambda: secrets.token_hex(32).encode(), _master_problem,
         lambda f: f.length in (64, 65) and f.hex_only, lambda v: v.strip() + b"\n",
         bytes.strip),
    Kind("migration_ed25519", MIGRATION_KEY_PATH, "migration SSH key", _new_migration_key,
         _key_problem, lambda f: f.public_key.startswith("ssh-")),
)  # fmt: skip


def problem(kind: Kind, value: bytes) -> str | None:
    """Why `value` is no usable `kind` (None: it is)."""
    if not value.strip():
        return "empty"
    if contains_placeholder(value):
        return "a render placeholder, not a secret"
    return kind.check(value)


def secret_paths(spec: ClusterSpec) -> list[str]:
    """Files on the nodes that hold nothing but a secret: compared by hash, never read back
    by plan or doctor (the fence passwords too)."""
    paths = {kind.path for kind in KINDS} | {password_file_path(n.name) for n in spec.nodes}
    paths.add(WEBHOOK_URL_PATH)  # alert forwarding: a webhook URL usually carries a token
    return sorted(paths)


def masked_paths(spec: ClusterSpec) -> list[str]:
    """Files holding a secret among other text (each DRBD resource's shared secret)."""
    return sorted(resource_path(vm.name) for vm in spec.vms)


# --- the state directory ----------------------------------------------------------------------


def state_dir(cluster_name: str) -> Path:
    base = os.environ.get("HAKVM_STATE_DIR")
    root = Path(base) if base else Path("~/.local/state/hakvm").expanduser()
    return root / cluster_name


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically: a 0600 temp file in its 0700 directory, fsync, rename,
    fsync of the directory (a crash leaves the old copy or the new one, never an empty one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_local(path: Path, kind: Kind) -> bytes | None:
    """The state directory's copy (None: there is none); SecretFileError if unusable."""
    try:
        value = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretFileError(f"{path}: cannot read the {kind.what}: {exc.strerror}") from None
    why = problem(kind, value)
    if why is not None:
        raise SecretFileError(
            f"{path}: this {kind.what} is unusable ({why}); remove the file (apply then "
            "adopts the nodes' copy, or generates one where no node has one) or restore it "
            "from a backup"
        )
    remember_secret(value)
    return value


# --- choosing each secret -----------------------------------------------------------------------


async def _choose(
    kind: Kind, local: bytes | None, copies: list[tuple[str, FileFact]], read: Reader | None
) -> tuple[bytes, str]:
    """(value or stand-in, source) of one secret; see the module's docstring."""
    for node, fact in copies:
        if not kind.plausible(fact):
            continue
        if local is not None and fact.same_as(kind.on_node(local)):
            return local, "state dir"
        if read is None:
            return stand_in(fact.sha256), node  # plan and doctor: not read
        value = kind.from_node(await read(node, kind.path))
        if problem(kind, value) is None:
            remember_secret(value)
            return value, node
    if local is not None:
        return local, "state dir"
    if read is None:
        return stand_in(""), "new"
    value = kind.make()
    remember_secret(value)
    return value, "new"


def _compare(kind: Kind, value: bytes, fact: FileFact | None) -> str:
    if fact is None:
        return "absent"
    if not kind.plausible(fact):
        return "present, malformed (replaced at apply)"
    content = value if contains_placeholder(value) else kind.on_node(value)  # a stand-in as is
    return "present, matches" if fact.same_as(content) else "present, differs"


async def resolve_secrets(
    cluster_name: str, facts: Mapping[str, NodeFacts], read: Reader | None
) -> ClusterSecrets:
    """The cluster's secrets. With `read` (apply) a node's copy is adopted, a missing one
    generated and the state directory brought up to date; without (plan, doctor) nothing
    is read from a node, generated or written."""
    directory = state_dir(cluster_name)
    values: dict[str, bytes] = {}
    sources: dict[str, str] = {}
    states: list[SecretState] = []
    # apply: from "is there a secret" to "written" under the state directory's lock: two
    # first applies at once would otherwise each generate their own, and the nodes would
    # get two different keys. plan and doctor write nothing and take no lock.
    guard: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if read is not None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        guard = local_lock(directory / ".lock", f"the state directory {directory}")
    with guard:
        for kind in KINDS:
            local = read_local(directory / kind.name, kind)
            copies = [(n, f) for n, nf in facts.items() if (f := nf.files.get(kind.path))]
            value, sources[kind.name] = await _choose(kind, local, copies, read)
            if read is not None and value != local:
                write_private(directory / kind.name, value)
            values[kind.name] = value
            nodes = [
                (n, _compare(kind, value, nf.files.get(kind.path))) for n, nf in facts.items()
            ]
            states.append(SecretState(kind.what, sources[kind.name], tuple(nodes)))
    master = values["drbd-master"]
    key = values["migration_ed25519"]
    source = sources["migration_ed25519"]
    key_fact = facts[source].files.get(MIGRATION_KEY_PATH) if source in facts else None
    return ClusterSecrets(
        authkey=values["corosync.authkey"],
        drbd_master="" if contains_placeholder(master) else master.strip().decode(),
        migration_key=key,
        migration_public=key_fact.public_key if key_fact and contains_placeholder(key) else "",
        drbd_master_stand_in=master if contains_placeholder(master) else b"",
        states=tuple(states),
    )


def local_secret_modes(spec: ClusterSpec, spec_path: Path) -> dict[str, int | None]:
    """Modes of the spec's SSH keys and BMC password files (relative to the spec); None:
    missing (validate and apply report it, it cannot leak)."""
    base = spec_path.resolve().parent
    files = {resolve(base, n.ssh.key_file) for n in spec.nodes}
    files |= {resolve(base, n.bmc.password_file) for n in spec.nodes if n.bmc}
    modes: dict[str, int | None] = {}
    for file in sorted(files):
        try:
            modes[str(file)] = os.stat(file).st_mode & 0o7777
        except OSError:
            modes[str(file)] = None
    return modes


# --- BMC passwords ------------------------------------------------------------------------------


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
            remember_secret(out[node.name].content or b"")
        except OSError as exc:
            problem = f"nodes.{node.name}.bmc.password_file: cannot read {path}: {exc.strerror}"
            out[node.name] = BmcPassword(None, problem)
    return out
