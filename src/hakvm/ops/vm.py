"""`hakvm vm list | remove`: one VM at a time, leaving every other VM as it is (the spec
file's edits, for `add` and `remove`, are hakvm.spec.edit's).

`remove` stops the VM through Pacemaker, deletes its CIB elements with the same code apply
uses for VMs gone from the spec (`cib_merge.without_vm`), brings DRBD down, removes hakvm's
files for it on both nodes and, only when asked, its logical volumes. Every step looks
before it acts, so an interrupted remove finishes when run again; the spec entry goes last,
and a name no longer in the spec is still cleaned up while hakvm's traces of it remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

from hakvm.deploy import cib_merge, guards
from hakvm.errors import InputError, StateError
from hakvm.ops.status import DrbdStatus, StatusReport
from hakvm.remote import drbd, pacemaker
from hakvm.remote.connection import Remote, RemoteError
from hakvm.remote.facts import LVS_FIELDS, parse_lvm
from hakvm.remote.pacemaker import ClusterState
from hakvm.remote.session import Session
from hakvm.render.corosync import PATH as COROSYNC_PATH
from hakvm.render.drbd import resource_path
from hakvm.render.libvirt import domain_path
from hakvm.spec.edit import remove_from_spec
from hakvm.spec.models import ClusterSpec, Node, is_valid_name

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


# The lines of a DRBD resource file that say whose LV it names (its header, the resource,
# each host's backing disk), without the rest: its shared secret stays on the node.
RES_PROOF = ["grep", "-E", r"^(# Managed by hakvm|resource |[[:space:]]*(on |disk /|\}))"]


async def _read(conn: Remote, argv: list[str]) -> bytes | None:
    found = await conn.run(argv, timeout=60)
    return found.stdout.encode() if found.ok else None


async def lv_to_tag(conn: Remote, node: Node, cluster: str, name: str) -> list[str] | None:
    """Before --delete-storage changes anything: the VM's LV, if there, must be tagged as this
    cluster's VM, or be an earlier hakvm's (guards.earlier_hakvm): then the lvchange that
    tags it, run while its DRBD resource file still proves it (so a re-run after an
    interruption knows it). Anything else is refused."""
    vg = node.storage.volume_group
    argv = ["lvs", "--reportformat", "json", "--units", "b", "-o", LVS_FIELDS, f"{vg}/{name}"]
    found = await conn.run(argv, timeout=60)
    lv = parse_lvm("", found.stdout)[1].get((vg, name)) if found.ok else None
    if lv is None:
        return None
    res = await _read(conn, [*RES_PROOF, resource_path(name)])
    conf = await _read(conn, ["cat", COROSYNC_PATH])
    owner = guards.lv_owner(lv, conn.name, cluster, res, conf)
    if owner is guards.LvOwner.EARLIER:
        return list(guards.tag_command(lv, cluster).argv)
    if owner is not guards.LvOwner.OURS:
        raise VmStateError(
            f"{conn.name}: logical volume {lv_name(node, name)} is not cluster {cluster}'s VM "
            f"{name}'s ({guards.describe_lv(lv)}): refusing to lvremove it; nothing was changed"
        )
    return None


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
    if delete_storage:  # on both nodes before anything is stopped or removed
        tags = [(c, await lv_to_tag(c, spec.node(c.name), spec.cluster.name, name)) for c in conns]
        for conn, tag in tags:
            if tag is not None:
                await conn.run(tag, check=True, timeout=60)
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
    lock: AbstractAsyncContextManager[object] | None = None,
) -> RemoveResult:
    """Tear `name` down on both nodes, then drop it from the spec file (last: a re-run
    after an interruption still finds it there). `lock` (the node lock) is held from the
    first node contact to the end."""
    _check_name(spec, name, delete_storage)  # bad input before any node is asked
    async with lock or contextlib.nullcontext():
        async with Session(spec, spec_path) as session:
            result = await teardown(
                await session.connect_all(), spec, name, force=force,
                delete_storage=delete_storage, progress=progress,
            )  # fmt: skip
        if name in {v.name for v in spec.vms}:
            remove_from_spec(spec_path, name)
            result.spec_updated = True
    return result
