"""DRBD: one two-node resource per VM (`/etc/drbd.d/<vm>.res`) and `global_common.conf`.

Two DRBD generations are in use, and their configuration grammars differ:

* Debian 12 runs the kernel's in-tree DRBD 8.4 module; drbd-utils 9 hands such a kernel to
  its `drbdadm-84` personality, whose grammar is 8.4's (`fencing` under `disk`, no `node-id`,
  no `unfence-peer` event).
* RHEL 9 has no in-tree DRBD; the usual kmod is DRBD 9 (ELRepo `kmod-drbd9x`, LINBIT), whose
  drbdadm wants `fencing` under `net` and fires `unfence-peer`.

So the generation follows the OS (`drbd_version`), and everything else is rendered the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hakvm.render.base import RenderContext, Rendered, RenderedFile, templates
from hakvm.spec.derive import LinkAddress, NetworkAddresses, on_bond, replication_network
from hakvm.spec.models import ClusterSpec, DiskMode, OsFamily

DRBD_DIR = "/etc/drbd.d"
GLOBAL_COMMON = f"{DRBD_DIR}/global_common.conf"
HANDLER_DIR = "/usr/lib/drbd"
ATTRD_UPDATER = "/usr/sbin/attrd_updater"  # Pacemaker's; same path on Debian and RHEL

DrbdVersion = Literal["8.4", "9"]


def drbd_version(spec: ClusterSpec) -> DrbdVersion:
    """The DRBD kernel generation the nodes run: it decides the config grammar."""
    return "9" if spec.cluster.os is OsFamily.RHEL9 else "8.4"


def resync_attribute(vm: str) -> str:
    """The transient node attribute DRBD's before-resync-target handler sets while this
    node resyncs the VM's disk (its local copy is not yet whole); after-resync-target
    clears it. The CIB keeps the VM off a node that has it."""
    return f"hakvm-resyncing-{vm}"


def resource_path(vm_name: str) -> str:
    return f"{DRBD_DIR}/{vm_name}.res"


def _link_on_bond(ctx: RenderContext, link: NetworkAddresses) -> bool:
    return all(
        n.name in link.addresses and on_bond(n, link.addresses[n.name]) for n in ctx.spec.nodes
    )


def replication_link(ctx: RenderContext) -> NetworkAddresses:
    """The network DRBD replicates over (`hakvm.spec.derive.replication_network`): the
    spec's `replication.network`, or a heartbeat link (a `LinkAddress`)."""
    found = replication_network(ctx.spec, ctx.derived.links)
    if found is None:
        raise ValueError("no heartbeat network has an address on both nodes")
    return found


@dataclass(frozen=True)
class _Host:
    name: str
    node_id: int
    disk: str
    address: str


@dataclass(frozen=True)
class _Resource:
    name: str
    minor: int
    port: int
    mode: str
    two_primaries: bool
    secret: str
    hosts: tuple[_Host, ...]
    network: str
    on_bond: bool
    dedicated: bool  # the spec's own replication network, not a heartbeat link
    resync_flag: str


def _common_vars(ctx: RenderContext) -> dict[str, object]:
    version = drbd_version(ctx.spec)
    suffix = ".9.sh" if version == "9" else ".sh"
    return {
        "version": version,
        "fence_peer": f"{HANDLER_DIR}/crm-fence-peer{suffix}",
        "unfence_peer": f"{HANDLER_DIR}/crm-unfence-peer{suffix}",
        "attrd_updater": ATTRD_UPDATER,
    }


def render_global_common(ctx: RenderContext) -> str:
    return templates().get_template("drbd-global_common.conf.j2").render(**_common_vars(ctx))


def render_resource(ctx: RenderContext, vm_name: str) -> str:
    vm = next(v for v in ctx.spec.vms if v.name == vm_name)
    derived = ctx.derived.vms[vm_name]
    link = replication_link(ctx)
    hosts = tuple(
        _Host(
            name=node.name,
            node_id=index,
            disk=f"/dev/{node.storage.volume_group}/{vm.name}",
            address=str(link.addresses[node.name]),
        )
        for index, node in enumerate(ctx.spec.nodes)
    )
    resource = _Resource(
        name=vm.name,
        minor=derived.minor,
        port=derived.port,
        mode=str(vm.disk.mode),
        two_primaries=vm.disk.mode is DiskMode.BLOCK,
        secret=ctx.secrets.drbd_secret(vm.name),
        hosts=hosts,
        network=str(link.network),
        on_bond=_link_on_bond(ctx, link),
        dedicated=not isinstance(link, LinkAddress),
        resync_flag=resync_attribute(vm.name),
    )
    return (
        templates().get_template("drbd-resource.res.j2").render(res=resource, **_common_vars(ctx))
    )


def render(ctx: RenderContext) -> Rendered:
    files = [RenderedFile(GLOBAL_COMMON, render_global_common(ctx), 0o644, renderer="drbd")]
    for vm in ctx.spec.vms:
        # 0600: the resource holds its replication shared secret.
        files.append(
            RenderedFile(
                resource_path(vm.name), render_resource(ctx, vm.name), 0o600, renderer="drbd"
            )
        )
    return {node.name: list(files) for node in ctx.spec.nodes}
