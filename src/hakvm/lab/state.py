"""Lab layout: configuration, ports and file paths.

A lab has two directories:

* the **state dir** (``$HAKVM_LAB_DIR``, default ``./.hakvm/lab``, anywhere: a checkout in
  a 0700 home is fine): root's own, 0700; the unprivileged lab user never reads it::

    lab.json                 LabConfig (ports, sizes, BMC user, the runtime dir); the marker
                             that makes a directory a lab's
    id_ed25519[.pub]         client key for root@node (0600)
    known_hosts              the nodes' real host keys, [127.0.0.1]:PORT entries
    bmc.json                 BMC user and addresses (no secret)
    bmc-nodeNN.password      BMC password (0600)
    pids/                    pid files of the daemons root started (bmcd, repod, qnetd)
    qnetd-nssdb              link to the runtime dir's qnetd/nssdb (a lab spec names it)
    logs/                    their stdout/stderr, opened by root, inherited by them

* the **runtime dir** (``/var/lib/hakvm-lab/<key>``, one per state dir): what the
  unprivileged QEMU user and the BMC daemons need, so that they never have to reach the
  state dir or the checkout::

    code/hakvm/lab/*.py      root-owned copy of the lab package the BMC daemons run
    boot/vmlinuz initrd.img  kernel + initrd for -kernel/-initrd
    repo/                    the local package repository
    links.json               links currently cut
    qnetd/                   the lab user's, 0700: corosync-qnetd's NSS database, lock, socket
    nodeNN/                  owned by the QEMU user, 0700: disks, sockets, logs, QEMU's pid
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import stat
import tempfile
from typing import Any

NODES: tuple[str, ...] = ("node01", "node02")
# Back-to-back links between the nodes, in guest NIC order: eth1, eth2, eth3.
LINKS: tuple[str, ...] = ("bond-a", "bond-b", "hb")

DEFAULT_DIR = pathlib.Path(".hakvm/lab")
# Runtime dirs live here (root-owned, 0755), one per state dir. Overridable for unit tests.
RUN_BASE = pathlib.Path("/var/lib/hakvm-lab")
DEFAULT_SSH_PORT = 2201
DEFAULT_BMC_PORT = 6230
DEFAULT_LINK_PORT = 42100
# Local apt repository (the image build's .deb cache) served on host loopback: nodes have
# no route out, so apply's package phase installs from here (10.0.2.2 in the guests).
DEFAULT_REPO_PORT = 42180
# The lab's corosync-qnetd (quorum device server), on host loopback: 10.0.2.2 in the guests.
DEFAULT_QNETD_PORT = 5403
DEFAULT_BMC_USER = "hakvm"
LAB_USER = "hakvm-lab"
LOOPBACK = "127.0.0.1"
# The user-mode network as seen by the guests: 10.0.2.2 is the host's loopback.
GUEST_MGMT_ADDRESS = "10.0.2.15"
GUEST_HOST_ADDRESS = "10.0.2.2"


class LabStateError(Exception):
    """The lab is not in a state where the command can run (exit 3)."""


def lab_dir_from_env() -> pathlib.Path:
    raw = os.environ.get("HAKVM_LAB_DIR")
    return pathlib.Path(raw) if raw else DEFAULT_DIR


def check_port(port: int, count: int, what: str) -> None:
    if not 1024 <= port <= 65535 - count + 1:
        raise ValueError(f"{what} port {port} out of range 1024..{65535 - count + 1}")


@dataclasses.dataclass(frozen=True)
class LabConfig:
    ssh_port: int = DEFAULT_SSH_PORT
    bmc_port: int = DEFAULT_BMC_PORT
    link_port: int = DEFAULT_LINK_PORT
    repo_port: int = DEFAULT_REPO_PORT
    qnetd_port: int = DEFAULT_QNETD_PORT
    memory_mib: int = 1536
    # One vCPU: measured faster than two on a 2-core host running both TCG nodes.
    cpus: int = 1
    drbd_disk_gib: int = 20
    bmc_user: str = DEFAULT_BMC_USER
    image_key: str = ""
    run_dir: str = ""

    def validate(self) -> None:
        check_port(self.ssh_port, len(NODES), "SSH")
        check_port(self.bmc_port, len(NODES), "BMC")
        check_port(self.link_port, 2 * len(LINKS), "link")
        check_port(self.repo_port, 1, "repository")
        check_port(self.qnetd_port, 1, "qnetd")
        ranges = [
            (self.ssh_port, len(NODES), "SSH"),
            (self.bmc_port, len(NODES), "BMC"),
            (self.link_port, 2 * len(LINKS), "link"),
            (self.repo_port, 1, "repository"),
            (self.qnetd_port, 1, "qnetd"),
        ]
        for i, (a, na, wa) in enumerate(ranges):
            for b, nb, wb in ranges[i + 1 :]:
                if a < b + nb and b < a + na:
                    raise ValueError(f"{wa} ports {a}.. overlap {wb} ports {b}..")
        if self.memory_mib < 512:
            raise ValueError("node memory must be at least 512 MiB")
        if not 1 <= self.cpus <= 16:
            raise ValueError("node CPUs must be 1..16")

    def node_index(self, node: str) -> int:
        return NODES.index(node)

    def ssh_port_of(self, node: str) -> int:
        return self.ssh_port + self.node_index(node)

    def bmc_port_of(self, node: str) -> int:
        return self.bmc_port + self.node_index(node)

    def link_ports(self, link: str, node: str) -> tuple[int, int]:
        """(local, peer) UDP ports of ``node``'s end of ``link``."""
        base = self.link_port + 2 * LINKS.index(link)
        mine = self.node_index(node)
        return base + mine, base + (1 - mine)


def check_node(node: str) -> str:
    if node not in NODES:
        raise ValueError(f"unknown node {node!r} (expected one of: {', '.join(NODES)})")
    return node


def check_link(link: str) -> str:
    if link not in LINKS:
        raise ValueError(f"unknown link {link!r} (expected one of: {', '.join(LINKS)})")
    return link


def run_base() -> pathlib.Path:
    raw = os.environ.get("HAKVM_LAB_RUN_BASE")
    return pathlib.Path(raw) if raw else RUN_BASE


def run_dir_for(state_dir: pathlib.Path) -> pathlib.Path:
    """The runtime dir of the lab whose state dir is ``state_dir`` (absolute)."""
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]
    return run_base() / digest


def orphaned_runtimes() -> list[tuple[pathlib.Path, pathlib.Path]]:
    """(runtime dir, its gone state dir) for each lab deleted without `hakvm lab destroy`
    (a removed clone): its node disks, gigabytes each, would stay forever. A runtime dir
    without an owner file (made before it existed) or not named after its owner is not
    judged: only `lab destroy --lab-dir` of that very state dir removes it."""
    base = run_base()
    found: list[tuple[pathlib.Path, pathlib.Path]] = []
    for run in sorted(base.iterdir()) if base.is_dir() else []:
        try:
            owner = pathlib.Path(read_private_text(Runtime(run).owner_file).strip())
        except OSError:
            continue
        if owner.is_absolute() and run_dir_for(owner) == run and not Lab(owner).exists():
            found.append((run, owner))
    return found


def disk_usage(path: pathlib.Path) -> int:
    """Bytes allocated below ``path`` (the node disks are sparse qcow2 files)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


class Runtime:
    """Paths of one lab's runtime dir: all the unprivileged lab processes ever touch."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.dir = pathlib.Path(os.path.realpath(directory))

    @property
    def code_dir(self) -> pathlib.Path:
        return self.dir / "code"

    @property
    def boot_dir(self) -> pathlib.Path:
        return self.dir / "boot"

    @property
    def owner_file(self) -> pathlib.Path:
        """The state dir this runtime dir serves, so that one left behind can be named."""
        return self.dir / "lab-dir"

    @property
    def repo_dir(self) -> pathlib.Path:
        return self.dir / "repo"

    @property
    def links_file(self) -> pathlib.Path:
        return self.dir / "links.json"

    def node_dir(self, node: str) -> pathlib.Path:
        return self.dir / node

    def cut_links(self) -> set[str]:
        try:
            data = json.loads(self.links_file.read_text())
        except (OSError, ValueError):
            return set()
        return {str(x) for x in data.get("cut", []) if x in LINKS}

    def save_cut_links(self, cut: set[str]) -> None:
        write_atomic(self.links_file, json.dumps({"cut": sorted(cut)}) + "\n", mode=0o644)


class Lab:
    """Paths of one lab: its state dir (always absolute) and its runtime dir."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.dir = pathlib.Path(os.path.realpath(directory))
        self.run = Runtime(self._run_dir())

    def _run_dir(self) -> pathlib.Path:
        """The runtime dir recorded in lab.json, else the one this state dir gets."""
        try:
            recorded = str(read_json(self.config_file).get("run_dir") or "")
        except (OSError, ValueError):
            recorded = ""
        return pathlib.Path(recorded) if recorded else run_dir_for(self.dir)

    # --- files --------------------------------------------------------------------------
    @property
    def config_file(self) -> pathlib.Path:
        return self.dir / "lab.json"

    @property
    def ssh_key(self) -> pathlib.Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> pathlib.Path:
        return self.dir / "known_hosts"

    @property
    def bmc_config(self) -> pathlib.Path:
        return self.dir / "bmc.json"

    @property
    def pid_dir(self) -> pathlib.Path:
        return self.dir / "pids"

    @property
    def log_dir(self) -> pathlib.Path:
        return self.dir / "logs"

    def bmc_password_file(self, node: str) -> pathlib.Path:
        return self.dir / f"bmc-{node}.password"

    def pidfile(self, kind: str, node: str) -> pathlib.Path:
        """Pid file of a daemon root started (``bmcd``/``repod``): root's own, never the
        lab user's, so nobody else can make root signal a process of their choosing."""
        return self.pid_dir / f"{kind}-{node}.pid"

    def log_file(self, kind: str, node: str) -> pathlib.Path:
        return self.log_dir / f"{kind}-{node}.log"

    def want_file(self, kind: str, node: str) -> pathlib.Path:
        """Whether a daemon should run ("running"/"stopped"): tells a crash from a stop."""
        return self.pid_dir / f"{kind}-{node}.want"

    # --- config -------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.config_file.is_file()

    def load(self) -> LabConfig:
        if not self.exists():
            raise LabStateError(f"no lab in {self.dir} (run `hakvm lab up` first)")
        try:
            data = read_json(self.config_file)
        except (OSError, ValueError) as exc:
            raise LabStateError(f"{self.config_file}: not a lab's configuration ({exc})") from None
        fields = {f.name for f in dataclasses.fields(LabConfig)}
        return LabConfig(**{k: v for k, v in data.items() if k in fields})

    def save(self, config: LabConfig) -> None:
        write_atomic(self.config_file, json.dumps(dataclasses.asdict(config), indent=2) + "\n")

    def cut_links(self) -> set[str]:
        return self.run.cut_links()

    def save_cut_links(self, cut: set[str]) -> None:
        self.run.save_cut_links(cut)

    def claim(self) -> None:
        """Make the state dir ours, or refuse one that is not a lab's.

        ``--lab-dir`` may name any path: a directory that holds anything but a lab (no
        lab.json) is refused, never chmodded or cleaned. A new one is created 0700."""
        if self.dir.exists() and not self.dir.is_dir():
            raise LabStateError(f"{self.dir} is not a directory; choose another --lab-dir")
        if self.dir.is_dir() and any(self.dir.iterdir()) and not self.exists():
            raise LabStateError(
                f"{self.dir} is not empty and holds no lab (no lab.json): refusing to use it; "
                "choose an empty or new --lab-dir"
            )
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.pid_dir.mkdir(mode=0o700, exist_ok=True)
        self.log_dir.mkdir(mode=0o700, exist_ok=True)


def ensure_root_dir(path: pathlib.Path, mode: int = 0o755) -> None:
    """Create ``path`` root-owned, or check an existing one is root's and not writable by
    anyone else: the lab user's runtime files hang below it."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise LabStateError(
            f"{path} must be a directory owned by root and writable by nobody else "
            f"(it is uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}); remove it"
        )


def read_private_text(path: pathlib.Path, limit: int = 1 << 20) -> str:
    """Read a file in a directory the lab user owns, as root: never through a symlink,
    never anything but a regular file (the lab user could plant either)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


def write_atomic(
    path: pathlib.Path, text: str, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> None:
    """Write via rename, so readers never see half a file and the mode is set before."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: pathlib.Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data
