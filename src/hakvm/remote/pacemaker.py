"""Pacemaker, the one place hakvm talks to it: every `crm_*` and `cibadmin` command, with one
timeout policy, and the one parser of `crm_mon --output-as=xml` (Pacemaker's own
machine-readable cluster state).

Timeouts: a read (crm_mon, cibadmin -Q, crm_attribute --query, crm_diff) gets READ_S, a
change or a simulation CHANGE_S (a loaded TCG lab node needed over a minute for some);
`crm_resource --wait` gets the bound it is asked for plus READ_S. Failures: a node that
cannot be reached raises RemoteError (from the connection); a Pacemaker tool that answers
with an error raises PacemakerError (a RemoteError too), so a caller that polls can tell "ask
again" from "the connection is gone".
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from lxml import etree

from hakvm.locks import RUN_ID
from hakvm.remote.connection import Remote, RemoteError, Result

READ_S = 90.0
CHANGE_S = 180.0

CRM_MON_ARGV = ("crm_mon", "--output-as=xml", "-1")
SIMULATE_ARGV = ("crm_simulate", "--simulate", "--xml-pipe")
# Where Pacemaker keeps the CIB between runs: cib.xml (with its digest, cib.xml.sig) and the
# numbered backups of earlier versions (cib-N.raw and .sig, cib.last).
CIB_DIR = "/var/lib/pacemaker/cib"
# Where a CIB patch is staged on the node (tmpfs, root only): a directory of this run's own
# (two runs never patch with each other's files), removed once the patch is done.
SCRATCH = f"/run/hakvm/{RUN_ID}"
LIVE = f"{SCRATCH}/cib-live.xml"
DESIRED = f"{SCRATCH}/cib-desired.xml"
PATCH = f"{SCRATCH}/cib.patch"


class PacemakerError(RemoteError):
    """A Pacemaker tool answered, but with an error or nothing usable (one line)."""


# --- crm_mon ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeState:
    name: str
    online: bool
    standby: bool
    unclean: bool
    maintenance: bool
    is_dc: bool


@dataclass
class ResourceState:
    id: str
    agent: str
    active_on: list[str] = field(default_factory=list)
    promoted_on: list[str] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)  # node -> role
    failed: bool = False
    managed: bool = True
    role: str = "Stopped"
    pending: str = ""  # an operation in flight ("Starting", "Migrating", ...)

    @property
    def running_on(self) -> list[str]:
        """Nodes where it is settled and running: active with no operation in flight."""
        return [] if self.pending else list(self.active_on)


@dataclass(frozen=True)
class Failure:
    resource: str
    node: str
    task: str
    exitreason: str
    status: str

    def describe(self) -> str:
        reason = f": {self.exitreason}" if self.exitreason else ""
        return f"{self.resource} {self.task} on {self.node} {self.status}{reason}"


@dataclass(frozen=True)
class FenceEvent:
    action: str
    target: str
    delegate: str
    status: str
    completed: str


@dataclass
class ClusterState:
    dc: str | None = None
    quorate: bool = False
    stonith_enabled: bool = True
    no_quorum_policy: str = ""
    maintenance_mode: bool = False
    nodes: dict[str, NodeState] = field(default_factory=dict)
    resources: dict[str, ResourceState] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    fencing: list[FenceEvent] = field(default_factory=list)
    # Transient and permanent node attributes, as crm_mon lists them: node -> name -> value.
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)

    def active_on(self, rid: str) -> list[str]:
        """Where a resource is active (settled or not); [] when unknown or stopped."""
        res = self.resources.get(rid)
        return list(res.active_on) if res else []

    def placement(self, vms: Iterable[str]) -> dict[str, list[str]]:
        """VM -> the nodes where it runs settled (no operation in flight)."""
        return {vm: self.resources[vm].running_on if vm in self.resources else [] for vm in vms}

    def running_on_members(self, rid: str) -> list[str]:
        """Where a resource runs settled, on nodes online and clean only: a lost node's
        resources stay "Started node02 (UNCLEAN)" until it is fenced."""
        res = self.resources.get(rid)
        return [
            n for n in (res.running_on if res else [])
            if n in self.nodes and self.nodes[n].online and not self.nodes[n].unclean
        ]  # fmt: skip


def _true(value: str | None) -> bool:
    return value == "true"


def _add_resource(state: ClusterState, el: etree._Element, key: str | None = None) -> None:
    rid = key or el.get("id") or ""
    res = state.resources.setdefault(rid, ResourceState(rid, el.get("resource_agent", "")))
    res.failed = res.failed or _true(el.get("failed"))
    res.managed = res.managed and el.get("managed", "true") == "true"
    role = el.get("role", "Stopped")
    if el.get("pending"):
        res.pending = el.get("pending", "")
    elif role in ("Starting", "Stopping", "Migrating", "Promoting", "Demoting"):
        res.pending = role
    for node in el.findall("node"):
        name = node.get("name", "")
        if _true(el.get("active")):
            if name not in res.active_on:
                res.active_on.append(name)
            res.roles[name] = role
            if role in ("Promoted", "Master"):
                res.promoted_on.append(name)
    if res.active_on:
        res.role = "Promoted" if res.promoted_on else "Started"


def parse_crm_mon(text: str) -> ClusterState:
    """ValueError if `text` is not crm_mon's XML (a truncated answer, say)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(text.encode(), parser)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"crm_mon output is not XML: {exc}") from None
    state = ClusterState()
    dc = root.find("summary/current_dc")
    if dc is not None and _true(dc.get("present")):
        state.dc = dc.get("name")
        state.quorate = _true(dc.get("with_quorum"))
    options = root.find("summary/cluster_options")
    if options is not None:
        state.stonith_enabled = _true(options.get("stonith-enabled"))
        state.no_quorum_policy = options.get("no-quorum-policy", "")
        state.maintenance_mode = _true(options.get("maintenance-mode"))
    for node in root.findall("nodes/node"):
        name = node.get("name", "")
        state.nodes[name] = NodeState(
            name,
            _true(node.get("online")),
            _true(node.get("standby")),
            _true(node.get("unclean")),
            _true(node.get("maintenance")),
            _true(node.get("is_dc")),
        )
    resources = root.find("resources")
    for el in resources if resources is not None else []:
        if el.tag == "resource":
            _add_resource(state, el)
        elif el.tag in ("clone", "group", "bundle"):
            clone_id = el.get("id", "")
            for child in el.iter("resource"):
                _add_resource(state, child, clone_id)
                _add_resource(state, child)
    for failure in root.findall("failures/failure"):
        op_key = failure.get("op_key", "")
        task = failure.get("task", "")
        resource = op_key.rsplit("_", 2)[0] if op_key.count("_") >= 2 else op_key
        state.failures.append(
            Failure(
                resource,
                failure.get("node", ""),
                task,
                failure.get("exitreason", ""),
                failure.get("exitstatus", failure.get("status", "")),
            )
        )
    for node in root.findall("node_attributes/node"):
        state.attributes[node.get("name", "")] = {
            attr.get("name", ""): attr.get("value", "") for attr in node.findall("attribute")
        }
    for event in root.findall("fence_history/fence_event"):
        state.fencing.append(
            FenceEvent(
                event.get("action", ""),
                event.get("target", ""),
                event.get("delegate", ""),
                event.get("status", ""),
                event.get("completed", ""),
            )
        )
    return state


def _last_line(result: Result) -> str:
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"


async def cluster_state(node: Remote) -> ClusterState:
    """Pacemaker's state as `node` sees it."""
    result = await node.run(list(CRM_MON_ARGV), timeout=READ_S)
    if not result.ok:
        raise PacemakerError(f"{node.name}: crm_mon failed: {_last_line(result)}")
    try:
        return parse_crm_mon(result.stdout)
    except ValueError as exc:
        raise PacemakerError(f"{node.name}: {exc}") from None


def batch_commands() -> list[tuple[str, list[str]]]:
    """The facts batch's Pacemaker entries: the live CIB and crm_mon, only where Pacemaker
    runs (the CIB tools would wait for a daemon that is not there), and the CIB on disk,
    which is there whether Pacemaker runs or not."""
    running = "systemctl -q is-active pacemaker && "
    return [
        ("cib", ["sh", "-c", running + "cibadmin -Q --local"]),
        ("crm_mon", ["sh", "-c", running + " ".join(CRM_MON_ARGV)]),
        ("cib_disk", ["cat", f"{CIB_DIR}/cib.xml"]),
    ]


def status_command() -> tuple[str, list[str]]:
    """The status probe's Pacemaker entry."""
    return ("crm_mon", list(CRM_MON_ARGV))


# --- node attributes, standby, moves ---------------------------------------------------------


async def node_attribute(node: Remote, target: str, name: str) -> str | None:
    """A transient node attribute's value, None when unset."""
    argv = ["crm_attribute", "--node", target, "--lifetime", "reboot", "--name", name]
    result = await node.run([*argv, "--query", "--quiet"], timeout=READ_S)
    value = result.stdout.strip()
    return value if result.ok and value else None


async def set_standby(node: Remote, target: str, on: bool) -> None:
    argv = ["crm_attribute", "--node", target, "--name", "standby"]
    await node.run([*argv, "--update", "on" if on else "off"], check=True, timeout=CHANGE_S)


async def move(node: Remote, rid: str, target: str) -> None:
    """A temporary preference for `target` (crm_resource --move); `clear` drops it."""
    argv = ["crm_resource", "--resource", rid, "--move", "--node", target]
    await node.run(argv, check=True, timeout=CHANGE_S)


async def clear(node: Remote, rid: str) -> None:
    await node.run(["crm_resource", "--resource", rid, "--clear"], timeout=CHANGE_S)


async def set_stopped(node: Remote, rid: str) -> None:
    """target-role Stopped: Pacemaker stops it, in constraint order."""
    await node.run(
        ["crm_resource", "--resource", rid, "--meta", "--set-parameter", "target-role",
         "--parameter-value", "Stopped"],
        check=True, timeout=CHANGE_S,
    )  # fmt: skip


async def wait_idle(node: Remote, timeout: float) -> bool:
    """True once the cluster has no action pending or running (crm_resource --wait)."""
    argv = ["crm_resource", "--wait", f"--timeout={int(timeout)}s"]
    return (await node.run(argv, timeout=timeout + READ_S)).ok


async def cleanup(node: Remote, rid: str | None = None, *, on: str | None = None) -> None:
    """Forget failed actions (of one resource, or all; on one node, or all); Pacemaker
    probes again."""
    argv = ["crm_resource", "--cleanup", *(["--resource", rid] if rid else [])]
    await node.run([*argv, *(["--node", on] if on else [])], timeout=CHANGE_S)


async def clear_fence_history(node: Remote, target: str) -> None:
    """Forget the fencing history of `target` (a replaced node's old failures)."""
    argv = ["stonith_admin", "--history", target, "--cleanup"]
    await node.run(argv, timeout=CHANGE_S)


POWER_ON = "on"  # the fencing action of unfencing (stonith_admin --unfence): not a fencing


async def power_on(node: Remote, target: str, timeout_s: int) -> None:
    """Power `target` on through its fence device (the fencer runs the agent's "on", as
    for unfencing): how a node fenced with stonith-action=off comes back."""
    argv = ["stonith_admin", "--unfence", target, f"--timeout={timeout_s}"]
    await node.run(argv, check=True, timeout=timeout_s + READ_S)


# --- what ran: the operation history in the CIB status -------------------------------------------

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def last_operations(status: str, resources: Iterable[str]) -> dict[tuple[str, str], str]:
    """(node, resource) -> call-id of the resource's last non-recurring operation there (its
    `_last_0` entry in the CIB status): a stop, start or migration changes it, a monitor
    does not. Clone instances (vm-a_drbd:0) count as their resource."""
    wanted = set(resources)
    root = etree.fromstring(status.encode(), _PARSER)
    found: dict[tuple[str, str], str] = {}
    for state in root.iter("node_state"):
        for rsc in state.iter("lrm_resource"):
            base = rsc.get("id", "").split(":")[0]
            if base not in wanted:
                continue
            for op in rsc.iter("lrm_rsc_op"):
                if op.get("id", "").endswith("_last_0"):
                    found[(state.get("uname", ""), base)] = op.get("call-id", "")
    return found


async def operation_history(node: Remote, resources: Iterable[str]) -> dict[tuple[str, str], str]:
    """`last_operations` of the live CIB status, as `node` sees it."""
    result = await node.run(["cibadmin", "-Q", "-o", "status"], check=True, timeout=READ_S)
    try:
        return last_operations(result.stdout, resources)
    except etree.XMLSyntaxError as exc:
        raise PacemakerError(f"{node.name}: the CIB status is not XML: {exc}") from None


# --- the CIB ---------------------------------------------------------------------------------


async def live_cib(node: Remote) -> str:
    return (await node.run(["cibadmin", "-Q"], check=True, timeout=READ_S)).stdout


async def patch_cib(node: Remote, live: str, desired: str) -> bool:
    """Move the CIB from `live` to `desired`: a `crm_diff` patch, checked by `crm_verify`, in
    one `cibadmin --patch`. Computed against the CIB as read, so a concurrent change makes it
    fail instead of being overwritten: False then (re-read and try again)."""
    try:
        await node.write_file(LIVE, live.encode(), 0o600)
        await node.write_file(DESIRED, desired.encode(), 0o600)
        await node.run(["crm_verify", "--xml-file", DESIRED], check=True, timeout=CHANGE_S)
        diff = await node.run(
            ["crm_diff", "--original", LIVE, "--new", DESIRED, "--no-version"], timeout=READ_S
        )
        if diff.returncode not in (0, 1):
            raise PacemakerError(f"{node.name}: crm_diff failed: {diff.stderr.strip()}")
        if diff.returncode == 0:
            return True  # nothing to change
        await node.write_file(PATCH, diff.stdout.encode(), 0o600)
        patched = await node.run(["cibadmin", "--patch", "--xml-file", PATCH], timeout=CHANGE_S)
        return patched.ok
    finally:
        with contextlib.suppress(RemoteError):
            await node.run(["rm", "-rf", "--", SCRATCH], timeout=READ_S)


Sleep = Callable[[float], Awaitable[None]]
CIB_ATTEMPTS = 5


async def change_cib(
    node: Remote,
    wanted: Callable[[str], str | None],
    *,
    what: str,
    sleep: Sleep = asyncio.sleep,
) -> bool:
    """Read the live CIB, let `wanted` compute the CIB it should be (None: nothing to do),
    patch; when the CIB moved under the patch, re-read and try again. True if a patch was
    applied, False if there was nothing to do; PacemakerError after CIB_ATTEMPTS tries."""
    for _attempt in range(CIB_ATTEMPTS):
        live = await live_cib(node)
        desired = wanted(live)
        if desired is None:
            return False
        if await patch_cib(node, live, desired):
            return True
        await sleep(2)  # the CIB moved under us: re-read and re-diff
    raise PacemakerError(f"{node.name}: {what} did not apply after {CIB_ATTEMPTS} attempts")


# DRBD's crm-fence-peer handler keeps a lost peer from being promoted with a constraint of
# this id prefix on the promotable clone; crm-unfence-peer removes it after a resync.
FENCE_CONSTRAINT_PREFIX = "drbd-fence-by-handler-"


def without_fence_constraints(cib: str, clones: Iterable[str]) -> str | None:
    """The CIB without the DRBD handler's constraints on `clones`; None if it has none."""
    root = etree.fromstring(cib.encode(), _PARSER)
    wanted = set(clones)
    gone = [
        el
        for el in root.iter("rsc_location")
        if el.get("id", "").startswith(FENCE_CONSTRAINT_PREFIX) and el.get("rsc") in wanted
    ]
    for el in gone:
        parent = el.getparent()
        if parent is not None:
            parent.remove(el)
    return etree.tostring(root).decode() if gone else None


async def remove_fence_constraints(node: Remote, clones: Iterable[str]) -> bool:
    """Lift what crm-unfence-peer would have lifted (once both sides are UpToDate again);
    True if there was something to remove."""
    names = list(clones)
    return await change_cib(
        node, lambda live: without_fence_constraints(live, names), what="lifting DRBD fencing"
    )


# --- what Pacemaker would do: crm_simulate ----------------------------------------------------

# "  * Restart    vm-a    ( node01 )  due to resource definition change"
_ACTION_RE = re.compile(r"^\s+\*\s+(?P<action>[A-Z][a-z]+)\s+(?P<rest>.+?)\s*$")
# Actions that interrupt or move a running resource (Start/Promote of new things are expected).
DISRUPTIVE = frozenset({"Restart", "Stop", "Recover", "Move", "Migrate", "Demote", "Fence"})


def transition_summary(output: str) -> list[str]:
    """The scheduler's planned actions, one per line, whitespace collapsed."""
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("Transition Summary"))
    except StopIteration:
        return []
    actions = []
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        match = _ACTION_RE.match(line)
        if match is None:
            break  # the next section ("Executing Cluster Transition:")
        actions.append(" ".join(f"{match['action']} {match['rest']}".split()))
    return actions


def disruptive(actions: Sequence[str]) -> list[str]:
    return [a for a in actions if a.split(" ", 1)[0] in DISRUPTIVE]


async def simulate(node: Remote, cib_with_status: str) -> list[str] | None:
    """The transition Pacemaker's scheduler computes for this CIB (configuration plus the
    live status section), run on a node (the machine running hakvm may have no Pacemaker)
    reading the CIB from stdin; None if the simulation failed."""
    try:
        result = await node.run(
            list(SIMULATE_ARGV), stdin=cib_with_status.encode(), timeout=CHANGE_S
        )
    except RemoteError:
        return None
    if not result.ok:
        return None
    return transition_summary(result.stdout)
