"""DRBD as the nodes report it: the one list of state commands, their parsers, and the
drbdadm questions whose answers need reading (is there metadata? is it down already?).

Parsers are pure functions of recorded output, so unit tests replay what real nodes said.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from hakvm.remote.connection import Remote, RemoteError


@dataclass(frozen=True)
class DrbdResource:
    name: str
    minor: int | None
    connection: str  # Connected, StandAlone, WFConnection, SyncSource, ...
    role: str  # Primary / Secondary / Unknown
    peer_role: str
    disk: str  # UpToDate, Inconsistent, Diskless, ...
    peer_disk: str
    sync_percent: float | None = None
    sync_eta_s: int | None = None  # DRBD's own estimate ("finish:"), while resyncing


# --- state: the commands (one list, for status, doctor and migrate) and their parsers ---------


# DRBD 8.4 keeps its whole state in /proc/drbd, which is all it needs; on DRBD 9 that file
# holds only the version, and `drbdsetup status --json` has the state (on 8.4 drbdsetup would
# only fail, after a modinfo: skipped there). The version is read by the shell itself: on the
# TCG lab every process of status's batch costs 0.1-0.2 s.
DRBD9_JSON = (
    "read -r version < /proc/drbd; "
    "case $version in 'version: 8.'*) ;; *) exec drbdsetup status --json;; esac"
)


def raw_state_commands() -> list[tuple[str, list[str]]]:
    """DRBD 8.4's /proc/drbd, or 9's JSON status (facts name the resources themselves)."""
    return [("proc_drbd", ["cat", "/proc/drbd"]), ("drbd_json", ["sh", "-c", DRBD9_JSON])]


# The resources' names and minors: udev's /dev/drbd/by-res links (drbd-utils' 65-drbd.rules:
# NAME -> ../../drbdN on 8.4, NAME/VOLUME -> ../../../drbdN on 9), matched to their device by
# the shell alone (globs and test's -ef, no program: `find` cost a loaded TCG lab node 70 ms
# against 7 ms so, median of 8, 2026-12-04); without them (no udev) a drbdadm run, which
# parses every file (0.5 s on a loaded lab node): only its `resource` and `minor` lines leave
# the node (the dump also holds each resource's shared secret).
def devices_script(dev: str = "/dev") -> str:
    """The shell script printing `NAME[/VOLUME] drbdN` per by-res link under `dev` (a test
    gives a directory of its own), else the dump's lines."""
    return (
        f"p={shlex.quote(dev)}; f=; "
        'for l in "$p"/drbd/by-res/* "$p"/drbd/by-res/*/*; do [ -L "$l" ] || continue; '
        'for d in "$p"/drbd[0-9]*; do if [ "$l" -ef "$d" ]; then '
        'printf "%s %s\\n" "${l#"$p"/drbd/by-res/}" "${d##*/}"; f=1; break; fi; done; done; '
        "[ -n \"$f\" ] || drbdadm dump all 2>/dev/null | grep -e '^resource ' -e ' minor '"
    )


DEVICES = devices_script()


def state_commands() -> list[tuple[str, list[str]]]:
    """A batch's DRBD entries: the raw state, and the names /proc/drbd lacks (it knows the
    resources only by minor)."""
    return [*raw_state_commands(), ("drbd_devices", ["sh", "-c", DEVICES])]


def state_from(text: Callable[[str], str]) -> dict[str, DrbdResource]:
    """Every resource from a batch answer of `state_commands` (`text(key)`: that entry's
    output, '' when it failed)."""
    found = parse_proc_drbd(text("proc_drbd"), parse_device_names(text("drbd_devices")))
    if not found and text("drbd_json").strip().startswith("["):
        found = parse_drbdsetup_json(text("drbd_json"))
    return found


_RESOURCE_RE = re.compile(r"^resource\s+(?P<name>\S+)\s*\{", re.MULTILINE)
_MINOR_RE = re.compile(r"\bminor\s+(?P<minor>\d+)\s*;")


_BY_RES_RE = re.compile(r"^(?P<name>[^/\s]+)(?:/(?P<volume>\d+))? (?:\S*/)?drbd(?P<minor>\d+)$")


def parse_device_names(text: str) -> dict[int, str]:
    """minor -> resource name from DEVICES: /dev/drbd/by-res links (`NAME[/VOLUME] TARGET`,
    as `devices_script` or `find -printf '%P %l'` prints them), else `drbdadm dump all`'s
    lines. A resource's first volume names it, as in the dump."""
    links = [m for line in text.splitlines() if (m := _BY_RES_RE.match(line.strip()))]
    if not links:
        return parse_dump_minors(text)
    first: dict[str, tuple[int, int]] = {}  # name -> (volume, minor)
    for m in links:
        seen = (int(m["volume"] or 0), int(m["minor"]))
        first[m["name"]] = min(first.get(m["name"], seen), seen)
    return {minor: name for name, (_, minor) in sorted(first.items())}


def parse_dump_minors(text: str) -> dict[int, str]:
    """minor -> resource name from `drbdadm dump all` (8.4's or 9's, whole or only its
    `resource` and `minor` lines): each resource's first device minor (the nodes of a hakvm
    resource share it)."""
    out: dict[int, str] = {}
    starts = list(_RESOURCE_RE.finditer(text))
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        minor = _MINOR_RE.search(text, match.end(), end)
        if minor is not None:
            out.setdefault(int(minor["minor"]), match["name"])
    return out


_PROC_DRBD_RE = re.compile(
    r"^\s*(?P<minor>\d+): cs:(?P<cs>\S+) ro:(?P<ro>\S+)/(?P<pro>\S+) ds:(?P<ds>\S+)/(?P<pds>\S+)"
)
_SYNC_RE = re.compile(r"sync'ed:\s*(?P<pct>[\d.]+)%")
_FINISH_RE = re.compile(r"finish:\s*(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)")


def parse_proc_drbd(text: str, minors: dict[int, str]) -> dict[str, DrbdResource]:
    """DRBD 8.4's /proc/drbd; `minors` maps minor -> resource name (from our config)."""
    out: dict[str, DrbdResource] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _PROC_DRBD_RE.match(line)
        if match:
            minor = int(match["minor"])
            current = minors.get(minor, f"minor-{minor}")
            out[current] = DrbdResource(
                current, minor, match["cs"], match["ro"], match["pro"], match["ds"], match["pds"]
            )
            continue
        sync = _SYNC_RE.search(line)
        if sync and current is not None:
            out[current] = dataclasses.replace(out[current], sync_percent=float(sync["pct"]))
        finish = _FINISH_RE.search(line)
        if finish and current is not None:
            eta = int(finish["h"]) * 3600 + int(finish["m"]) * 60 + int(finish["s"])
            out[current] = dataclasses.replace(out[current], sync_eta_s=eta)
    return out


def parse_drbdsetup_json(text: str) -> dict[str, DrbdResource]:
    """DRBD 9's `drbdsetup status --json` (two-node: first connection and peer device)."""
    out: dict[str, DrbdResource] = {}
    for res in json.loads(text or "[]"):
        devices = res.get("devices", [])
        conns = res.get("connections", [])
        conn = conns[0] if conns else {}
        peer_devices = conn.get("peer_devices", [])
        peer = peer_devices[0] if peer_devices else {}
        out[res["name"]] = DrbdResource(
            res["name"],
            devices[0].get("minor") if devices else None,
            conn.get("connection-state", "StandAlone"),
            res.get("role", "Unknown"),
            conn.get("peer-role", "Unknown"),
            devices[0].get("disk-state", "Diskless") if devices else "Diskless",
            peer.get("peer-disk-state", "DUnknown"),
            peer.get("percent-in-sync"),
        )
    return out


async def resource(node: Remote, name: str) -> DrbdResource | None:
    """One resource as `node` sees it (None: not up there); RemoteError if unreachable."""
    minor = await node.run(["drbdadm", "sh-minor", name], timeout=60)
    proc = await node.run(["cat", "/proc/drbd"], timeout=60)
    if not (minor.ok and proc.ok and minor.stdout.strip().isdigit()):
        return None
    return parse_proc_drbd(proc.stdout, {int(minor.stdout): name}).get(name)


# --- drbdadm questions -------------------------------------------------------------------------


async def attached(node: Remote, name: str) -> bool:
    """The resource is up with its backing disk (not Diskless, not unconfigured)."""
    dstate = await node.run(["drbdadm", "dstate", name], timeout=60)
    return dstate.ok and not dstate.stdout.startswith(("Diskless", "Unconfigured"))


async def has_metadata(node: Remote, name: str) -> bool:
    """Whether the backing disk holds DRBD metadata. False only where drbdmeta positively
    finds none; any other failure raises, so metadata is never overwritten by mistake."""
    dump = await node.run(["drbdadm", "dump-md", name], timeout=60)
    if dump.ok:
        return True
    text = dump.stderr + dump.stdout
    if "No valid meta data found" in text:
        return False
    last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
    raise RemoteError(f"{node.name}: drbdadm dump-md {name}: {last}")


async def down(node: Remote, name: str) -> None:
    """`drbdadm down`, accepting a resource that is down already (a re-run)."""
    result = await node.run(["drbdadm", "down", name], timeout=120)
    if result.ok:
        return
    probe = await node.run(["drbdadm", "dstate", name], timeout=60)
    said = probe.stdout + probe.stderr
    if "Unconfigured" in said or "No such resource" in said:
        return
    detail = result.stderr.strip() or result.stdout.strip() or f"exit {result.returncode}"
    raise RemoteError(f"{node.name}: drbdadm down {name} failed: {detail.splitlines()[-1]}")


# --- runtime options: what `drbdadm adjust` would change ---------------------------------------

# What a drill may change at runtime (the resync rate of node-crash-during-resync): an adjust
# that would only reset these restores the configured settings and nothing else.
OPTION_COMMANDS = frozenset({"disk-options", "net-options", "resource-options"})


def parse_adjust_dry_run(text: str) -> list[str]:
    """The drbdsetup subcommands `drbdadm -d adjust` printed, in order (`drbdmeta` and
    anything else that is not a drbdsetup call count as "other")."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        tool = words[0].rsplit("/", 1)[-1]
        out.append(words[1] if tool.startswith("drbdsetup") and len(words) > 1 else "other")
    return out


async def pending_adjust(node: Remote, name: str) -> list[str] | None:
    """What `drbdadm adjust NAME` would run on `node` (subcommand names only: the dry run
    prints net options, the shared secret among them); None if drbdadm refuses (no such
    resource there)."""
    result = await node.run(["drbdadm", "-d", "adjust", name], timeout=60)
    return parse_adjust_dry_run(result.stdout) if result.ok else None

