"""What apply's `Call` steps do on the nodes: the actions that need live feedback (DRBD
connecting, a network change guarded by a rollback timer, a CIB patch against the CIB as
it is at that moment, waiting for Pacemaker).

The planner (phases.py) decides *whether* and *with what*: every argument here is explicit
and comes from the plan. Each action checks before it acts, so an apply interrupted
anywhere converges when run again. Unit tests drive each one against the shared fake node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from hakvm.deploy import cib_merge
from hakvm.deploy.steps import DISABLE, ENABLE, Nodes
from hakvm.locks import RUN_ID
from hakvm.remote import drbd, pacemaker, qnetd
from hakvm.remote.connection import Remote, RemoteError
from hakvm.remote.pacemaker import ClusterState, PacemakerError
from hakvm.remote.quorum import (
    CMAP_QUORUM,
    QDEVICE_TOOL,
    QUORUMTOOL,
    parse_qdevice_state,
    parse_quorumtool,
    runtime_quorum,
)
from hakvm.spec.models import OsFamily

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

FRESH_TAG = "hakvm_fresh"  # set on thin LVs hakvm created; cleared once DRBD skipped the sync
ROLLBACK_SECONDS = 120
ROLLBACK_UNIT = f"hakvm-net-rollback-{RUN_ID}"
POLL_S = 3.0  # crm_mon costs seconds of CPU on a slow node: poll gently


# --- network --------------------------------------------------------------------------------


async def activate_network(
    node: Remote,
    interfaces: Sequence[str],
    os_family: OsFamily,
    probe: Callable[[], Awaitable[None]],
) -> None:
    """(Re)start `interfaces` (in dependency order) with the files already written.

    A transient systemd timer restores the previous files and restarts networking unless it
    is cancelled, which happens only after `probe` proved that a fresh SSH session still
    gets in: a change that cuts the management path undoes itself."""
    unit = ROLLBACK_UNIT  # this run's own: cancelling it never cancels another run's
    await node.run(
        ["systemd-run", f"--unit={unit}", f"--on-active={ROLLBACK_SECONDS}", "--collect",
         "/usr/local/lib/hakvm/net-rollback"],
        check=True,
    )  # fmt: skip
    if os_family is OsFamily.DEBIAN12:
        for name in reversed(interfaces):
            await node.run(["ifdown", "--force", name], timeout=120)
        for name in interfaces:
            await node.run(["ifup", name], check=True, timeout=180)
    else:
        await node.run(["nmcli", "connection", "reload"], check=True)
        for name in interfaces:
            await node.run(["nmcli", "connection", "up", f"hakvm-{name}"], check=True)
    try:
        await probe()
    except RemoteError as exc:
        raise RemoteError(
            f"{node.name}: management path lost after the network change ({exc}); the "
            f"previous configuration is restored within {ROLLBACK_SECONDS}s"
        ) from None
    await node.run(["systemctl", "stop", f"{unit}.timer"], check=True)
    await node.run(["/usr/local/lib/hakvm/net-commit"], check=True)


# --- DRBD -----------------------------------------------------------------------------------


async def drbd_up(node: Remote, resource: str) -> None:
    """Bring `resource` up on `node`. Metadata is created only where drbdmeta positively
    finds none: anything else (metadata an interrupted apply left, an unexpected error) is
    never overwritten."""
    if not await drbd.attached(node, resource) and not await drbd.has_metadata(node, resource):
        await node.run(
            ["drbdadm", "create-md", "--force", resource], check=True, timeout=120,
            stdin=b"yes\n",
        )  # fmt: skip
    await node.run(["drbdadm", "adjust", resource], check=True, timeout=120)


SYNC_TARGET = ("SyncTarget", "PausedSyncT")
SYNC_SOURCE = ("SyncSource", "PausedSyncS")


def sync_direction(new: drbd.DrbdResource | None, peer: drbd.DrbdResource | None) -> str | None:
    """Whether a replaced node's fresh copy joined the right way: None once it is the
    Inconsistent SyncTarget of an UpToDate SyncSource peer, "" while the handshake is still
    on, else what is wrong."""
    if peer is None:
        return "the peer does not report the resource"
    if peer.disk != "UpToDate" or peer.connection in SYNC_TARGET:
        return f"the peer's copy would be overwritten ({peer.connection} {peer.disk})"
    if new is None:
        return ""
    if new.connection in SYNC_SOURCE or new.disk == "UpToDate":
        return f"the new copy would be the source ({new.connection} {new.disk})"
    if new.connection == "StandAlone":
        return "the new node refused the connection (StandAlone: see its kernel log)"
    if new.connection in SYNC_TARGET and new.disk == "Inconsistent":
        return None if peer.connection in SYNC_SOURCE else ""
    return ""


async def join_as_sync_target(
    new: Remote,
    peer: Remote,
    resource: str,
    volume: str,
    *,
    timeout: float = 120,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> None:
    """A replaced node's copy of `resource` joins the peer's (the survivor's) as the target
    of a full resync, never its source. Fresh metadata (refused if any exists), the resync
    paused by this node before it connects (no data moves either way while paused), connected
    with --discard-my-data; then both sides must say Inconsistent/SyncTarget here and
    UpToDate/SyncSource there, or this node disconnects and nothing was synced. The resync
    stays paused: replace-node resumes it once the node is in the cluster."""
    if await drbd.attached(new, resource) or await drbd.has_metadata(new, resource):
        raise RemoteError(
            f"{new.name}: DRBD {resource} already has metadata or is up: not a fresh disk; "
            "refusing to join it to the survivor's"
        )
    await new.run(
        ["drbdadm", "create-md", "--force", resource], check=True, timeout=120, stdin=b"yes\n"
    )
    # `drbdadm attach` alone needs the resource and its minor to exist (8.4: "drbdadm -d
    # attach" runs only drbdmeta and drbdsetup attach; `up` would make them, then connect
    # at once): the node-replacement drill's first lab run failed right here (2026-12-02).
    for make in ("new-resource", "new-minor"):
        await new.run(["drbdadm", make, resource], check=True, timeout=60)
    await new.run(["drbdadm", "attach", resource], check=True, timeout=120)
    await new.run(["drbdadm", "pause-sync", resource], check=True, timeout=60)
    await new.run(["drbdadm", "--", "--discard-my-data", "connect", resource], check=True)
    deadline = clock() + timeout
    while True:
        verdict = sync_direction(
            await drbd.resource(new, resource), await drbd.resource(peer, resource)
        )
        if verdict is None:
            break
        if verdict or clock() > deadline:
            await new.run(["drbdadm", "disconnect", resource], timeout=60)
            why = verdict or f"no SyncTarget/SyncSource pair within {timeout:.0f}s"
            raise RemoteError(
                f"DRBD {resource}: {why}; {new.name} disconnected before any data moved"
            )
        await sleep(1)
    # The new LV is no longer "fresh": it will hold the survivor's data.
    await new.run(["lvchange", "--deltag", FRESH_TAG, volume])


async def wait_connected(
    nodes: Sequence[Remote],
    resource: str,
    timeout: float,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> None:
    deadline = clock() + timeout
    while True:
        states = [await n.run(["drbdadm", "cstate", resource]) for n in nodes]
        if all(s.stdout.strip() in ("Connected", "SyncSource", "SyncTarget") for s in states):
            return
        if clock() > deadline:
            got = ", ".join(
                f"{n.name}: {s.stdout.strip() or s.stderr.strip()}"
                for n, s in zip(nodes, states, strict=True)
            )
            raise RemoteError(f"DRBD {resource} did not connect within {timeout:.0f}s ({got})")
        await sleep(2)


async def initial_sync(
    nodes: Sequence[Remote],
    resource: str,
    volumes: Sequence[str],
    source: Remote,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Decide a new resource's initial sync, on the first node. `volumes[i]` is the backing
    LV (vg/lv) on `nodes[i]`; `source` is where a full sync starts from."""
    # adjust is idempotent: it reconnects a resource that dropped to StandAlone (e.g. its
    # address vanished while the network was being reconfigured).
    for node in nodes:
        await node.run(["drbdadm", "adjust", resource], check=True)
    await wait_connected(nodes, resource, 120, sleep)
    fresh = []
    for node, volume in zip(nodes, volumes, strict=True):
        lv = await node.run(["lvs", "--noheadings", "-o", "lv_tags", volume])
        fresh.append(FRESH_TAG in lv.stdout)
    if all(fresh):
        # Both sides are freshly created thin LVs: they read as zeros, so they are identical
        # and DRBD may skip the initial sync.
        await nodes[0].run(
            ["drbdadm", "--", "--clear-bitmap", "new-current-uuid", resource], check=True
        )
    else:
        # Not provably identical: a full sync from the source, in the background.
        await source.run(["drbdadm", "primary", "--force", resource], check=True)
        await source.run(["drbdadm", "secondary", resource], check=True)
    for node, volume in zip(nodes, volumes, strict=True):
        await node.run(["lvchange", "--deltag", FRESH_TAG, volume])


async def prepare_qcow2(
    nodes: Mapping[str, Remote],
    on: str,
    resource: str,
    *,
    device: str,
    mount_dir: str,
    image: str,
    size: int,
) -> None:
    """XFS on the DRBD `device` and the qcow2 `image` inside it (the recipe's layout), made
    on node `on` while nothing else uses the device; each part only if missing."""
    for name, node in nodes.items():
        role = await node.run(["drbdadm", "role", resource], check=True)
        if role.stdout.strip().startswith("Primary"):
            raise RemoteError(
                f"DRBD {resource} is Primary on {name}: hakvm formats and fills it only while "
                "nothing uses it (demote it, or add the VM's resources with hakvm apply)"
            )
    node = nodes[on]
    await node.run(["drbdadm", "primary", resource], check=True)
    try:
        probe = await node.run(["blkid", "-o", "value", "-s", "TYPE", device])
        if not probe.stdout.strip():
            await node.run(["mkfs.xfs", "-q", device], check=True, timeout=300)
        await node.run(["mkdir", "-p", mount_dir], check=True)
        await node.run(["mount", device, mount_dir], check=True)
        try:
            exists = await node.run(["test", "-e", image])
            if not exists.ok:
                create = ["qemu-img", "create", "-q", "-f", "qcow2", image]
                await node.run([*create, f"{size}"], check=True)
        finally:
            await node.run(["umount", mount_dir], check=True)
    finally:
        await node.run(["drbdadm", "secondary", resource], check=True)


# --- Pacemaker --------------------------------------------------------------------------------


async def wait_cluster(
    node: Remote,
    names: Sequence[str],
    timeout: float = 240,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> None:
    """Until `node` sees every node of `names` online and a DC elected."""
    deadline = clock() + timeout
    while True:
        try:
            state = await pacemaker.cluster_state(node)
        except PacemakerError:
            state = None  # not up yet: ask again
        if state is not None and state.dc and all(
            n in state.nodes and state.nodes[n].online for n in names
        ):
            return
        if clock() > deadline:
            raise RemoteError(
                f"the cluster did not form within {timeout:.0f}s (both nodes online, a DC)"
            )
        await sleep(POLL_S)


async def push_cib(
    node: Remote,
    rendered: str,
    sleep: Sleep = asyncio.sleep,
    *,
    fencing_only: bool = False,
    clock: Clock = time.monotonic,
) -> None:
    """Merge the rendered CIB into the live one and patch it in: fencing first, waited for
    when it changed (resources must never run in a cluster that cannot fence), then
    everything (`fencing_only`: the fence devices and cluster properties alone)."""
    passes = (cib_merge.stonith_ids(rendered), None)
    for only in passes[:1] if fencing_only else passes:
        changed = False

        def wanted(live: str, only: set[str] | None = only) -> str | None:
            nonlocal changed
            desired = cib_merge.desired_cib(live, rendered, only_ids=only)
            same = cib_merge.configuration_text(live) == cib_merge.configuration_text(desired)
            changed = changed or not same
            return None if same else desired

        await pacemaker.change_cib(node, wanted, what="the CIB patch", sleep=sleep)
        if only is not None and changed and not fencing_only:
            await wait_fence_devices(node, cib_merge.fence_targets(rendered), sleep, clock)


FENCE_START_S = 360.0  # stonith-timeout-sized: a device's start runs its agent twice


async def wait_fence_devices(
    node: Remote,
    targets: Mapping[str, str],
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    timeout: float = FENCE_START_S,
) -> None:
    """Until every fence device that has a node to run on (one online besides the node it
    fences) is started, before any resource is pushed: the VMs' starts then do not compete
    with the fence agents' (make demo and CI, 2026-12-02: on a lab node starting everything
    at once, a fence device's start and stop outlasted their timeouts and the node was
    fenced). A device that failed stops the apply: resources never run in a cluster that
    cannot fence."""
    waiting = sorted(targets)

    def started(state: ClusterState) -> bool:
        nonlocal waiting
        online = {name for name, n in state.nodes.items() if n.online}
        waiting = [
            rid for rid, target in sorted(targets.items())
            if online - {target} and not ((r := state.resources.get(rid)) and r.running_on)
        ]  # fmt: skip
        failed = [f for f in state.failures if f.resource in waiting]
        if failed:
            raise RemoteError(
                f"fence device {failed[0].describe()}: fix its BMC access, then "
                f"crm_resource --cleanup --resource {failed[0].resource} and apply again"
            )
        return not waiting

    late = lambda: f"fence device(s) not started after {timeout:.0f}s: {', '.join(waiting)}"  # noqa: E731
    await _until(node, started, late, timeout, sleep=sleep, clock=clock)


async def _until(
    node: Remote,
    done: Callable[[ClusterState], bool],
    late: Callable[[], str],
    timeout: float,
    *,
    sleep: Sleep,
    clock: Clock,
) -> None:
    """Poll `node`'s crm_mon until `done` (which may raise); RemoteError(late()) after
    `timeout` seconds."""
    deadline = clock() + timeout
    while True:
        try:
            state = await pacemaker.cluster_state(node)
        except PacemakerError:
            state = None  # busy or restarting: ask again
        if state is not None and done(state):
            return
        if clock() > deadline:
            raise RemoteError(late())
        await sleep(POLL_S)


async def wait_vms(
    node: Remote,
    vms: Sequence[str],
    timeout: float,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> None:
    """Until Pacemaker runs every VM of `vms`; a failed start is reported once half the
    time has passed (Pacemaker may still recover it elsewhere before that)."""
    deadline = clock() + timeout
    pending = list(vms)

    def running(state: ClusterState) -> bool:
        nonlocal pending
        pending = [vm for vm in vms if not ((r := state.resources.get(vm)) and r.running_on)]
        failed = [f for f in state.failures if f.resource in set(vms)]
        if pending and failed and clock() > deadline - timeout / 2:
            raise RemoteError(f"VM start failed: {failed[0].describe()}")
        return not pending

    late = lambda: f"VMs not running after {timeout:.0f}s: {', '.join(pending)}"  # noqa: E731
    await _until(node, running, late, timeout, sleep=sleep, clock=clock)


# --- the quorum device ----------------------------------------------------------------------------

QDEVICE_VOTE_S = 180.0  # qdevice connects, TLS, heuristics: seconds on a loaded TCG node
QDEVICE = "corosync-qdevice"


async def setup_qdevice_certificates(nodes: Nodes, names: Sequence[str], cluster: str) -> None:
    """crmsh's certificate process (qdevice.py, `init`), without pcsd: the qnetd host's CA
    (made if a standard host has none), a fresh qdevice database trusting it on every node,
    a request for CN=`cluster` on the first node signed by the qnetd CA, imported there and
    carried to the others as PKCS#12. A running corosync-qdevice is restarted to read it."""
    host, ca = await nodes.qnetd()
    ca_text = await qnetd.ensure_ca(host, ca)
    conns = [nodes.connected(name) for name in names]
    for conn in conns:
        await qnetd.init_node(conn, ca_text)
    signed = await qnetd.sign(host, ca, await qnetd.request(conns[0], cluster), cluster)
    bundle = await qnetd.import_signed(conns[0], signed, cluster)
    for conn in conns[1:]:
        await qnetd.import_bundle(conn, bundle)
    for conn in conns:
        await conn.run(["systemctl", "try-restart", QDEVICE], check=True)


async def copy_qdevice_certificates(source: Remote, target: Remote) -> None:
    """`target` (a node replace-node brings back) gets the qdevice database `source` holds:
    the same qnetd CA and cluster certificate with its key; nothing changes on `source`."""
    ca_text, bundle = await qnetd.read_bundle(source)
    await qnetd.init_node(target, ca_text)
    await qnetd.import_bundle(target, bundle)
    await target.run(["systemctl", "try-restart", QDEVICE], check=True)


RELOAD_S = 15.0  # corosync-cfgtool -R returns once the local node reloaded; the peer follows


async def _runtime_device(
    conns: Sequence[Remote], device: bool, sleep: Sleep, clock: Clock = time.monotonic
) -> None:
    """Until every node's running corosync has (or has not) the device, as reloaded."""
    deadline = clock() + RELOAD_S
    for conn in conns:
        while True:
            found = runtime_quorum((await conn.run(CMAP_QUORUM)).stdout)
            if found is not None and found.device == device and found.two_node != device:
                break
            if clock() > deadline:
                want = "the quorum device" if device else "two_node"
                raise RemoteError(f"{conn.name}: corosync did not take {want} on reload")
            await sleep(1)


async def switch_to_qdevice(
    conns: Sequence[Remote],
    host: str,
    port: int,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> None:
    """A running two_node cluster onto the quorum device, quorum kept (docs/qdevice.md):
    both nodes' corosync.conf already hold the device (written by the corosync phase, not
    yet read); both nodes must be members (the reload gives 3 expected votes: alone, a node
    would hold 1 and lose quorum) and reach qnetd. One `corosync-cfgtool -R` reloads both
    at once (a restart would take Pacemaker and every VM down): 2 of 3 votes, quorate. Then
    corosync-qdevice starts on both and its vote is awaited."""
    first = conns[0]
    view = parse_quorumtool((await first.run(QUORUMTOOL)).stdout)
    if view is None or not view.quorate or view.nodes < len(conns):
        raise RemoteError(
            f"{first.name}: switching to the quorum device needs every node in a quorate "
            "corosync membership (alone, a node would hold 1 of 3 votes and lose quorum): "
            "bring the peer back, then re-run apply"
        )
    probe = 'exec 3<>"/dev/tcp/$0/$1"'
    for conn in conns:
        reach = await conn.run(["timeout", "10", "bash", "-c", probe, host, str(port)])
        if not reach.ok:
            raise RemoteError(
                f"{conn.name}: qnetd at {host}:{port} does not answer (TCP): nothing was "
                "switched; make it reachable from the nodes, then re-run apply"
            )
    await first.run(["corosync-cfgtool", "-R"], check=True)
    await _runtime_device(conns, True, sleep, clock)

    async def start(conn: Remote) -> None:
        await conn.run([*ENABLE, QDEVICE], check=True)
        await conn.run(["systemctl", "restart", QDEVICE], check=True)

    # On both nodes at once: Debian's unit has an init script too, so enable runs
    # update-rc.d, 14.2 and 16.9 s on the lab's nodes even with --no-reload (2026-12-04).
    results = await asyncio.gather(*(start(conn) for conn in conns), return_exceptions=True)
    if failed := next((r for r in results if isinstance(r, BaseException)), None):
        raise failed
    await wait_qdevice_vote(conns, sleep=sleep, clock=clock)


async def wait_qdevice_vote(
    conns: Sequence[Remote],
    timeout: float = QDEVICE_VOTE_S,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> None:
    """Until the first node's corosync-quorumtool shows every node's qdevice alive and
    casting qnetd's vote (A,V) and the device's vote counted."""
    deadline = clock() + timeout
    while True:
        view = parse_quorumtool((await conns[0].run(QUORUMTOOL)).stdout)
        voting = [m.name for m in view.members if m.qdevice_vote] if view else []
        if view is not None and view.device_voting and len(voting) >= len(conns):
            return
        if clock() > deadline:
            states = []
            for conn in conns:
                state = parse_qdevice_state((await conn.run(QDEVICE_TOOL)).stdout)
                states.append(f"{conn.name}: {state or 'no answer'}")
            raise RemoteError(
                f"the quorum device casts no vote after {timeout:.0f}s ({', '.join(states)}; "
                "voting: " + (", ".join(voting) or "none") + "): quorum holds while both "
                "nodes are up, but a node failure now stops the survivor's VMs. Check qnetd "
                "and corosync-qdevice-tool -sv on the nodes"
            )
        await sleep(POLL_S)


async def switch_to_two_node(
    conns: Sequence[Remote], rendered_cib: str | None, sleep: Sleep = asyncio.sleep
) -> None:
    """Back from the quorum device to two_node, quorum kept: the fence-race protection is
    pushed first (with `rendered_cib`, when Pacemaker runs), then one `corosync-cfgtool -R`
    gives both nodes two_node (quorum 1: a node failure from here on keeps the survivor
    quorate), then corosync-qdevice stops."""
    if rendered_cib is not None:
        await push_cib(conns[0], rendered_cib, sleep, fencing_only=True)
    await conns[0].run(["corosync-cfgtool", "-R"], check=True)
    await _runtime_device(conns, False, sleep)
    for conn in conns:
        await conn.run([*DISABLE, "--now", QDEVICE], check=True)
