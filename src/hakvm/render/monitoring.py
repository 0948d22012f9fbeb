"""What watches the cluster on the nodes themselves (docs/metrics.md): hakvm's agent
(src/hakvm/agent, shipped as it is: its own Python files read here as data), the
`hakvm-metrics` timer that writes node_exporter's textfile every `monitoring.interval_s`, the
Pacemaker alert agent's launcher, /etc/hakvm/agent.json (what the agent knows of the cluster;
no secret) and the directories they need (systemd-tmpfiles).

The alert agent runs as Pacemaker's hacluster user: its files and directories are readable by
everyone (they hold no secret); the directory it writes events to is hacluster's.
"""

from __future__ import annotations

from importlib import resources

import hakvm
from hakvm.agent import layout
from hakvm.agent.config import AgentConfig, BmcConfig, VmConfig
from hakvm.render.base import RenderContext, Rendered, RenderedFile
from hakvm.render.cib import node_id, password_file_path
from hakvm.render.drbd import resync_attribute
from hakvm.spec.models import Node

RENDERER = "monitoring"
SERVICE = "hakvm-metrics.service"
TIMER = "hakvm-metrics.timer"
SERVICE_PATH = f"/etc/systemd/system/{SERVICE}"
TIMER_PATH = f"/etc/systemd/system/{TIMER}"
TMPFILES_PATH = "/etc/tmpfiles.d/hakvm-agent.conf"
HEADER = "# Managed by hakvm: generated from the cluster spec, changes are overwritten.\n"


def agent_sources() -> dict[str, str]:
    """The agent's modules by file name, as they are in this hakvm."""
    package = resources.files("hakvm.agent")
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in sorted(package.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".py")
    }


def launcher(module: str, what: str) -> str:
    """A script that runs `module`'s main() from the agent's package on the node (-I: no
    PYTHONPATH, no user site, no current directory: Pacemaker runs the alert agent with its
    own environment)."""
    return (
        "#!/usr/bin/python3 -I\n"
        f"{HEADER}"
        f"# {what}\n"
        "import sys\n\n"
        f"sys.path.insert(0, {layout.INSTALL_DIR!r})\n"
        f"from {layout.PACKAGE}.{module} import main\n\n"
        f"sys.exit(main({'sys.argv[1:]' if module == 'collector' else ''}))\n"
    )


def agent_config(ctx: RenderContext, node: Node) -> AgentConfig:
    spec = ctx.spec
    peer = next(n for n in spec.nodes if n.name != node.name)
    bmc = None
    if peer.bmc is not None:
        bmc = BmcConfig(peer.name, peer.bmc.address, peer.bmc.port, peer.bmc.user,
                        peer.bmc.lanplus, password_file_path(peer.name))  # fmt: skip
    return AgentConfig(
        cluster=spec.cluster.name,
        node=node.name,
        nodes=tuple((n.name, node_id(ctx, n.name)) for n in spec.nodes),
        vms=tuple(
            VmConfig(
                vm.name, vm.preferred_node, vm.autostart, vm.name,
                ctx.derived.vms[vm.name].minor, resync_attribute(vm.name),
            )
            for vm in spec.vms
        ),
        bonds={name: tuple(bond.members) for name, bond in node.interfaces.bonds.items()},
        peer_bmc=bmc,
        interval_s=spec.monitoring.interval_s,
        version=hakvm.__version__,
        qdevice=spec.quorum_device is not None,
    )


def service(interval_s: int) -> str:
    return (
        f"{HEADER}"
        "[Unit]\n"
        "Description=hakvm metrics for node_exporter's textfile collector (hakvm.prom)\n"
        "Documentation=https://github.com/ClusterLabs/ha_cluster_exporter\n"
        "After=corosync.service pacemaker.service\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={layout.COLLECTOR_PATH}\n"
        # Killed before the next run is due; the collector gives its tools less than this.
        f"TimeoutStartSec={max(4, interval_s - 1)}s\n"
        "Nice=10\n"
        "IOSchedulingClass=idle\n"
        "NoNewPrivileges=yes\n"
        "ProtectHome=yes\n"
        "PrivateTmp=yes\n"
    )


def timer(interval_s: int) -> str:
    return (
        f"{HEADER}"
        "[Unit]\n"
        f"Description=Write hakvm's metrics every {interval_s} s\n\n"
        "[Timer]\n"
        "OnActiveSec=1s\n"
        f"OnUnitActiveSec={interval_s}s\n"
        "AccuracySec=1s\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )


def tmpfiles() -> str:
    """The agent's directories, with the modes its users need (a directory apply creates
    to write a file is root's 0700)."""
    rows = [
        (layout.INSTALL_DIR, "0755", "root", "root"),
        (layout.PACKAGE_DIR, "0755", "root", "root"),
        (layout.LOG_DIR, "0755", "root", "root"),
        (layout.EVENTS_DIR, "0750", "hacluster", "haclient"),
        (layout.DRILLS_DIR, "0755", "root", "root"),
        (layout.ALERTS_CONF_DIR, "0755", "root", "root"),
    ]
    return HEADER + "".join(f"d {path} {mode} {user} {group} -\n"
                            for path, mode, user, group in rows)  # fmt: skip


def render(ctx: RenderContext) -> Rendered:
    mon = ctx.spec.monitoring
    if not (mon.metrics or mon.events):
        return {}
    common = [
        RenderedFile(f"{layout.PACKAGE_DIR}/{name}", text, 0o644)
        for name, text in agent_sources().items()
    ]
    common.append(RenderedFile(TMPFILES_PATH, tmpfiles(), 0o644))
    if mon.metrics:
        common += [
            RenderedFile(layout.COLLECTOR_PATH, launcher("collector", "hakvm-metrics.service "
                         "runs this: one run of the metrics collector."), 0o755),
            RenderedFile(SERVICE_PATH, service(mon.interval_s), 0o644),
            RenderedFile(TIMER_PATH, timer(mon.interval_s), 0o644),
        ]  # fmt: skip
    if mon.events:
        common.append(RenderedFile(layout.ALERT_AGENT_PATH, launcher(
            "events", "Pacemaker runs this (the CIB's hakvm-events alert) for each event."
        ), 0o755))  # fmt: skip
    out: Rendered = {}
    for node in ctx.spec.nodes:
        files = list(common)
        if mon.metrics:
            files.append(RenderedFile(layout.CONFIG_PATH, agent_config(ctx, node).to_json(),
                                      0o644))  # fmt: skip
        out[node.name] = files
    return out
