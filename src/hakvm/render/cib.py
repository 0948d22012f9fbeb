"""The Pacemaker CIB: one neutral model of the cluster configuration, rendered as cib.xml.

`model(ctx)` builds a plain description (properties, defaults, nodes, fence devices,
resources, constraints) that `cib_xml` turns into a complete `<cib>` and that
`hakvm.render.export` turns into equivalent pcs / crmsh scripts, so the three can never
disagree.

Resource ids (VM names contain no '_', so these can never collide with each other):
  <vm>               ocf:heartbeat:VirtualDomain (what an admin types: `crm_resource -r vm1`)
  <vm>_drbd          ocf:linbit:drbd, inside the promotable clone <vm>_drbd_clone
  <vm>_fs            ocf:heartbeat:Filesystem (qcow2-on-xfs mode only)
  <node>_fence       stonith:fence_ipmilan that fences <node> (never runs on <node>)

DRBD and live migration: Pacemaker can only live-migrate a VM whose disk is Primary on both
nodes at the moment of the move, and a promotable clone cannot promote a second instance
just for a migration. So block-mode VMs use LINBIT's live-migration recipe: `promoted-max=2`
(both sides Primary whenever both are up; the DRBD resource needs `allow-two-primaries`)
with `allow-migrate=true` on VirtualDomain. This is safe without a cluster filesystem
because only one QEMU ever opens the device: Pacemaker runs the VM on one node, and during a
migration the source QEMU stops writing before the destination resumes. qcow2-on-xfs VMs
mount a non-cluster XFS, which must never be mounted twice, so they get `promoted-max=1`
and fail over by stop/start only.

Note for apply (`cibadmin --patch` of a diff): the live CIB also holds things hakvm does not
own: `drbd-fence-by-handler-*` constraints (DRBD's crm-fence-peer handler),
`cli-ban-*`/`cli-prefer-*` (crm_resource --move/--ban), and the controller's own properties
(dc-version, cluster-infrastructure, cluster-name, have-watchdog, last-lrm-refresh). A diff
must leave those alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from hakvm.agent import layout
from hakvm.render.base import CLUSTER, RenderContext, Rendered, RenderedFile
from hakvm.render.drbd import resync_attribute
from hakvm.render.libvirt import domain_path, qcow2_dir
from hakvm.render.migration import SUFFIX as MIGRATION_SUFFIX
from hakvm.spec.derive import race_protection, uses_static_delay
from hakvm.spec.models import DiskMode, FenceRaceProtection, Node, Vm

RENDERER = "cib"
CIB_PATH = "cib.xml"
FENCE_DIR = "/etc/hakvm/fence"
# pacemaker-3.7 is the oldest schema with the Promoted/Unpromoted role names (Pacemaker
# 2.1.0); every 2.1.x (Debian 12: 2.1.5, RHEL 9: 2.1.x) accepts it.
VALIDATE_WITH = "pacemaker-3.7"
MIGRATION_THRESHOLD = 3  # after 3 failures on a node, the VM moves to the peer
VM_PRIORITY = 1  # priority-fencing-delay: the node running more VMs wins a fence race

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Op:
    name: str
    interval: str
    timeout: str
    role: str | None = None

    def op_id(self, rid: str) -> str:
        role = f"-{self.role}" if self.role else ""
        return f"{rid}-{self.name}{role}-interval-{self.interval}"


@dataclass(frozen=True)
class Primitive:
    id: str
    cls: str  # ocf | stonith
    provider: str | None
    type: str
    params: Pairs
    meta: Pairs = ()
    ops: tuple[Op, ...] = ()

    @property
    def agent(self) -> str:
        """The agent as pcs and crmsh spell it: ocf:heartbeat:VirtualDomain, stonith:x."""
        if self.provider:
            return f"{self.cls}:{self.provider}:{self.type}"
        return f"{self.cls}:{self.type}"


@dataclass(frozen=True)
class Promotable:
    id: str
    primitive: Primitive
    meta: Pairs


@dataclass(frozen=True)
class Colocation:
    id: str
    rsc: str
    with_rsc: str
    with_role: str | None = None
    score: str = "INFINITY"


@dataclass(frozen=True)
class Order:
    id: str
    first: str
    first_action: str
    then: str
    then_action: str
    kind: str = "Mandatory"


@dataclass(frozen=True)
class Location:
    id: str
    rsc: str
    node: str
    score: str


@dataclass(frozen=True)
class Expression:
    """One node-attribute test of a rule: `operation` is defined, not_defined, lt, eq..."""

    attribute: str
    operation: str
    value: str | None = None
    type: str | None = None  # number, string, version (Pacemaker's comparison type)


@dataclass(frozen=True)
class RuleLocation:
    """A location constraint whose score applies on every node where the rule holds."""

    id: str
    rsc: str
    score: str
    expressions: tuple[Expression, ...]
    boolean_op: str = "or"


Constraint = Colocation | Order | Location | RuleLocation


@dataclass(frozen=True)
class Alert:
    """A Pacemaker alert: `path` runs (as hacluster) once per recipient for every event."""

    id: str
    path: str
    recipients: Pairs  # (recipient id, value)


@dataclass(frozen=True)
class ClusterModel:
    properties: Pairs
    rsc_defaults: Pairs
    op_defaults: Pairs
    nodes: tuple[tuple[int, str], ...]  # corosync nodeid, uname
    fence_devices: tuple[Primitive, ...]
    resources: tuple[Primitive | Promotable, ...]
    constraints: tuple[Constraint, ...]
    password_scripts: dict[str, str] = field(default_factory=dict)  # fenced node -> path
    alerts: tuple[Alert, ...] = ()


# --- ids and paths (also used by ops/ and export) ---------------------------------------------


def vm_id(vm: str) -> str:
    return vm


def drbd_id(vm: str) -> str:
    return f"{vm}_drbd"


def drbd_clone_id(vm: str) -> str:
    return f"{vm}_drbd_clone"


def fs_id(vm: str) -> str:
    return f"{vm}_fs"


def fence_id(node: str) -> str:
    return f"{node}_fence"


def password_script_path(node: str) -> str:
    return f"{FENCE_DIR}/{node}.password.sh"


def password_file_path(node: str) -> str:
    """Where apply copies the node's BMC password (0600), on the peer that fences it only."""
    return f"{FENCE_DIR}/{node}.password"


def node_id(ctx: RenderContext, name: str) -> int:
    """Corosync nodeid: position in the spec, from 1 (as the corosync renderer numbers)."""
    return [n.name for n in ctx.spec.nodes].index(name) + 1


def preference_score(stickiness: int) -> int:
    """The preferred-node score: below stickiness, so a VM stays where it failed over to
    when its preferred node returns (no second outage for an automatic failback)."""
    return max(1, stickiness // 2)


def promotion_score_attribute(vm: str) -> str:
    """The node attribute in which the linbit drbd agent publishes its promotion score."""
    return f"master-{drbd_id(vm)}"


# The drbd agent's promotion scores (adjust_master_score "0 10 1000 10000"): 1000 and up
# means the node's own disk is UpToDate; below, reads would depend on the peer.
GOOD_DATA_SCORE = 1000


def _s(seconds: int) -> str:
    return f"{seconds}s"


# --- model ----------------------------------------------------------------------------------


def _fence_device(ctx: RenderContext, node: Node) -> Primitive | None:
    bmc = node.bmc
    if bmc is None:
        return None
    timing = ctx.spec.cluster.timing
    # A device's start runs the agent (metadata, then a monitor) and its stop waits for the
    # fencer: on a loaded node both outlast op_defaults' 60 s, and a failed stop gets the node
    # fenced (make demo, 2026-12-02: the lab's node01, its fencer "unresponsive to ipc" while
    # the cib phase started everything, was rebooted).
    start_stop = _s(max(60, timing.monitor_timeout_s))
    params: list[tuple[str, str]] = [
        ("ip", bmc.address),
        ("ipport", str(bmc.port)),
        ("username", bmc.user),
        ("lanplus", "1" if bmc.lanplus else "0"),
        # The agent runs this script to read the password: it is never in the CIB (which
        # every cluster tool prints). fence_ipmilan (fence-agents 4.12) still hands it to
        # `ipmitool -P` at every monitor and fence, so it is in that process's argv for
        # its life: what protects it is in docs/known-limits.md (doctor: proc-hidepid).
        ("password_script", password_script_path(node.name)),
        ("pcmk_host_list", node.name),
        ("pcmk_host_check", "static-list"),
    ]
    if ctx.spec.cluster.fencing.power_wait_s is not None:
        params.append(("power_wait", str(ctx.spec.cluster.fencing.power_wait_s)))
    if uses_static_delay(ctx.spec):
        if node.name == ctx.derived.preferred_survivor and timing.fence_delay_s > 0:
            # Fencing the preferred survivor waits, so in a split it shoots first and wins.
            # The mapping form (target:delay): Pacemaker 2.1's fencer reads the value as a
            # list of mappings and logs "error: pcmk_delay_base: empty value in mapping"
            # at every delayed fencing for a bare "45s" (seen on the lab), though it waits.
            delay = f"{node.name}:{_s(timing.fence_delay_s)}"
            params.append(("pcmk_delay_base", delay))
    elif race_protection(ctx.spec) is not None and timing.fence_delay_s > 1:
        # With priority-fencing-delay, equal priorities (say, no VM running) would still let
        # both nodes shoot at once; a small random delay breaks that tie (crmsh's recipe).
        params.append(("pcmk_delay_max", _s(timing.fence_delay_s // 2)))
    return Primitive(
        id=fence_id(node.name),
        cls="stonith",
        provider=None,
        type="fence_ipmilan",
        params=tuple(params),
        ops=(
            Op(
                "monitor",
                _s(timing.fence_monitor_interval_s),
                _s(max(20, timing.monitor_timeout_s)),
            ),
            Op("start", "0s", start_stop),
            Op("stop", "0s", start_stop),
        ),
    )


def _drbd_clone(ctx: RenderContext, vm: Vm) -> Promotable:
    block = vm.disk.mode is DiskMode.BLOCK
    timing = ctx.spec.cluster.timing
    monitor_timeout = _s(max(20, timing.monitor_timeout_s))
    every = timing.drbd_monitor_interval_s
    primitive = Primitive(
        id=drbd_id(vm.name),
        cls="ocf",
        provider="linbit",
        type="drbd",
        params=(("drbd_resource", vm.name),),
        ops=(
            # Different intervals per role: Pacemaker tells recurring ops apart by
            # (name, interval), so two monitors must not share one.
            Op("monitor", _s(every - 1), monitor_timeout, "Promoted"),
            Op("monitor", _s(every + 1), monitor_timeout, "Unpromoted"),
            Op("start", "0s", "240s"),  # LINBIT's figures: attach + connect can be slow
            Op("stop", "0s", "100s"),
            Op("promote", "0s", "90s"),
            Op("demote", "0s", "90s"),
            Op("notify", "0s", "90s"),
        ),
    )
    meta = (
        ("promotable", "true"),
        ("promoted-max", "2" if block else "1"),
        ("promoted-node-max", "1"),
        ("clone-max", "2"),
        ("clone-node-max", "1"),
        ("notify", "true"),  # the drbd agent tracks its peer's state through notifications
    )
    return Promotable(id=drbd_clone_id(vm.name), primitive=primitive, meta=meta)


def _filesystem(ctx: RenderContext, vm: Vm, device: str) -> Primitive:
    timing = ctx.spec.cluster.timing
    # The VM's own start/stop bounds, never below the agent's 60 s: a stop that times out
    # gets the node fenced, and unmounting XFS on a loaded (lab: emulated) node took longer
    # than 60 s once.
    return Primitive(
        id=fs_id(vm.name),
        cls="ocf",
        provider="heartbeat",
        type="Filesystem",
        params=(
            ("device", device),
            ("directory", qcow2_dir(vm.name)),
            ("fstype", "xfs"),
            ("options", "noatime"),
        ),
        ops=(
            Op("monitor", "20s", _s(max(40, timing.monitor_timeout_s))),
            Op("start", "0s", _s(max(60, timing.vm_start_timeout_s))),
            Op("stop", "0s", _s(max(60, timing.vm_stop_timeout_s))),
        ),
    )


def _virtual_domain(ctx: RenderContext, vm: Vm) -> Primitive:
    timing = ctx.spec.cluster.timing
    block = vm.disk.mode is DiskMode.BLOCK
    meta: list[tuple[str, str]] = [("target-role", "Started" if vm.autostart else "Stopped")]
    if block:
        meta.append(("allow-migrate", "true"))
    if race_protection(ctx.spec) is FenceRaceProtection.PRIORITY:
        meta.append(("priority", str(VM_PRIORITY)))
    ops = [
        Op("monitor", _s(timing.monitor_interval_s), _s(timing.monitor_timeout_s)),
        Op("start", "0s", _s(timing.vm_start_timeout_s)),
        Op("stop", "0s", _s(timing.vm_stop_timeout_s)),
    ]
    if block:
        ops += [
            Op("migrate_to", "0s", _s(timing.migrate_timeout_s)),
            Op("migrate_from", "0s", _s(timing.migrate_timeout_s)),
        ]
    return Primitive(
        id=vm_id(vm.name),
        cls="ocf",
        provider="heartbeat",
        type="VirtualDomain",
        params=(
            ("config", domain_path(vm.name)),
            ("hypervisor", "qemu:///system"),
            # qemu+ssh://peer/system: libvirt's control channel over the nodes' root SSH trust;
            # the memory stream uses the migration port range opened by the firewall.
            ("migration_transport", "ssh"),
            # ...to `<peer>-migration`: the peer's replication (bond) address, not the
            # heartbeat link that the bare node name resolves to (see render.migration).
            ("migration_network_suffix", MIGRATION_SUFFIX),
            # hakvm places VMs by preference and stickiness, never by utilization: without
            # these, every start and monitor runs `virsh dominfo` three times and rewrites
            # the resource's utilization in the CIB (each virsh call took 2.4-3.3 s on the lab).
            ("autoset_utilization_cpu", "false"),
            ("autoset_utilization_hv_memory", "false"),
            ("autoset_utilization_host_memory", "false"),
            *((("force_stop", "true"),) if vm.force_stop else ()),
        ),
        meta=tuple(meta),
        ops=tuple(ops),
    )


def _vm_constraints(vm: Vm, stickiness: int) -> list[Constraint]:
    name, clone = vm.name, drbd_clone_id(vm.name)
    out: list[Constraint] = []
    if vm.disk.mode is DiskMode.BLOCK:
        out += [
            Colocation(f"{name}_with_drbd", name, clone, "Promoted"),
            Order(f"{name}_after_drbd", clone, "promote", name, "start"),
        ]
    else:
        fs = fs_id(name)
        out += [
            Colocation(f"{fs}_with_drbd", fs, clone, "Promoted"),
            Order(f"{fs}_after_drbd", clone, "promote", fs, "start"),
            Colocation(f"{name}_with_fs", name, fs),
            Order(f"{name}_after_fs", fs, "start", name, "start"),
        ]
    # Only where the node's own copy is whole. Colocation with the Promoted role is not
    # enough: in block mode both sides stay Promoted, so a node that was resyncing when its
    # peer (the only good copy) crashed would otherwise start the VM on data it does not
    # have. The drbd agent's score trails by up to one monitor; the resync flag, set by
    # DRBD itself the moment a resync towards the node begins, does not.
    head = name if vm.disk.mode is DiskMode.BLOCK else fs_id(name)
    score, flag = promotion_score_attribute(name), resync_attribute(name)
    out.append(
        RuleLocation(
            f"{head}_needs_good_data",
            head,
            "-INFINITY",
            (
                Expression(score, "not_defined"),
                Expression(score, "lt", str(GOOD_DATA_SCORE), "number"),
                Expression(flag, "defined"),
            ),
        )
    )
    if vm.preferred_node:
        out.append(
            Location(
                f"{name}_prefers_{vm.preferred_node}",
                name,
                vm.preferred_node,
                str(preference_score(stickiness)),
            )
        )
    return out


ALERT_ID = "hakvm-events"
# Pacemaker kills an alert agent after 30 s by default. On a TCG lab node starting its VMs,
# python3 alone took 6-8 s to start and agents were killed at 30 s, their events lost
# (node01's journal, 2026-12-01); alerts run beside the cluster, so a longer bound costs
# nothing on hardware where the agent takes milliseconds.
ALERT_TIMEOUT = "120s"


def alerts(ctx: RenderContext) -> tuple[Alert, ...]:
    """hakvm's alert agent (render/monitoring.py installs it): every fencing, node, resource
    and attribute event appended to the node's events file, and POSTed to the webhook whose
    URL apply copied to the node, if the spec has one."""
    mon = ctx.spec.monitoring
    if not mon.events:
        return ()
    recipients = [(f"{ALERT_ID}-file", layout.EVENTS_PATH)]
    if mon.alerts.webhook_url_file is not None:
        recipients.append((f"{ALERT_ID}-webhook", layout.WEBHOOK_URL_PATH))
    return (Alert(ALERT_ID, layout.ALERT_AGENT_PATH, tuple(recipients)),)


def model(ctx: RenderContext) -> ClusterModel:
    spec = ctx.spec
    cluster = spec.cluster
    timing = cluster.timing
    # No cluster-name, dc-version, cluster-infrastructure, have-watchdog: the controller
    # writes those itself (pcs refuses to set them).
    properties: list[tuple[str, str]] = [
        ("stonith-enabled", "true"),
        ("stonith-timeout", _s(timing.stonith_timeout_s)),
        # Written even as the default: apply keeps live properties it does not render.
        ("stonith-action", cluster.fencing.action.value),
        ("no-quorum-policy", cluster.no_quorum_policy),
        # Time-based rules and failure-timeouts are re-evaluated at least this often.
        ("cluster-recheck-interval", "5min"),
    ]
    if timing.load_threshold_pct is not None:
        properties.append(("load-threshold", f"{timing.load_threshold_pct}%"))
    if timing.node_action_limit is not None:
        properties.append(("node-action-limit", str(timing.node_action_limit)))
    protection = race_protection(spec)
    if protection is FenceRaceProtection.PRIORITY:
        properties.append(("priority-fencing-delay", _s(timing.fence_delay_s)))
    elif protection is None:
        # A quorum device decides a split: the half without qnetd's vote loses quorum and
        # cannot fence, so no delay is needed. Written as 0 (not left out): apply keeps live
        # properties it does not render, and a delay from before the qdevice must go.
        properties.append(("priority-fencing-delay", "0s"))

    fence_devices: list[Primitive] = []
    scripts: dict[str, str] = {}
    constraints: list[Constraint] = []
    for node in spec.nodes:
        device = _fence_device(ctx, node)
        if device is None:
            continue
        fence_devices.append(device)
        scripts[node.name] = password_script_path(node.name)
        # A node never runs the device that fences itself (it could not fence itself anyway).
        constraints.append(
            Location(f"{device.id}_avoids_{node.name}", device.id, node.name, "-INFINITY")
        )

    resources: list[Primitive | Promotable] = []
    for vm in spec.vms:
        clone = _drbd_clone(ctx, vm)
        resources.append(clone)
        if vm.disk.mode is DiskMode.QCOW2_ON_XFS:
            resources.append(_filesystem(ctx, vm, ctx.derived.vms[vm.name].device))
        resources.append(_virtual_domain(ctx, vm))
        constraints += _vm_constraints(vm, cluster.stickiness)

    return ClusterModel(
        properties=tuple(properties),
        rsc_defaults=(
            ("resource-stickiness", str(cluster.stickiness)),
            ("migration-threshold", str(MIGRATION_THRESHOLD)),
        ),
        # Fallback for any operation without its own timeout.
        op_defaults=(("timeout", "60s"),),
        nodes=tuple((node_id(ctx, n.name), n.name) for n in spec.nodes),
        fence_devices=tuple(fence_devices),
        resources=tuple(resources),
        constraints=tuple(constraints),
        password_scripts=scripts,
        alerts=alerts(ctx),
    )


# --- XML ------------------------------------------------------------------------------------


def _nvset(parent: etree._Element, tag: str, set_id: str, pairs: Pairs) -> None:
    if not pairs:
        return
    nvset = etree.SubElement(parent, tag, id=set_id)
    for name, value in pairs:
        etree.SubElement(nvset, "nvpair", id=f"{set_id}-{name}", name=name, value=value)


def _primitive_xml(parent: etree._Element, prim: Primitive) -> None:
    attrs = {"id": prim.id, "class": prim.cls}
    if prim.provider:
        attrs["provider"] = prim.provider
    attrs["type"] = prim.type
    el = etree.SubElement(parent, "primitive", attrs)
    _nvset(el, "instance_attributes", f"{prim.id}-instance_attributes", prim.params)
    _nvset(el, "meta_attributes", f"{prim.id}-meta_attributes", prim.meta)
    if prim.ops:
        ops = etree.SubElement(el, "operations")
        for op in prim.ops:
            op_attrs = {
                "id": op.op_id(prim.id),
                "name": op.name,
                "interval": op.interval,
                "timeout": op.timeout,
            }
            if op.role:
                op_attrs["role"] = op.role
            etree.SubElement(ops, "op", op_attrs)


def _constraint_xml(parent: etree._Element, con: Constraint) -> None:
    if isinstance(con, Colocation):
        attrs = {"id": con.id, "rsc": con.rsc, "with-rsc": con.with_rsc}
        if con.with_role:
            attrs["with-rsc-role"] = con.with_role
        attrs["score"] = con.score
        etree.SubElement(parent, "rsc_colocation", attrs)
    elif isinstance(con, Order):
        etree.SubElement(
            parent,
            "rsc_order",
            {
                "id": con.id,
                "first": con.first,
                "first-action": con.first_action,
                "then": con.then,
                "then-action": con.then_action,
                "kind": con.kind,
            },
        )
    elif isinstance(con, RuleLocation):
        loc = etree.SubElement(parent, "rsc_location", {"id": con.id, "rsc": con.rsc})
        rule = etree.SubElement(
            loc,
            "rule",
            {"id": f"{con.id}-rule", "score": con.score, "boolean-op": con.boolean_op},
        )
        for index, expr in enumerate(con.expressions, 1):
            attrs = {
                "id": f"{con.id}-rule-expr-{index}",
                "attribute": expr.attribute,
                "operation": expr.operation,
            }
            if expr.value is not None:
                attrs["value"] = expr.value
            if expr.type is not None:
                attrs["type"] = expr.type
            etree.SubElement(rule, "expression", attrs)
    else:
        etree.SubElement(
            parent,
            "rsc_location",
            {"id": con.id, "rsc": con.rsc, "node": con.node, "score": con.score},
        )


def cib_xml(ctx: RenderContext) -> str:
    m = model(ctx)
    # epoch 1: apply pushes this as a diff against the live CIB, whose counters win.
    root = etree.Element(
        "cib",
        {
            "validate-with": VALIDATE_WITH,
            "admin_epoch": "0",
            "epoch": "1",
            "num_updates": "0",
        },
    )
    root.addprevious(
        etree.Comment(
            f" Managed by hakvm (cluster {ctx.spec.cluster.name}): the desired CIB "
            "configuration; apply patches the live CIB towards it. "
        )
    )
    conf = etree.SubElement(root, "configuration")
    crm_config = etree.SubElement(conf, "crm_config")
    _nvset(crm_config, "cluster_property_set", "cib-bootstrap-options", m.properties)
    rsc_defaults = etree.SubElement(conf, "rsc_defaults")
    _nvset(rsc_defaults, "meta_attributes", "rsc-options", m.rsc_defaults)
    op_defaults = etree.SubElement(conf, "op_defaults")
    _nvset(op_defaults, "meta_attributes", "op-options", m.op_defaults)
    nodes = etree.SubElement(conf, "nodes")
    for nid, uname in m.nodes:
        etree.SubElement(nodes, "node", id=str(nid), uname=uname)
    resources = etree.SubElement(conf, "resources")
    for prim in m.fence_devices:
        _primitive_xml(resources, prim)
    for res in m.resources:
        if isinstance(res, Promotable):
            clone = etree.SubElement(resources, "clone", id=res.id)
            _nvset(clone, "meta_attributes", f"{res.id}-meta_attributes", res.meta)
            _primitive_xml(clone, res.primitive)
        else:
            _primitive_xml(resources, res)
    constraints = etree.SubElement(conf, "constraints")
    for con in m.constraints:
        _constraint_xml(constraints, con)
    if m.alerts:
        section = etree.SubElement(conf, "alerts")
        for alert in m.alerts:
            el = etree.SubElement(section, "alert", id=alert.id, path=alert.path)
            meta = etree.SubElement(el, "meta_attributes", id=f"{alert.id}-meta_attributes")
            etree.SubElement(
                meta,
                "nvpair",
                id=f"{alert.id}-meta_attributes-timeout",
                name="timeout",
                value=ALERT_TIMEOUT,
            )
            for rid, value in alert.recipients:
                etree.SubElement(el, "recipient", id=rid, value=value)
    etree.SubElement(root, "status")
    text: str = etree.tostring(root.getroottree(), pretty_print=True, encoding="unicode")
    return text


def password_script(node: str) -> str:
    return (
        "#!/bin/sh\n"
        "# Managed by hakvm: changes are overwritten.\n"
        f"# fence_ipmilan's password_script for {node}'s BMC: the password stays in a 0600 file\n"
        "# (copied by apply), never in the CIB; fence_ipmilan passes it on to ipmitool -P.\n"
        f"exec cat {password_file_path(node)}\n"
    )


def render(ctx: RenderContext) -> Rendered:
    m = model(ctx)
    out: Rendered = {
        CLUSTER: [RenderedFile(path=CIB_PATH, content=cib_xml(ctx), renderer=RENDERER)]
    }
    for node in ctx.spec.nodes:
        # The device fencing X runs only on X's peer, so only the peer gets X's script
        # (and, from apply, X's password): no node holds its own BMC credentials.
        out[node.name] = [
            RenderedFile(
                path=path,
                content=password_script(fenced),
                mode=0o700,
                renderer=RENDERER,
            )
            for fenced, path in sorted(m.password_scripts.items())
            if fenced != node.name
        ]
    return out
