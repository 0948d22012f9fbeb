"""Facts: what a node is, read with one command each and parsed by a pure function.

Parsers are separate from the commands so unit tests can replay recorded real output.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import shlex
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from hakvm.redact import GENERATED, contains_placeholder, stand_in_digest
from hakvm.remote import disks, drbd, pacemaker, quorum
from hakvm.remote.connection import NodeConnection
from hakvm.remote.disks import Disks, parse_disks
from hakvm.remote.drbd import DrbdResource, parse_drbdsetup_json, parse_proc_drbd
from hakvm.remote.quorum import NodeCerts

SECRET_LINE = b"shared-secret"  # a DRBD resource file's secret is on the lines holding it
LVS_FIELDS = "lv_name,vg_name,lv_size,lv_attr,pool_lv,lv_tags"


@dataclass(frozen=True)
class FileFact:
    """A managed file on a node. A secret file is never read back (SECRET_FILES_SCRIPT):
    the node reports its mode, `size` and `sha256`, a DRBD resource file also its text
    without the shared-secret lines (`content`), an SSH private key its public half."""

    content: bytes
    mode: int
    sha256: str = ""  # set: a secret file, known by its hash
    size: int | None = None
    public_key: str = ""
    hex_only: bool = False  # nothing but lowercase hex digits and newlines
    owner: str = ""  # "user:group" of a secret file ("": not asked)

    @property
    def length(self) -> int:
        return len(self.content) if self.size is None else self.size

    def same_as(self, content: bytes) -> bool:
        """Whether the node's file holds `content`: by hash for a secret file; `content`
        standing in for a secret plan has not read (hakvm.redact.stand_in) by the hash it
        carries; text rendered with a placeholder for a secret derived from one by the rest
        of it; anything holding a secret that apply will generate differs."""
        if not self.sha256:
            return self.content == content
        digest = stand_in_digest(content)
        if digest is not None:
            return digest == self.sha256
        if GENERATED.encode() in content:
            return False
        if contains_placeholder(content):
            return without_secret_lines(content) == self.content
        return hashlib.sha256(content).hexdigest() == self.sha256


def without_secret_lines(data: bytes) -> bytes:
    """`data` without its shared-secret lines, as `grep -v` gives it on the node."""
    if not data:
        return b""
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    return b"".join(line + b"\n" for line in lines if SECRET_LINE not in line)


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    vg: str
    size: int
    attr: str
    pool: str
    tags: tuple[str, ...]

    @property
    def is_thin_pool(self) -> bool:
        return self.attr.startswith("t")


@dataclass
class NodeFacts:
    name: str
    os_release: dict[str, str] = field(default_factory=dict)
    packages: set[str] = field(default_factory=set)
    files: dict[str, FileFact | None] = field(default_factory=dict)
    addresses: dict[str, list[str]] = field(default_factory=dict)  # ifname -> CIDRs
    links_up: dict[str, bool] = field(default_factory=dict)
    volume_groups: dict[str, int] = field(default_factory=dict)  # name -> size
    logical_volumes: dict[tuple[str, str], LogicalVolume] = field(default_factory=dict)
    disks: Disks = field(default_factory=Disks)
    drbd: dict[str, DrbdResource] = field(default_factory=dict)
    services_active: dict[str, bool] = field(default_factory=dict)
    services_enabled: dict[str, bool] = field(default_factory=dict)
    cib: str | None = None  # the live CIB (only while Pacemaker runs)
    cib_on_disk: str | None = None  # what Pacemaker starts from, running or not
    crm_mon: str | None = None
    domains: dict[str, str] = field(default_factory=dict)  # name -> state
    # libvirt has probed the QEMU binary (its capability cache); None: not asked
    qemu_caps_cached: bool | None = None
    # corosync's running quorum configuration (`corosync-cmapctl -b quorum.`); None: not running
    cmap_quorum: str | None = None
    # the qdevice NSS database (read only for a spec with a quorum device)
    qdevice_certs: NodeCerts | None = None
    # /proc hides other users' processes (hidepid); None: not known
    proc_hides_processes: bool | None = None

    @property
    def os_id(self) -> str:
        return self.os_release.get("ID", "")


# --- parsers (pure) ---------------------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip().strip('"')
    return out


def parse_dpkg_packages(text: str) -> set[str]:
    """`dpkg-query -W -f='${Package} ${db:Status-Status}\\n'`: installed ones only."""
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == "installed":
            out.add(parts[0].split(":")[0])
    return out


def parse_files(archive: bytes, paths: Iterable[str]) -> dict[str, FileFact | None]:
    """A tar of the managed files that exist (FILES_COMMAND); a path not in it is absent."""
    out: dict[str, FileFact | None] = dict.fromkeys(paths)
    if not archive:
        return out
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            data = tar.extractfile(member)
            path = "/" + member.name.lstrip("/")
            out[path] = FileFact(data.read() if data else b"", member.mode & 0o7777)
    return out


def parse_secret_files(text: str) -> dict[str, FileFact]:
    """SECRET_FILES_SCRIPT's output: four lines per file that exists."""
    out: dict[str, FileFact] = {}
    lines = text.split("\n")
    for i in range(0, len(lines) - 3, 4):
        path, numbers, masked, public = lines[i : i + 4]
        try:
            mode, size, owner, sha256, other = numbers.split()
            content = base64.b64decode(masked, validate=True)
            public = public.strip()
            out[path] = FileFact(
                content, int(mode, 8), sha256, int(size), public, other == "0", owner
            )
        except (ValueError, binascii.Error):
            continue  # a garbled entry: the file reads as absent, so apply rewrites it
    return out


def parse_hidepid(options: str) -> bool | None:
    """`findmnt -n -o OPTIONS /proc`: whether other users' processes are hidden (hidepid 1,
    2, 4 or their names noaccess, invisible, ptraceable); None: no answer."""
    if not options.strip():
        return None
    values = [o.partition("=")[2] for o in options.strip().split(",") if o.startswith("hidepid=")]
    return bool(values) and values[-1] not in ("0", "off")


def parse_ip_addr(text: str) -> tuple[dict[str, list[str]], dict[str, bool]]:
    addresses: dict[str, list[str]] = {}
    up: dict[str, bool] = {}
    for link in json.loads(text or "[]"):
        name = link.get("ifname", "")
        up[name] = "UP" in link.get("flags", [])
        addresses[name] = [
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        ]
    return addresses, up


def parse_lvm(
    vgs_json: str, lvs_json: str
) -> tuple[dict[str, int], dict[tuple[str, str], LogicalVolume]]:
    vgs: dict[str, int] = {}
    lvs: dict[tuple[str, str], LogicalVolume] = {}
    if vgs_json.strip():
        for report in json.loads(vgs_json).get("report", []):
            for vg in report.get("vg", []):
                vgs[vg["vg_name"]] = int(str(vg["vg_size"]).rstrip("B"))
    if lvs_json.strip():
        for report in json.loads(lvs_json).get("report", []):
            for lv in report.get("lv", []):
                tags = tuple(t for t in lv.get("lv_tags", "").split(",") if t)
                item = LogicalVolume(
                    lv["lv_name"],
                    lv["vg_name"],
                    int(str(lv["lv_size"]).rstrip("B")),
                    lv.get("lv_attr", ""),
                    lv.get("pool_lv", ""),
                    tags,
                )
                lvs[(item.vg, item.name)] = item
    return vgs, lvs


def parse_services(text: str) -> tuple[dict[str, bool], dict[str, bool]]:
    """`systemctl show -p Id,ActiveState,UnitFileState UNIT...`: one block per unit.

    Names are given without ".service"; a unit that does not exist is inactive, disabled."""
    active: dict[str, bool] = {}
    enabled: dict[str, bool] = {}
    for block in text.split("\n\n"):
        props = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        unit = props.get("Id", "").removesuffix(".service")
        if not unit:
            continue
        active[unit] = props.get("ActiveState") == "active"
        enabled[unit] = props.get("UnitFileState") in ("enabled", "static", "indirect")
    # libvirtd is socket-activated on Debian: a listening socket counts as running.
    if active.get("libvirtd.socket"):
        active["libvirtd"] = True
    if enabled.get("libvirtd.socket"):
        enabled["libvirtd"] = True
    return active, enabled


@dataclass(frozen=True)
class CorosyncConf:
    """What a corosync.conf says about the cluster it belongs to."""

    cluster_name: str
    nodes: tuple[str, ...]  # node names, in file order
    addresses: tuple[str, ...]  # every ringN_addr


def parse_corosync_conf(text: str) -> CorosyncConf:
    """The cluster name, node names and link addresses (corosync's `key: value` lines)."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.split("#", 1)[0].partition(":")
        if sep and value.strip():
            values.setdefault(key.strip(), []).append(value.strip())
    addresses = [v for k, vs in values.items() if re.fullmatch(r"ring\d+_addr", k) for v in vs]
    return CorosyncConf(
        next(iter(values.get("cluster_name", [])), ""),
        tuple(values.get("name", [])),
        tuple(addresses),
    )


def parse_virsh_list(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines()[2:]:
        parts = line.split(None, 2)
        if len(parts) >= 3:
            out[parts[1]] = parts[2].strip()
    return out


# --- gathering ----------------------------------------------------------------------------------

QEMU_CAPS_DIR = "/var/cache/libvirt/qemu/capabilities"
SERVICES = ["corosync", "pacemaker", "libvirtd", "hakvm-firewall", "hakvm-metrics.timer",
            "prometheus-node-exporter", "corosync-qdevice"]  # fmt: skip
SERVICES_COMMAND = ["systemctl", "show", "-p", "Id,ActiveState,UnitFileState", "--", *SERVICES,
                    "libvirtd.socket"]  # fmt: skip


def files_command(paths: Iterable[str]) -> list[str]:
    """One tar of the managed files (content and mode); missing ones are simply left out."""
    return ["tar", "-cf", "-", "--ignore-failed-read", "--absolute-names", "--", *paths]


# Every fact command runs in ONE remote shell: on a slow node each SSH session and each
# process costs (measured on the TCG lab: 11 parallel sessions took 30 s). Each command's
# stdout goes to its own file, exit codes to "@rc", and one tar carries them all back
# (base64, so any byte survives the text channel).
BATCH_SCRIPT = (
    'set -u; d=$(mktemp -d); trap \'rm -rf "$d"\' EXIT; '
    'while [ "$#" -gt 1 ]; do name=$1; cmd=$2; shift 2; '
    'if eval "$cmd" >"$d/$name" 2>/dev/null </dev/null; then rc=0; else rc=$?; fi; '
    'printf "%s %s\\n" "$name" "$rc" >>"$d/@rc"; done; '
    'tar -cf - -C "$d" . | base64 -w0'
)


def batch_argv(commands: Iterable[tuple[str, list[str]]]) -> list[str]:
    """argv running each named command in one shell (each command shell-quoted itself)."""
    argv = ["sh", "-c", BATCH_SCRIPT, "sh"]
    for name, command in commands:
        argv += [name, shlex.join(command)]
    return argv


def parse_batch(text: str) -> dict[str, tuple[int, bytes]]:
    """name -> (exit code, stdout bytes) from BATCH_SCRIPT's output."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(text.strip())), mode="r:") as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member) if member.isfile() else None
            if data is not None:
                files[member.name.removeprefix("./")] = data.read()
    out: dict[str, tuple[int, bytes]] = {}
    for line in files.get("@rc", b"").decode().splitlines():
        name, _, rc = line.partition(" ")
        out[name] = (int(rc), files.get(name, b""))
    return out


# The status probes' batch runs on every refresh (status, --watch, doctor, hakvm serve), where
# each process costs a TCG lab node about 50 ms (ten `cat /proc/drbd`: 0.46 s; ten mktemp +
# rm pairs: 1.0 s; 2026-12-02): it frames each answer between two marker lines in the shell
# itself, with no temporary directory, tar or base64. Text only (the channel decodes UTF-8):
# facts, which digest files byte for byte, keep the tar batch above. The marker is random per
# batch, so no answer can forge a frame.
TEXT_BATCH_SCRIPT = (
    'set -u; m=$1; shift; while [ "$#" -gt 1 ]; do printf "%s %s\\n" "$m" "$1"; '
    'if eval "$2" 2>/dev/null </dev/null; then rc=0; else rc=$?; fi; '
    'printf "\\n%s %s %s\\n" "$m" "$1" "$rc"; shift 2; done'
)


def text_batch_argv(commands: Iterable[tuple[str, list[str]]], marker: str) -> list[str]:
    """argv running each named command in one shell, each answer framed by `marker` lines
    (`parse_text_batch` reads them)."""
    argv = ["sh", "-c", TEXT_BATCH_SCRIPT, "sh", marker]
    for name, command in commands:
        argv += [name, in_batch_shell(command)]
    return argv


# A line of a file, printed whole: the last one even without its newline (it gets one).
_READ_LOOP = 'while IFS= read -r l || [ -n "$l" ]; do printf "%s\\n" "$l"; done < '


def in_batch_shell(command: list[str]) -> str:
    """`command` as the batch's shell evals it. Two forms run in that shell, without a
    program of their own: `cat FILE` as a `read` loop, and `sh -c SCRIPT` as a subshell (a
    fork, no exec) with `sh -c`'s defaults (no positional parameters, no `set -u`). On the
    TCG lab a node's exec costs 50-200 ms of its one vCPU, and status's batch had four such
    (/proc/drbd, a bond, two scripts). A file that cannot be read fails (exit 2, not cat's 1:
    the batch's callers read any non-zero the same)."""
    if len(command) == 2 and command[0] == "cat" and not command[1].startswith("-"):
        return _READ_LOOP + shlex.quote(command[1])
    if len(command) == 3 and command[:2] == ["sh", "-c"]:
        return f"(set +u --; {command[2]}\n)"
    return shlex.join(command)


def parse_text_batch(text: str, marker: str) -> dict[str, tuple[int, bytes]]:
    """name -> (exit code, stdout) from TEXT_BATCH_SCRIPT's output; a command the batch did
    not finish (the connection lost) is left out. ValueError: no frame at all."""
    frame = re.compile(
        rf"^{re.escape(marker)} (\S+)\n(.*?)\n{re.escape(marker)} \1 (\d+)$", re.S | re.M
    )
    out = {m[1]: (int(m[3]), m[2].encode()) for m in frame.finditer(text)}
    if not out:
        raise ValueError("no framed answer in the batch's output")
    return out


# Per secret file that exists ("h:PATH"; "m:PATH" for a DRBD resource file), four lines,
# never the secret: its path; mode (octal), size, owner:group, SHA-256 and whether anything
# but lowercase hex digits and newlines is in it (0: no); for "m:" its text without the
# shared-secret lines (base64); for an OpenSSH private key its public half (ssh-keygen
# reads a pipe: a file whose mode drifted would be refused).
SECRET_FILES_SCRIPT = (
    'for a; do f=${a#?:}; [ -f "$f" ] || continue; m=""; k=""; '
    'case $a in m:*) m=$(grep -v shared-secret -- "$f" | base64 -w0);; esac; '
    'if head -n1 -- "$f" | grep -qx -- "-----BEGIN OPENSSH PRIVATE KEY-----"; then '
    'k=$(cat -- "$f" | ssh-keygen -y -P "" -f /dev/stdin 2>/dev/null | head -n1); fi; '
    'printf "%s\\n%s %s %s\\n%s\\n%s\\n" "$f" "$(stat -c "%a %s %U:%G" -- "$f")" '
    '"$(sha256sum < "$f" | cut -d" " -f1)" "$(tr -d "0-9a-f\\n" < "$f" | head -c1 | wc -c)" '
    '"$m" "$k"; done'
)


def secret_files_command(secret_paths: Iterable[str], masked_paths: Iterable[str]) -> list[str]:
    args = [f"h:{p}" for p in sorted(set(secret_paths))]
    args += [f"m:{p}" for p in sorted(set(masked_paths))]
    return ["sh", "-c", SECRET_FILES_SCRIPT, "sh", *args]


def fact_commands(
    paths: Iterable[str],
    secret_paths: Iterable[str] = (),
    masked_paths: Iterable[str] = (),
    qdevice: bool = False,
) -> list[tuple[str, list[str]]]:
    return [
        ("os_release", ["cat", "/etc/os-release"]),
        ("dpkg", ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\\n"]),
        ("files", files_command(sorted(set(paths)))),
        ("secret_files", secret_files_command(secret_paths, masked_paths)),
        ("ip_addr", ["ip", "-j", "addr", "show"]),
        ("vgs", ["vgs", "--reportformat", "json", "--units", "b", "-o", "vg_name,vg_size"]),
        ("lvs", ["lvs", "--reportformat", "json", "--units", "b", "-o", LVS_FIELDS]),
        ("lsblk", disks.LSBLK_ARGV),
        ("pvs", disks.PVS_ARGV),
        ("disk_links", disks.LINKS_ARGV),
        *drbd.raw_state_commands(),
        ("services", SERVICES_COMMAND),
        ("virsh", ["virsh", "-c", "qemu:///system", "list", "--all"]),
        ("qemu_caps", ["find", QEMU_CAPS_DIR, "-name", "*.xml"]),
        *pacemaker.batch_commands(),
        ("proc_mount", ["findmnt", "-n", "-o", "OPTIONS", "/proc"]),
        ("cmap_quorum", quorum.CMAP_QUORUM),
        *(quorum.cert_commands() if qdevice else []),
    ]


async def gather_facts(
    conn: NodeConnection,
    paths: Iterable[str],
    minors: dict[int, str],
    secret_paths: Iterable[str] = (),
    masked_paths: Iterable[str] = (),
    *,
    qdevice: bool = False,
) -> NodeFacts:
    """Everything plan needs from one node, in one remote shell session. `paths` are read
    whole; `secret_paths` and `masked_paths` (DRBD resource files) by hash only; `qdevice`:
    the quorum device's state and certificates too."""
    facts = NodeFacts(conn.name)
    paths = sorted(set(paths))
    secret = sorted({*secret_paths, *masked_paths})
    commands = fact_commands(paths, secret_paths, masked_paths, qdevice)
    result = await conn.run(batch_argv(commands), timeout=300, check=True)
    return facts_from_batch(facts, parse_batch(result.stdout), paths, minors, secret)


def facts_from_batch(
    facts: NodeFacts,
    batch: dict[str, tuple[int, bytes]],
    paths: Iterable[str],
    minors: dict[int, str],
    secret_paths: Iterable[str] = (),
) -> NodeFacts:
    """Fill ``facts`` from parsed batch output (pure: unit tests replay recorded output)."""

    def text(name: str) -> str:
        rc, out = batch.get(name, (1, b""))
        return out.decode("utf-8", "replace") if rc == 0 else ""

    os_release, dpkg, ip_addr = (text(n) for n in ("os_release", "dpkg", "ip_addr"))
    vgs, lvs, lsblk, proc_drbd = (text(n) for n in ("vgs", "lvs", "lsblk", "proc_drbd"))
    drbd_json, services, virsh = (text(n) for n in ("drbd_json", "services", "virsh"))
    facts.os_release = parse_os_release(os_release)
    facts.packages = parse_dpkg_packages(dpkg)
    facts.files = parse_files(batch.get("files", (1, b""))[1], paths)
    secret_files = parse_secret_files(batch.get("secret_files", (1, b""))[1].decode())
    facts.files.update({path: secret_files.get(path) for path in secret_paths})
    facts.addresses, facts.links_up = parse_ip_addr(ip_addr)
    facts.volume_groups, facts.logical_volumes = parse_lvm(vgs, lvs)
    facts.disks = parse_disks(lsblk, text("pvs"), text("disk_links"))
    facts.drbd = parse_proc_drbd(proc_drbd, minors)
    if not facts.drbd and drbd_json.strip().startswith("["):
        facts.drbd = parse_drbdsetup_json(drbd_json)
    facts.services_active, facts.services_enabled = parse_services(services)
    facts.domains = parse_virsh_list(virsh)
    if "qemu_caps" in batch:  # recorded facts from before this fact existed lack it
        facts.qemu_caps_cached = bool(text("qemu_caps").strip())
    facts.proc_hides_processes = parse_hidepid(text("proc_mount"))
    facts.cib = text("cib") or None
    facts.cib_on_disk = text("cib_disk") or None
    facts.crm_mon = text("crm_mon") or None
    facts.cmap_quorum = text("cmap_quorum") or None
    if "qdevice_ca" in batch:
        facts.qdevice_certs = quorum.node_certs(batch)
    return facts
