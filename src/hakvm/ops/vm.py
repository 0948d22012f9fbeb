"""`hakvm vm list | add | remove`: one VM at a time, leaving every other VM as it is.

The spec file is edited as text: the new entry is inserted after the last VM (in that entry's
style and indentation), a removed entry's own lines are cut, and every other byte of the file
(comments, blank lines, key order, quoting) stays as it was. A YAML round-trip dumper cannot
promise that: ruamel.yaml attaches a comment to the node before it, so deleting a VM there
also deletes the comment above the next VM, or one below the list. Each edit is checked
before it is written: the edited text must load to exactly the old data with that one VM
added or removed, and pass the whole-spec validator; then it replaces the file atomically.

`remove` stops the VM through Pacemaker, deletes its CIB elements with the same code apply
uses for VMs gone from the spec (`cib_merge.without_vm`), brings DRBD down, removes hakvm's
files for it on both nodes and, only when asked, its logical volumes. Every step looks
before it acts, so an interrupted remove finishes when run again; the spec entry goes last,
and a name no longer in the spec is still cleaned up while hakvm's traces of it remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hakvm.deploy import cib_merge
from hakvm.errors import InputError, StateError
from hakvm.ops.status import DrbdStatus, StatusReport
from hakvm.remote import drbd, pacemaker
from hakvm.remote.connection import Remote, RemoteError
from hakvm.remote.pacemaker import ClusterState
from hakvm.remote.session import Session
from hakvm.render.drbd import resource_path
from hakvm.render.libvirt import domain_path
from hakvm.spec.loader import SpecLoadError, load_spec_file, load_spec_text
from hakvm.spec.models import ClusterSpec, Node, is_valid_name
from hakvm.spec.validate import validate_loaded

POLL_S = 3  # crm_mon costs seconds of CPU on a slow node: poll gently
# After the VM's own stop: the filesystem's stop (60 s), DRBD's demote (90 s) and stop (100 s),
# as render.cib sets them; a stop that fails gets the node fenced, which stonith-timeout bounds.
CLUSTER_STOP_S = 60 + 90 + 100
Progress = Callable[[str], None]
Sleep = Callable[[float], Awaitable[None]]


class VmInputError(InputError):
    """Bad input: no such VM, a name that exists, a flag that cannot apply (exit 2)."""


class VmStateError(StateError):
    """The cluster is not in a state where the command may run (exit 3)."""


class SpecEditError(InputError):
    """The edited spec would be invalid or the file cannot be edited safely; nothing was
    written. `lines` are the validator's problems, one line each."""

    def __init__(self, message: str, lines: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.lines = list(lines)


def _noop(_: str) -> None:
    return None


# --- list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VmRow:
    name: str
    vcpus: int
    memory: int
    disk_size: int
    disk_mode: str
    preferred_node: str | None
    autostart: bool
    state: str
    running_on: list[str]
    drbd: list[DrbdStatus]

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "vcpus": self.vcpus,
            "memory_bytes": self.memory,
            "disk_bytes": self.disk_size,
            "disk_mode": self.disk_mode,
            "preferred_node": self.preferred_node,
            "autostart": self.autostart,
            "state": self.state,
            "running_on": self.running_on,
            "drbd": [d.model_dump() for d in self.drbd],
        }


def vm_rows(spec: ClusterSpec, report: StatusReport) -> list[VmRow]:
    """Every spec VM with its live state (`unknown` where the report has none)."""
    live = {v.name: v for v in report.vms}
    rows = []
    for vm in spec.vms:
        seen = live.get(vm.name)
        rows.append(
            VmRow(
                name=vm.name,
                vcpus=vm.vcpus,
                memory=vm.memory,
                disk_size=vm.disk.size,
                disk_mode=vm.disk.mode.value,
                preferred_node=vm.preferred_node,
                autostart=vm.autostart,
                state=seen.state if seen else "unknown",
                running_on=list(seen.running_on) if seen else [],
                drbd=list(seen.drbd) if seen else [],
            )
        )
    return rows


# --- the spec file -----------------------------------------------------------------------------


def new_entry(
    name: str,
    memory: str,
    disk: str,
    *,
    vcpus: int = 1,
    preferred_node: str | None = None,
    bridges: Sequence[str] = (),
    mode: str | None = None,
    autostart: bool = True,
    force_stop: bool = False,
) -> dict[str, Any]:
    """A VM entry as the spec spells it; sizes stay as typed (the validator judges them)."""
    entry: dict[str, Any] = {"name": name, "vcpus": vcpus, "memory": memory, "disk": {"size": disk}}
    if mode is not None:
        entry["disk"]["mode"] = mode
    if preferred_node is not None:
        entry["preferred_node"] = preferred_node
    if bridges:
        entry["networks"] = [{"bridge": b} for b in bridges]
    if not autostart:
        entry["autostart"] = False
    if force_stop:
        entry["force_stop"] = True
    return entry


def _flow(value: object) -> str:
    """One line of YAML flow style; safe_dump quotes whatever would not read back as given."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=2**31 - 1)
    return text.removesuffix("\n...\n").rstrip("\n")


def _entry_lines(entry: dict[str, Any], dash_col: int, key_col: int, flow: bool) -> list[str]:
    dash = " " * dash_col + "- "
    if flow:
        return [dash + _flow(entry)]
    # Block keys with one-line values: no nested indentation to match the file's.
    pairs = [_flow({key: value})[1:-1] for key, value in entry.items()]
    return [dash + pairs[0], *(" " * key_col + pair for pair in pairs[1:])]


def _vms_pair(text: str) -> tuple[yaml.Node, yaml.Node] | None:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        raise SpecEditError("the spec's top level is not a mapping")
    for key, value in root.value:
        if key.value == "vms":
            return key, value
    return None


def _content_end(node: yaml.Node) -> int:
    """Where a node's text ends: a block collection's own end mark lies past the comments
    and blank lines that follow it, so take its last value's."""
    block = isinstance(node, yaml.MappingNode | yaml.SequenceNode) and not node.flow_style
    if block and node.value:
        last = node.value[-1]
        return _content_end(last[1] if isinstance(node, yaml.MappingNode) else last)
    return int(node.end_mark.index)


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _line_end(text: str, pos: int) -> int:
    """Index of the end-of-line after `pos` (its '\\r' for CRLF), or the end of the text."""
    if pos > 0 and text[pos - 1] == "\n":
        pos -= 1  # a block scalar's end mark is past its newline
    end = text.find("\n", pos)
    if end == -1:
        return len(text)
    return end - 1 if end > 0 and text[end - 1] == "\r" else end


def _dash_index(text: str, item: yaml.Node) -> int:
    pos = int(item.start_mark.index) - 1
    while pos >= 0 and text[pos] in " \t\r\n":
        pos -= 1
    if pos < 0 or text[pos] != "-" or text[_line_start(text, pos) : pos].strip():
        raise SpecEditError("cannot find the '-' of a VM entry; edit the file by hand")
    return pos


def spec_with_vm(text: str, entry: dict[str, Any]) -> str:
    """`text` with `entry` appended to `vms`, everything else byte for byte."""
    nl = "\r\n" if "\r\n" in text else "\n"
    pair = _vms_pair(text)
    if pair is None:
        # No VMs yet: a block list at the end of the file.
        lines = ["vms:", *_entry_lines(entry, 2, 4, flow=False)]
        sep = "" if not text or text.endswith("\n") else nl
        return text + sep + nl.join(lines) + nl
    _, seq = pair
    if not isinstance(seq, yaml.SequenceNode):
        raise SpecEditError("vms is not a list; edit the file by hand")
    if seq.flow_style:
        if not seq.value:
            at = int(seq.start_mark.index) + 1  # just inside '['
            return text[:at] + _flow(entry) + text[at:]
        at = int(seq.value[-1].end_mark.index)
        return text[:at] + ", " + _flow(entry) + text[at:]
    last = seq.value[-1]
    dash = _dash_index(text, last)
    dash_col = dash - _line_start(text, dash)
    block = isinstance(last, yaml.MappingNode) and not last.flow_style
    key_col = int(last.start_mark.column) if block else dash_col + 2
    at = _line_end(text, _content_end(last))
    return text[:at] + nl + nl.join(_entry_lines(entry, dash_col, key_col, not block)) + text[at:]


def spec_without_vm(text: str, name: str) -> str:
    """`text` without the entry of VM `name`: its own lines (with their inline comments)
    are cut; comment lines around it stay, as they may well be about something else."""
    key, seq = _vms_pair(text) or (None, None)
    items = seq.value if isinstance(seq, yaml.SequenceNode) else []
    index = next((i for i, item in enumerate(items) if _item_name(item) == name), None)
    if key is None or not isinstance(seq, yaml.SequenceNode) or index is None:
        raise SpecEditError(f"vms: no VM named {name!r}")
    item = items[index]
    if seq.flow_style:
        start, end = int(item.start_mark.index), int(item.end_mark.index)
        if index + 1 < len(items):
            end = int(items[index + 1].start_mark.index)
        elif index > 0:
            start = int(items[index - 1].end_mark.index)
        return text[:start] + text[end:]
    start = _line_start(text, _dash_index(text, item))
    end = _line_end(text, _content_end(item))
    end = min(len(text), end + (2 if text[end : end + 2] == "\r\n" else 1))
    out = text[:start] + text[end:]
    if len(items) == 1:
        # `vms:` with nothing under it would read as null: say "no VMs" instead.
        colon = text.index(":", int(key.end_mark.index))
        out = out[: colon + 1] + " []" + out[colon + 1 :]
    return out


def _item_name(item: yaml.Node) -> object:
    if isinstance(item, yaml.MappingNode):
        for key, value in item.value:
            if key.value == "name" and isinstance(value, yaml.ScalarNode):
                return value.value
    return None


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        loaded = load_spec_file(path)
    except SpecLoadError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise SpecEditError(f"{where}: {exc}") from None
    return path.read_text(encoding="utf-8"), loaded.data


def _vm_names(data: dict[str, Any]) -> list[object]:
    vms = data.get("vms") or []
    return [v.get("name") for v in vms if isinstance(v, dict)] if isinstance(vms, list) else []


def _commit(path: Path, new_text: str, expected: dict[str, Any]) -> ClusterSpec:
    """Write `new_text` if it loads to `expected` and the whole spec validates."""
    try:
        loaded = load_spec_text(new_text, path)
    except SpecLoadError as exc:
        raise SpecEditError(f"{path}: the edit would not parse ({exc}); edit it by hand") from None
    if loaded.data != expected:
        raise SpecEditError(f"{path}: cannot edit this file's layout safely; edit it by hand")
    report = validate_loaded(loaded, str(path))
    if not report.ok or report.spec is None:
        lines = [p.format(str(path)) for p in report.errors]
        raise SpecEditError(
            f"{path}: {len(lines)} error(s) with that change; the file was not changed", lines
        )
    write_atomic(path, new_text)
    return report.spec


def add_to_spec(path: Path, entry: dict[str, Any]) -> ClusterSpec:
    """Append `entry` to the spec file; raise SpecEditError (file untouched) on any problem."""
    text, data = _read(path)
    if entry["name"] in _vm_names(data):
        raise SpecEditError(f"{path}: vms: a VM named {entry['name']!r} already exists")
    expected = {**data, "vms": [*(data.get("vms") or []), entry]}
    return _commit(path, spec_with_vm(text, entry), expected)


def remove_from_spec(path: Path, name: str) -> ClusterSpec:
    """Drop VM `name` from the spec file; raise SpecEditError (file untouched) otherwise."""
    text, data = _read(path)
    if name not in _vm_names(data):
        raise SpecEditError(f"{path}: vms: no VM named {name!r}")
    remaining = [v for v in data["vms"] if not (isinstance(v, dict) and v.get("name") == name)]
    return _commit(path, spec_without_vm(text, name), {**data, "vms": remaining})


def write_atomic(path: Path, text: str) -> None:
    """Replace the file by rename (never half-written), keeping its mode and, where the
    user may, its owner; a symlinked spec is written through the link."""
    target = path.resolve()
    old = target.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, stat.S_IMODE(old.st_mode))
        with contextlib.suppress(PermissionError):
            os.chown(tmp, old.st_uid, old.st_gid)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --- remove: steps on the nodes (each takes connection-like objects) -------------------------


@dataclass
class RemoveResult:
    vm: str
    stopped: list[str] = field(default_factory=list)  # resources set to target-role Stopped
    cib_removed: list[str] = field(default_factory=list)  # CIB element ids deleted
    files_removed: dict[str, list[str]] = field(default_factory=dict)  # node -> paths
    lvs_removed: list[str] = field(default_factory=list)  # "node: vg/lv"
    lvs_kept: list[str] = field(default_factory=list)
    spec_updated: bool = False


def _busy(state: ClusterState, rid: str) -> bool:
    """Active somewhere, or an operation on it still in flight."""
    res = state.resources.get(rid)
    return res is not None and bool(res.active_on or res.pending)


async def existing_files(conn: Remote, name: str) -> list[str]:
    paths = [resource_path(name), domain_path(name)]
    return [p for p in paths if (await conn.run(["test", "-e", p])).ok]


async def stop_resources(conn: Remote, resource_ids: Sequence[str]) -> None:
    """target-role Stopped on each, constraints still in place: Pacemaker stops the VM, then
    unmounts and demotes in order (deleting running resources would stop them unordered)."""
    for rid in resource_ids:
        await pacemaker.set_stopped(conn, rid)


async def wait_stopped(
    conn: Remote,
    resource_ids: Sequence[str],
    timeout: float,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    deadline = clock() + timeout
    while True:
        state = await pacemaker.cluster_state(conn)
        active = [rid for rid in resource_ids if _busy(state, rid)]
        if not active:
            return
        if clock() > deadline:
            raise RemoteError(
                f"{conn.name}: {', '.join(active)} still active after {timeout:.0f}s "
                "(see hakvm status; run the remove again once it is stopped)"
            )
        await sleep(POLL_S)


async def delete_cib_elements(conn: Remote, name: str, sleep: Sleep = asyncio.sleep) -> list[str]:
    """Patch the VM's elements out of the live CIB: one atomic `cibadmin --patch`, computed
    against the CIB as read, so a concurrent change makes it fail and be recomputed."""
    removed: list[str] = []

    def without(live: str) -> str | None:
        desired, removed[:] = cib_merge.without_vm(live, name)
        return desired if removed else None

    what = f"the CIB patch removing {name}"
    return removed if await pacemaker.change_cib(conn, without, what=what, sleep=sleep) else []


def lv_name(node: Node, name: str) -> str:
    return f"{node.storage.volume_group}/{name}"


async def remove_lv(conn: Remote, node: Node, name: str) -> bool:
    """lvremove the VM's volume if it is there; False if it is gone already."""
    lv = lv_name(node, name)
    found = await conn.run(["lvs", "--noheadings", "-o", "lv_name", lv], timeout=60)
    if not found.ok or not found.stdout.strip():
        return False
    await conn.run(["lvremove", "-y", lv], check=True, timeout=300)
    return True


async def clean_node(
    conn: Remote, node: Node, name: str, files: Sequence[str], delete_storage: bool
) -> bool:
    """DRBD down, hakvm's files gone, and the LV if asked; True if the LV was removed."""
    if resource_path(name) in files:
        # drbdadm needs the resource file: down before rm, so a re-run never lacks it.
        await drbd.down(conn, name)
    if files:
        await conn.run(["rm", "-f", *files], check=True)
    return delete_storage and await remove_lv(conn, node, name)


def stop_timeout(spec: ClusterSpec) -> float:
    timing = spec.cluster.timing
    return timing.vm_stop_timeout_s + CLUSTER_STOP_S + timing.stonith_timeout_s


async def teardown(
    conns: Sequence[Remote],
    spec: ClusterSpec,
    name: str,
    *,
    force: bool = False,
    delete_storage: bool = False,
    progress: Progress = _noop,
    sleep: Sleep = asyncio.sleep,
) -> RemoveResult:
    """Every cluster-side step of `vm remove`, in order; `conns` in the spec's node order."""
    _check_name(spec, name, delete_storage)
    first = conns[0]
    state = await pacemaker.cluster_state(first)
    cib = await pacemaker.live_cib(first)
    resources = cib_merge.vm_resource_ids(cib, name)
    files = {c.name: await existing_files(c, name) for c in conns}
    if name not in {v.name for v in spec.vms} and not resources and not any(files.values()):
        raise VmInputError(f"{name}: not in the spec, and hakvm finds no trace of it on the nodes")
    running = state.active_on(name)
    if (running or _busy(state, name)) and not force:
        # Starting (a recovery in flight) counts as running: refusing only a settled VM let
        # a remove without --force stop one that Pacemaker was restarting (seen on the lab).
        where = f"running on {', '.join(running)}" if running else "being started or moved"
        raise VmStateError(f"{name} is {where}: stop it first or use --force")
    result = RemoveResult(name)
    if resources:
        progress(f"{name}: stopping {', '.join(resources)}")
        await stop_resources(first, resources)
        await wait_stopped(first, resources, stop_timeout(spec), sleep)
        result.stopped = list(resources)
    result.cib_removed = await delete_cib_elements(first, name, sleep)
    if result.cib_removed:
        progress(f"{name}: removed from the CIB: {', '.join(result.cib_removed)}")
    for conn in conns:
        node = spec.node(conn.name)
        if await clean_node(conn, node, name, files[conn.name], delete_storage):
            result.lvs_removed.append(f"{conn.name}: {lv_name(node, name)}")
        elif not delete_storage:
            result.lvs_kept.append(f"{conn.name}: {lv_name(node, name)}")
        result.files_removed[conn.name] = files[conn.name]
    return result


def _check_name(spec: ClusterSpec, name: str, delete_storage: bool) -> None:
    # The name ends up in paths and LV names: only what the spec itself would accept.
    if not is_valid_name(name):
        raise VmInputError(f"{name!r} is not a VM name (lower-case letters, digits, '-')")
    pools = {n.storage.thin_pool for n in spec.nodes}
    if delete_storage and name in pools:
        raise VmInputError(f"{name} is the thin pool's name: refusing to lvremove it")


async def remove_vm(
    spec: ClusterSpec,
    spec_path: Path,
    name: str,
    *,
    force: bool = False,
    delete_storage: bool = False,
    progress: Progress = _noop,
) -> RemoveResult:
    """Tear `name` down on both nodes, then drop it from the spec file (last: a re-run
    after an interruption still finds it there)."""
    async with Session(spec, spec_path) as session:
        result = await teardown(
            await session.connect_all(), spec, name, force=force, delete_storage=delete_storage,
            progress=progress,
        )  # fmt: skip
    if name in {v.name for v in spec.vms}:
        remove_from_spec(spec_path, name)
        result.spec_updated = True
    return result
