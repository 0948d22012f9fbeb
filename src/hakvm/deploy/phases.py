"""Apply's phases, in order. Each phase reads fresh facts and yields steps for differences.

packages -> network -> hosts -> firewall -> storage -> replication -> qdevice -> corosync ->
quorum -> pacemaker -> libvirt -> fencing -> monitoring -> cib -> vms (qdevice and quorum:
deploy/quorum.py). A phase that yields nothing changes nothing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hakvm.deploy import actions, cib_merge, guards, quorum
from hakvm.deploy import monitoring as mon
from hakvm.deploy.actions import FRESH_TAG
from hakvm.deploy.guards import RunOptions
from hakvm.deploy.secrets import (
    AUTHKEY_PATH,
    DRBD_MASTER_PATH,
    BmcPassword,
    ClusterSecrets,
    read_bmc_passwords,
)
from hakvm.deploy.steps import ENABLE, Call, CallFunc, Run, Step, Write, run
from hakvm.remote.facts import NodeFacts
from hakvm.remote.pacemaker import parse_crm_mon
from hakvm.render import agents, migration
from hakvm.render import hosts as hosts_render
from hakvm.render.base import CLUSTER, RenderContext, Rendered, RenderedFile
from hakvm.render.blocks import merge_block
from hakvm.render.cib import password_file_path
from hakvm.render.libvirt import qcow2_dir, qcow2_path
from hakvm.spec.models import DiskMode, Node, OsFamily, Vm
from hakvm.spec.validate import backing_size

PlanError = guards.PlanError  # where the phases' callers have always found it

DEBIAN_PACKAGES = (
    "corosync", "pacemaker", "pacemaker-cli-utils", "drbd-utils", "resource-agents",
    "fence-agents", "libvirt-daemon-system", "libvirt-clients", "qemu-system-x86",
    "qemu-utils", "lvm2", "thin-provisioning-tools", "xfsprogs", "ifenslave",
    "bridge-utils", "nftables",
    "psmisc",  # fuser: the Filesystem agent (qcow2-on-xfs VMs) exits "not installed" without it
)  # fmt: skip
RHEL_PACKAGES = (
    "corosync", "pacemaker", "drbd9x-utils", "kmod-drbd9x", "resource-agents",
    "fence-agents-ipmilan", "libvirt-daemon-kvm", "qemu-kvm", "qemu-img", "lvm2",
    "device-mapper-persistent-data", "xfsprogs", "NetworkManager", "firewalld", "psmisc",
)  # fmt: skip


@dataclass
class PlanEnv:
    ctx: RenderContext  # with the real secrets
    rendered: Rendered
    facts: dict[str, NodeFacts]
    secrets: ClusterSecrets
    spec_dir: Path
    # The BMC password files beside the spec: engine reads them when it gathers facts
    # (deploy/secrets.py); an env built without them reads them there itself.
    bmc_passwords: dict[str, BmcPassword] = field(default_factory=dict)
    options: RunOptions = field(default_factory=RunOptions)  # --replace-cluster, --adopt
    replacing: str | None = None  # replace-node's new node: its DRBD joins as SyncTarget
    qnetd_ca: str | None = None  # the qnetd host's CA (base64; "": none yet; None: not read)
    notes: list[str] = field(default_factory=list)  # what plan says beside its steps
    restarts_corosync: set[str] = field(default_factory=set)  # by the corosync phase

    def __post_init__(self) -> None:
        if not self.bmc_passwords:
            self.bmc_passwords = read_bmc_passwords(self.ctx.spec, self.spec_dir)

    @property
    def nodes(self) -> list[Node]:
        return list(self.ctx.spec.nodes)

    def files(self, node: str, *renderers: str) -> list[RenderedFile]:
        return [f for f in self.rendered.get(node, []) if f.renderer in renderers]


Phase = Callable[[PlanEnv], list[Step]]


# --- helpers -------------------------------------------------------------------------------------


def _private(mode: int) -> bool:
    return mode & 0o044 == 0


def file_diff(path: str, old: bytes | None, new: bytes, mode: int) -> str:
    if _private(mode):
        return f"--- {path}\n+++ {path}\n(private file: content not shown)\n"
    old_lines = (old or b"").decode("utf-8", "replace").splitlines(keepends=True)
    new_lines = new.decode("utf-8", "replace").splitlines(keepends=True)
    return "".join(
        difflib.unified_diff(
            old_lines, new_lines, f"{path} (node)" if old is not None else "/dev/null", path
        )
    )


def write_steps(
    env: PlanEnv, node: str, phase: str, files: list[tuple[str, bytes, int]]
) -> list[Step]:
    """One step per file whose content or mode differs from the node's."""
    steps = []
    for path, content, mode in files:
        current = env.facts[node].files.get(path)
        # A secret file given to another owner is rewritten, as one whose mode drifted.
        owned = current is not None and current.owner in ("", "root:root")
        if current is not None and current.same_as(content) and current.mode == mode and owned:
            continue
        title = f"{'create' if current is None else 'update'} {path}"
        old = current.content if current is not None else None
        steps.append(
            Step(
                node,
                phase,
                title,
                (Write(path, content, mode),),
                file_diff(path, old, content, mode),
            )
        )
    return steps


def rendered_writes(env: PlanEnv, node: str, *renderers: str) -> list[tuple[str, bytes, int]]:
    return [(f.path, f.content.encode(), f.mode) for f in env.files(node, *renderers)]


# --- phases -------------------------------------------------------------------------------


def packages(env: PlanEnv) -> list[Step]:
    steps = []
    for node in env.nodes:
        facts = env.facts[node.name]
        debian = env.ctx.spec.cluster.os is OsFamily.DEBIAN12
        wanted = {*(DEBIAN_PACKAGES if debian else RHEL_PACKAGES), *quorum.packages(env)}
        missing = sorted(wanted - facts.packages)
        if missing and debian:
            install = (
                run("apt-get", "update", "-q", timeout=900),
                run("apt-get", "install", "-y", "-q", "--no-install-recommends", *missing,
                    DEBIAN_FRONTEND="noninteractive", timeout=1800),
            )  # fmt: skip
        elif missing:
            install = (
                # Pacemaker lives in the HighAvailability repo; DRBD 9 in ELRepo.
                run("dnf", "config-manager", "--set-enabled", "highavailability"),
                run("dnf", "install", "-y", *missing, timeout=1800),
            )
        if missing:
            steps.append(Step(node.name, "packages", f"install {' '.join(missing)}", install))
        if facts.qemu_caps_cached is False:  # also after a fresh install: no cache yet
            steps.append(_warm_qemu_capabilities(node.name))
    return steps


def _warm_qemu_capabilities(node: str) -> Step:
    """libvirt probes the QEMU binary at the first VM start on a node and caches the result:
    a second on real hardware, but on the TCG lab ~110 s inside the first start (measured:
    the cache file was written 114 s after vm-a's start was requested). Started in the
    background here, the probe overlaps the phases before the VMs start."""
    return Step(
        node,
        "packages",
        "probe QEMU capabilities for libvirt (in the background)",
        (
            run(
                "systemd-run", "--no-block", "--collect", "--quiet",
                "--description=hakvm: libvirt QEMU capability probe",
                "--property=StandardOutput=null",
                "virsh", "-c", "qemu:///system", "domcapabilities",
            ),
        ),
    )  # fmt: skip


def _network_interfaces(node: Node) -> list[str]:
    """Interfaces to (re)start, in dependency order: bonds (which enslave their members),
    then ethernets, VLANs (on a bond or NIC), then bridges (whose ports must exist first)."""
    ifaces = node.interfaces
    return [*ifaces.bonds, *ifaces.ethernets, *ifaces.vlans, *ifaces.bridges]


def network(env: PlanEnv) -> list[Step]:
    steps = []
    for node in env.nodes:
        writes = write_steps(env, node.name, "network", rendered_writes(env, node.name, "network"))
        facts = env.facts[node.name]
        ifs = node.interfaces
        expected = {
            name: [str(a) for a in cfg.addresses]
            for group in (ifs.bonds, ifs.ethernets, ifs.vlans, ifs.bridges)
            for name, cfg in group.items()
        }
        down = [
            name
            for name, addrs in expected.items()
            if not facts.links_up.get(name) or not set(addrs) <= set(facts.addresses.get(name, []))
        ]
        if not writes and not down:
            continue
        activate = Call(
            f"activate {', '.join(_network_interfaces(node))} with automatic rollback",
            _activate_network(node, env.ctx.spec.cluster.os),
        )
        steps.extend(writes)
        steps.append(Step(node.name, "network", "bring interfaces up", (activate,)))
    return steps


def _activate_network(node: Node, os_family: OsFamily) -> CallFunc:
    interfaces = _network_interfaces(node)
    return lambda nodes: actions.activate_network(
        nodes.connected(node.name), interfaces, os_family, lambda: nodes.probe(node.name)
    )


def hosts(env: PlanEnv) -> list[Step]:
    steps = []
    block = hosts_render.hosts_block(env.ctx)
    for node in env.nodes:
        current = env.facts[node.name].files.get("/etc/hosts")
        old = current.content.decode() if current else ""
        new = hosts_render.merge_hosts(old, block)
        if new != old:
            steps.append(
                Step(
                    node.name,
                    "hosts",
                    "update the hakvm block in /etc/hosts",
                    (Write("/etc/hosts", new.encode(), 0o644),),
                    file_diff("/etc/hosts", old.encode(), new.encode(), 0o644),
                )
            )
    return steps


def firewall(env: PlanEnv) -> list[Step]:
    steps = []
    for node in env.nodes:
        writes = write_steps(
            env, node.name, "firewall", rendered_writes(env, node.name, "firewall")
        )
        facts = env.facts[node.name]
        if env.ctx.spec.cluster.os is OsFamily.DEBIAN12:
            active = facts.services_active.get("hakvm-firewall", False)
            if writes or not active:
                writes.append(
                    Step(
                        node.name,
                        "firewall",
                        "load the hakvm nftables table",
                        (
                            run("systemctl", "daemon-reload"),
                            run(*ENABLE, "hakvm-firewall.service"),
                            run("systemctl", "restart", "hakvm-firewall.service"),
                        ),
                    )
                )
        elif writes:
            writes.append(
                Step(node.name, "firewall", "reload firewalld", (run("firewall-cmd", "--reload"),))
            )
        steps.extend(writes)
    return steps


def _lv_command(vm: Vm, node: Node, cluster: str) -> Run:
    st = node.storage
    size = f"{backing_size(vm.disk.size, vm.disk.mode)}b"
    # Tagged as this cluster's VM: the only LVs hakvm ever uses or removes (guards.py).
    tags = [a for tag in guards.lv_tags(cluster, vm.name) for a in ("--addtag", tag)]
    if st.thin_pool:
        pool = f"{st.volume_group}/{st.thin_pool}"
        return run("lvcreate", "-q", "-y", "-V", size, "-T", pool, "-n", vm.name, *tags,
                   "--addtag", FRESH_TAG)  # fmt: skip
    return run("lvcreate", "-q", "-y", "-L", size, "-n", vm.name, *tags, st.volume_group)


def storage(env: PlanEnv) -> list[Step]:
    steps = []
    for node in env.nodes:
        facts = env.facts[node.name]
        st = node.storage
        if st.volume_group not in facts.volume_groups:
            steps.append(_volume_group(node, facts, env.ctx.spec.cluster.name))
        if st.thin_pool and (st.volume_group, st.thin_pool) not in facts.logical_volumes:
            pool = run("lvcreate", "-q", "-y", "--type", "thin-pool", "-L", f"{st.size}b",
                       "-n", st.thin_pool, st.volume_group)  # fmt: skip
            title = f"create thin pool {st.volume_group}/{st.thin_pool}"
            steps.append(Step(node.name, "storage", title, (pool,)))
        cluster = env.ctx.spec.cluster.name
        for vm in env.ctx.spec.vms:
            lv = facts.logical_volumes.get((st.volume_group, vm.name))
            if lv is None:
                title = f"create volume {st.volume_group}/{vm.name}"
                steps.append(Step(node.name, "storage", title, (_lv_command(vm, node, cluster),)))
            elif tag := guards.lv_step(node.name, facts, cluster, lv, vm.name in env.options.adopt):
                steps.append(tag)
        master = env.secrets.drbd_master_file
        writes = [*rendered_writes(env, node.name, "drbd"), (DRBD_MASTER_PATH, master, 0o600)]
        steps.extend(write_steps(env, node.name, "storage", writes))
        steps.extend(_drbd_resources(env, node, steps))
    return steps


def _volume_group(node: Node, facts: NodeFacts, cluster: str) -> Step:
    st = node.storage
    if st.create_from is None:
        raise PlanError(
            f"{node.name}: volume group {st.volume_group} does not exist; create it or "
            "name a device in storage.create_from"
        )
    # Only here, with the device named and destroy_existing_data confirmed by validate, and
    # only a device that holds nothing or what the spec says it holds (guards.py).
    return guards.wipe_step(node, facts, cluster)


def _drbd_resources(env: PlanEnv, node: Node, earlier: list[Step]) -> list[Step]:
    """Each VM's DRBD resource up, or adjusted when `earlier` steps rewrote its file."""
    facts = env.facts[node.name]
    managed = _pacemaker_managed(facts)
    steps = []
    for vm in env.ctx.spec.vms:
        res = facts.drbd.get(vm.name)
        rewritten = any(s.title.endswith(f"/etc/drbd.d/{vm.name}.res") for s in earlier)
        adjust = Step(
            node.name,
            "storage",
            f"DRBD {vm.name}: adjust to the new configuration",
            (run("drbdadm", "adjust", vm.name),),
        )
        if vm.name in managed:
            # Pacemaker's drbd agent brings the resource up and down from now on; a
            # concurrent `drbdadm up` would race it (e.g. right after a node rebooted).
            steps += [adjust] if rewritten else []
        elif res is None or res.disk == "Diskless" or res.connection == "StandAlone":
            up = Call(f"drbdadm create-md (if none) + up {vm.name}", _drbd_up(node, vm))
            up_step = Step(node.name, "storage", f"DRBD {vm.name}: metadata and up", (up,))
            steps.append(_join_step(env, node, vm) if env.replacing == node.name else up_step)
        elif rewritten:
            steps.append(adjust)
    return steps


def _pacemaker_managed(facts: NodeFacts) -> set[str]:
    """VMs whose DRBD clone is in the live CIB of a running Pacemaker on this node."""
    if not facts.services_active.get("pacemaker") or not facts.cib:
        return set()
    return {
        vm_id[: -len("_drbd")]
        for vm_id in re.findall(r'<primitive[^>]*\bid="([^"]+_drbd)"', facts.cib)
    }


def _drbd_up(node: Node, vm: Vm) -> CallFunc:
    return lambda nodes: actions.drbd_up(nodes.connected(node.name), vm.name)


def _join_step(env: PlanEnv, node: Node, vm: Vm) -> Step:
    peer = next(n.name for n in env.nodes if n != node)
    lv = f"{node.storage.volume_group}/{vm.name}"
    join = Call(
        f"fresh metadata, resync paused, --discard-my-data; {peer} must be the SyncSource",
        lambda nodes: actions.join_as_sync_target(
            nodes.connected(node.name), nodes.connected(peer), vm.name, lv
        ),
    )
    return Step(node.name, "storage", f"DRBD {vm.name}: join as SyncTarget of {peer}", (join,))


def replication(env: PlanEnv) -> list[Step]:
    """Cluster-wide: first node decides the initial sync of each new resource."""
    steps = []
    first = env.nodes[0]
    for vm in env.ctx.spec.vms:
        states = [env.facts[n.name].drbd.get(vm.name) for n in env.nodes]
        if all(s is not None and s.disk == "UpToDate" for s in states):
            continue
        if any(s is not None and s.disk == "UpToDate" for s in states):
            continue  # a resync is (or will be) running in the background: never block on it
        steps.append(
            Step(
                first.name,
                "replication",
                f"DRBD {vm.name}: initial sync (skipped for fresh thin volumes)",
                (Call(f"initial sync decision for {vm.name}", _initial_sync(env, vm)),),
            )
        )
    for vm in env.ctx.spec.vms:
        # Until Pacemaker manages the VM, nothing else opens its DRBD device: the one time
        # hakvm may take Primary itself. Each run checks before it formats or creates, so an
        # apply interrupted anywhere before the cib phase redoes only what is missing.
        if vm.disk.mode is DiskMode.QCOW2_ON_XFS and not _in_live_cib(env, vm):
            steps.append(
                Step(
                    first.name,  # after that VM's initial sync step, on the same node
                    "replication",
                    f"DRBD {vm.name}: XFS and the qcow2 image on it (not yet in the cluster)",
                    (Call(f"XFS and qcow2 for {vm.name}", _prepare_qcow2(env, vm)),),
                )
            )
    return steps


def _in_live_cib(env: PlanEnv, vm: Vm) -> bool:
    return any(
        f.cib is not None and cib_merge.vm_resource_ids(f.cib, vm.name) for f in env.facts.values()
    )


def _first_primary(env: PlanEnv, vm: Vm) -> str:
    """The node a new VM's data starts from: the full-sync source, and where its qcow2 is made."""
    return vm.preferred_node or env.nodes[0].name


def _initial_sync(env: PlanEnv, vm: Vm) -> CallFunc:
    names = [n.name for n in env.nodes]
    volumes = [f"{n.storage.volume_group}/{vm.name}" for n in env.nodes]
    source = _first_primary(env, vm)
    return lambda nodes: actions.initial_sync(
        [nodes.connected(n) for n in names], vm.name, volumes, nodes.connected(source)
    )


def _prepare_qcow2(env: PlanEnv, vm: Vm) -> CallFunc:
    """XFS on the DRBD device and the qcow2 image inside (the recipe's layout), made on the
    VM's preferred node; the Filesystem resource mounts it from then on."""
    # /dev/drbdN, not /dev/drbd/by-res/...: the by-res layout differs between DRBD 8.4's
    # udev rules (by-res/NAME) and 9's (by-res/NAME/0); the minor is hakvm's own.
    device = env.ctx.derived.vms[vm.name].device
    names = [n.name for n in env.nodes]
    on = _first_primary(env, vm)
    return lambda nodes: actions.prepare_qcow2(
        {n: nodes.connected(n) for n in names}, on, vm.name, device=device,
        mount_dir=qcow2_dir(vm.name), image=qcow2_path(vm.name), size=vm.disk.size,
    )  # fmt: skip


def corosync(env: PlanEnv) -> list[Step]:
    steps = []
    for node in env.nodes:
        facts = env.facts[node.name]
        # The distribution's package starts a throw-away one-node cluster; its CIB would
        # carry a stale node entry into ours. It, or a cluster the user names, is moved
        # aside before the first start (guards.py); any other cluster is refused.
        takeover = guards.takeover(node.name, facts, env.ctx.spec.cluster.name, env.options)
        writes = write_steps(
            env,
            node.name,
            "corosync",
            [
                (AUTHKEY_PATH, env.secrets.authkey, 0o400),
                *rendered_writes(env, node.name, "corosync"),
            ],
        )
        active = facts.services_active.get("corosync", False)
        if takeover is not None:
            steps.append(takeover)
        if writes or not active or takeover is not None:
            steps.extend(writes)
            conf = facts.files.get("/etc/corosync/corosync.conf")
            if active and takeover is None and quorum.reload_only(writes, conf):
                continue  # two_node <-> quorum device: the quorum phase reloads both nodes
            env.restarts_corosync.add(node.name)
            restart = "restart" if (takeover is not None or not active) else "reload-or-restart"
            start = (run(*ENABLE, "corosync"), run("systemctl", restart, "corosync"))
            steps.append(Step(node.name, "corosync", "start corosync", start))
    return steps


def pacemaker(env: PlanEnv) -> list[Step]:
    """Debian 12: the carried resource-agents fix (render/agents.py), diverted first; then
    Pacemaker started where it is not."""
    steps = []
    for node in env.nodes:
        facts = env.facts[node.name]
        for path, text, mode in rendered_writes(env, node.name, "pacemaker"):
            if write_steps(env, node.name, "pacemaker", [(path, text, mode)]):
                divert = (run("sh", "-c", agents.DIVERT_SCRIPT, "sh", path),)
                steps.append(Step(node.name, "pacemaker", f"divert {path}", divert))
                # Shown whole, not as a diff against the library the diversion keeps.
                override = (Write(path, text, mode),)
                diff = file_diff(path, None, text, mode)
                steps.append(Step(node.name, "pacemaker", f"override {path}", override, diff))
        if not facts.services_active.get("pacemaker") or not facts.services_enabled.get(
            "pacemaker"
        ):
            steps.append(
                Step(
                    node.name,
                    "pacemaker",
                    "start pacemaker",
                    (
                        run(*ENABLE, "pacemaker"),
                        run("systemctl", "start", "pacemaker"),
                    ),
                )
            )
    if any(s.title == "start pacemaker" for s in steps):
        wait = (Call("wait for the cluster to form", _wait_cluster(env)),)
        title = "wait for both nodes online with a DC"
        steps.append(Step(env.nodes[0].name, "pacemaker", title, wait))
    return steps


def _wait_cluster(env: PlanEnv) -> CallFunc:
    names = [n.name for n in env.nodes]
    return lambda nodes: actions.wait_cluster(nodes.connected(names[0]), names)


def libvirt(env: PlanEnv) -> list[Step]:
    """Domain XML files (read by VirtualDomain at the next start or migration; a running VM
    is not restarted behind the admin's back) and the DRBD device udev rule."""
    steps = []
    for node in env.nodes:
        writes = write_steps(env, node.name, "libvirt", rendered_writes(env, node.name, "libvirt"))
        steps.extend(writes)
        if any("/etc/udev/rules.d/" in s.title for s in writes):
            steps.append(
                Step(
                    node.name,
                    "libvirt",
                    "reload udev rules for DRBD devices",
                    (
                        run("udevadm", "control", "--reload"),
                        run("udevadm", "trigger", "--subsystem-match=block", "--action=change"),
                    ),
                )
            )
        steps.extend(write_steps(env, node.name, "libvirt", _migration_trust(env, node.name)))
        facts = env.facts[node.name]
        if not facts.services_active.get("libvirtd") or not facts.services_enabled.get("libvirtd"):
            steps.append(
                Step(
                    node.name,
                    "libvirt",
                    "start libvirtd",
                    (run(*ENABLE, "--now", "libvirtd"),),
                )
            )
    return steps


def _migration_trust(env: PlanEnv, node: str) -> list[tuple[str, bytes, int]]:
    """Files giving `node` root SSH to its peer for live migration (render.migration)."""

    def current(path: str) -> str:
        fact = env.facts[node].files.get(path)
        return fact.content.decode("utf-8", "replace") if fact else ""

    host_keys = {}
    for name, facts in env.facts.items():
        fact = facts.files.get(migration.HOST_KEY_PATH)
        if fact is not None:
            host_keys[name] = fact.content.decode("utf-8", "replace")
    public = env.secrets.migration_public_key
    config = merge_block(current(migration.SSH_CONFIG_PATH), migration.ssh_config_block(env.ctx))
    authorized = merge_block(
        current(migration.AUTHORIZED_KEYS_PATH),
        migration.authorized_keys_block(env.ctx, node, public),
    )
    return [
        (migration.KEY_PATH, env.secrets.migration_key, 0o600),
        (migration.KNOWN_HOSTS_PATH, migration.known_hosts(env.ctx, host_keys).encode(), 0o644),
        (migration.SSH_CONFIG_PATH, config.encode(), 0o600),
        (migration.AUTHORIZED_KEYS_PATH, authorized.encode(), 0o600),
    ]


def monitoring(env: PlanEnv) -> list[Step]:
    """The nodes' agent (metrics timer, alert agent) and node_exporter: deploy/monitoring.py."""
    url = mon.read_webhook_url(env.ctx.spec, env.spec_dir)
    steps: list[Step] = []
    for node in env.nodes:
        writes = write_steps(env, node.name, mon.PHASE, rendered_writes(env, node.name, mon.PHASE))
        steps += mon.node_steps(env.ctx.spec, env.facts[node.name], writes, url)
    return steps


def fencing(env: PlanEnv) -> list[Step]:
    steps = []
    for node in env.nodes:
        writes = rendered_writes(env, node.name, "cib")
        for other in env.nodes:
            if other.name == node.name or other.bmc is None:
                continue
            password = env.bmc_passwords[other.name]
            if password.content is None:
                raise PlanError(password.problem)
            writes.append((password_file_path(other.name), password.content, 0o600))
        steps.extend(write_steps(env, node.name, "fencing", writes))
    return steps


def rendered_cib(env: PlanEnv) -> str:
    return next(f for f in env.rendered[CLUSTER] if f.path.endswith("cib.xml")).content


def live_cib(env: PlanEnv) -> tuple[str, str] | None:
    """(node, CIB) of the first node whose facts hold the live CIB; None: no cluster yet."""
    return next(((n, f.cib) for n, f in env.facts.items() if f.cib), None)


def cib(env: PlanEnv) -> list[Step]:
    rendered = rendered_cib(env)
    found = live_cib(env)
    live = found[1] if found else None
    target = env.nodes[0].name
    if live is None:
        return [
            Step(
                target,
                "cib",
                "push fencing (waited for when new), then resources (CIB patch)",
                (Call("patch the CIB", _push_cib(target, rendered)),),
                "(cluster not running yet)",
            )
        ]
    desired = cib_merge.desired_cib(live, rendered)
    before = cib_merge.configuration_text(live)
    after = cib_merge.configuration_text(desired)
    if before == after:
        return []
    diff = "".join(
        difflib.unified_diff(
            before.splitlines(True), after.splitlines(True), "cib (live)", "cib (desired)"
        )
    )
    return [
        Step(
            target,
            "cib",
            "push fencing (waited for when new), then resources (CIB patch)",
            (Call("patch the CIB", _push_cib(target, rendered)),),
            diff,
        )
    ]


def _push_cib(node: str, rendered: str) -> CallFunc:
    return lambda nodes: actions.push_cib(nodes.connected(node), rendered)


def vms(env: PlanEnv) -> list[Step]:
    wanted = [vm for vm in env.ctx.spec.vms if vm.autostart]
    if not wanted:
        return []
    live = None
    for facts in env.facts.values():
        if facts.crm_mon:
            live = parse_crm_mon(facts.crm_mon)
            break
    if live is not None and all(
        (r := live.resources.get(vm.name)) is not None and r.active_on for vm in wanted
    ):
        return []
    timeout = 2 * env.ctx.spec.cluster.timing.vm_start_timeout_s + 120
    wait = _wait_vms(env.nodes[0].name, wanted, timeout)
    return [
        Step(
            env.nodes[0].name,
            "vms",
            f"wait for {', '.join(v.name for v in wanted)} to run",
            (Call("wait for the VMs to be started by Pacemaker", wait),),
        )
    ]


def _wait_vms(node: str, wanted: list[Vm], timeout: float) -> CallFunc:
    names = [vm.name for vm in wanted]
    return lambda nodes: actions.wait_vms(nodes.connected(node), names, timeout)


PHASES: tuple[tuple[str, Phase], ...] = (
    ("packages", packages),
    ("network", network),
    ("hosts", hosts),
    ("firewall", firewall),
    ("storage", storage),
    ("replication", replication),
    ("qdevice", quorum.qdevice),
    ("corosync", corosync),
    ("quorum", quorum.quorum),
    ("pacemaker", pacemaker),
    ("libvirt", libvirt),
    ("fencing", fencing),
    ("monitoring", monitoring),
    ("cib", cib),
    ("vms", vms),
)
