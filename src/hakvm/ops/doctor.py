"""`hakvm doctor`: real misconfigurations of a running cluster, each with the fix.

Where `hakvm status` says how the cluster is now, doctor says what will hurt at the next
failure: no fencing, one heartbeat path, DRBD not replicating, a risky no-quorum-policy,
skewed clocks, a degraded bond, readable secrets, and managed files that drifted from the
spec. Inputs are gathered once: the status batch (timed, for the clock) and the facts plan
reads. Every check is a pure function of them, so unit tests replay recorded output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from hakvm.deploy import phases as ph
from hakvm.deploy.engine import Deployment
from hakvm.deploy.secrets import SecretFileError, local_secret_modes, masked_paths, secret_paths
from hakvm.deploy.steps import Step
from hakvm.errors import MonitorCode
from hakvm.ops.findings import Finding, Skipped, critical, warning
from hakvm.ops.quorum_checks import (
    CONFIG_ID,
    HELD_ID,
    VOTE_ID,
    check_qdevice_config,
    check_qdevice_vote,
    check_wait_for_all_hold,
)
from hakvm.ops.status import pick_view
from hakvm.remote.connection import RemoteError
from hakvm.remote.drbd import DrbdResource
from hakvm.remote.events import ClockOffset, clock_offset_of
from hakvm.remote.facts import FileFact
from hakvm.remote.pacemaker import ClusterState
from hakvm.remote.probes import (
    LinkStatus,
    NodeAnswer,
    TimedAnswer,
    ask_all,
    drbd_of,
    parse_bonding,
    parse_cfgtool,
)
from hakvm.remote.session import Session
from hakvm.render.cib import drbd_clone_id, fence_id
from hakvm.render.drbd import resource_path
from hakvm.spec.derive import derive, interface_of
from hakvm.spec.models import ClusterSpec, Node, OsFamily
from hakvm.spec.validate import replication_exposure

# Pacemaker and corosync stay correct with skewed clocks, but failure-timeout expiry,
# constraint lifetimes (crm_resource --move --lifetime) and every post-mortem (logs, fence
# history) compare timestamps across nodes. NTP keeps nodes within milliseconds, so 2 s means
# time sync is broken, while staying clear of the noise of timing an SSH batch.
SKEW_THRESHOLD_S = 2.0

# Phases whose steps mean "a managed file or service differs from the spec". The others
# (packages, storage, replication, pacemaker, vms) create things rather than correct drift.
DRIFT_PHASES = ("network", "hosts", "firewall", "qdevice", "corosync", "quorum", "libvirt",
                "fencing", "cib")  # fmt: skip
SAFE_NO_QUORUM = ("stop", "freeze", "demote")
DRIFT_FIX = "hakvm plan SPEC to review, hakvm apply SPEC to restore"

class DoctorReport(BaseModel):
    cluster: str
    health: Literal["healthy", "degraded", "critical", "unknown"]
    exit_code: int = Field(
        description="0 nothing found (or advice only), 1 warnings, 2 any critical, 3 no node "
        "answered"
    )
    findings: list[Finding] = Field(description="critical first, advice last")
    checks_run: list[str] = Field(description="finding ids verified (absent unless listed)")
    skipped: list[str] = Field(description="checks that could not run, and why")


_critical, _warning = critical, warning  # (ops/findings.py) as every check below names them


# --- inputs --------------------------------------------------------------------------------------


@dataclass
class DeployView:
    """What plan sees: managed files (content, mode) per node and the steps it would take."""

    files: dict[str, dict[str, FileFact | None]] = field(default_factory=dict)
    drift: list[Step] = field(default_factory=list)
    error: str | None = None  # no facts at all: secrets and drift unchecked
    drift_error: str | None = None  # facts, but plan refused: drift unchecked
    proc_hidden: dict[str, bool | None] = field(default_factory=dict)  # /proc hidepid?


@dataclass
class Inputs:
    answers: dict[str, TimedAnswer]
    deployed: DeployView
    local_modes: dict[str, int | None]  # local secret file -> mode (None: absent)

    def node_answers(self) -> dict[str, NodeAnswer]:
        return {name: t.answer for name, t in self.answers.items()}

    def reachable(self) -> dict[str, NodeAnswer]:
        found = {n: a for n, a in self.node_answers().items() if a.raw is not None}
        if not found:
            raise Skipped("no node answered")
        return found


# --- fencing and quorum --------------------------------------------------------------------------


def _fence_target(spec: ClusterSpec, device: str) -> Node | None:
    return next((n for n in spec.nodes if fence_id(n.name) == device), None)


def _runs_somewhere(spec: ClusterSpec, state: ClusterState, device: str) -> bool:
    """Whether a node the device may run on is online (hakvm bans it from its target)."""
    target = _fence_target(spec, device)
    hosts = [n for n, s in state.nodes.items() if s.online and (not target or n != target.name)]
    return bool(hosts)


def check_fencing(spec: ClusterSpec, state: ClusterState) -> list[Finding]:
    found: list[Finding] = []
    if not state.stonith_enabled:
        found.append(
            _critical(
                "fencing-disabled",
                None,
                "fencing is disabled (stonith-enabled=false): a lost peer is never fenced, "
                "split-brain risk",
                "crm_attribute --type crm_config --name stonith-enabled --update true "
                "(hakvm apply SPEC restores it too)",
            )
        )
    devices = {rid: r for rid, r in state.resources.items() if r.agent.startswith("stonith:")}
    for node in spec.nodes:
        if fence_id(node.name) not in devices:
            found.append(
                _critical(
                    "fence-device-missing",
                    None,
                    f"no fence device {fence_id(node.name)} in the CIB: {node.name} cannot be "
                    "fenced",
                    "hakvm apply SPEC (the cib phase pushes fencing first)",
                )
            )
    for rid, res in sorted(devices.items()):
        if res.failed:
            found.append(_device_failed(spec, rid, f"fence device {rid} has failed"))
        elif not res.active_on and _runs_somewhere(spec, state, rid):
            found.append(
                _critical(
                    "fence-device-stopped",
                    None,
                    f"fence device {rid} is not started: its node cannot be fenced",
                    f"crm_resource --why --resource {rid} shows why; then "
                    f"crm_resource --cleanup --resource {rid}",
                )
            )
    for failure in state.failures:
        if failure.resource in devices:
            message = f"fence device failed action: {failure.describe()}"
            found.append(_device_failed(spec, failure.resource, message))
    return found


def _device_failed(spec: ClusterSpec, rid: str, message: str) -> Finding:
    target = _fence_target(spec, rid)
    bmc = target.bmc if target else None
    where = f"{target.name}'s BMC {bmc.address}:{bmc.port}" if target and bmc else "its BMC"
    return _critical(
        "fence-device-failed",
        None,
        message,
        f"make {where} answer with the spec's user and password, then "
        f"crm_resource --cleanup --resource {rid}",
    )


def check_no_quorum_policy(spec: ClusterSpec, state: ClusterState) -> list[Finding]:
    policy = state.no_quorum_policy
    if not policy:
        raise Skipped("crm_mon shows no no-quorum-policy")
    wanted = spec.cluster.no_quorum_policy
    if wanted in SAFE_NO_QUORUM:
        fix = f"hakvm apply SPEC restores no-quorum-policy={wanted}"
    else:
        fix = "set cluster.no_quorum_policy: stop in SPEC, then hakvm apply SPEC"
    if policy == "ignore":
        return [
            _critical(
                "no-quorum-policy-ignore",
                None,
                "no-quorum-policy=ignore: a partition without quorum keeps its resources; "
                "two_node already keeps the survivor quorate, so this only adds split-brain risk",
                fix,
            )
        ]
    if policy not in SAFE_NO_QUORUM:
        return [
            _warning(
                "no-quorum-policy-risky",
                None,
                f"no-quorum-policy={policy}: not one of {'/'.join(SAFE_NO_QUORUM)}",
                fix,
            )
        ]
    return []


# --- heartbeat -----------------------------------------------------------------------------------


def check_heartbeat_spec(spec: ClusterSpec) -> list[Finding]:
    if len(spec.heartbeat) >= 2:
        return []
    return [
        _warning(
            "heartbeat-single-link",
            None,
            f"the spec has one heartbeat network ({spec.heartbeat[0].network}): losing it "
            "makes the nodes fence each other",
            "add a second network (a back-to-back link) under heartbeat: in SPEC, "
            "then hakvm apply SPEC",
        )
    ]


def check_heartbeat_links(spec: ClusterSpec, answers: Mapping[str, NodeAnswer]) -> list[Finding]:
    found: list[Finding] = []
    for nodeid, node in enumerate(spec.nodes, start=1):
        answer = answers.get(node.name)
        if answer is None:
            continue
        text = answer.text("cfgtool")
        if not text.strip():
            found.append(
                _critical(
                    "heartbeat-down",
                    node.name,
                    f"corosync-cfgtool -s failed on {node.name}: corosync is not running or stuck",
                    f"on {node.name}: systemctl start corosync (journalctl -u corosync: why)",
                )
            )
            continue
        found += _link_findings(spec, node, parse_cfgtool(text, nodeid))
    return found


def check_guest_network(spec: ClusterSpec) -> list[Finding]:
    found = replication_exposure(spec, derive(spec))  # also a `validate` warning
    return [_warning(GUEST_NET, None, what, fix) for _, what, fix in found]


def _link_findings(spec: ClusterSpec, node: Node, links: list[LinkStatus]) -> list[Finding]:
    up = [lk for lk in links if lk.peer_connected]
    if not up:
        return [
            _critical(
                "heartbeat-down",
                node.name,
                f"no knet link to the peer is connected on {node.name}: the nodes are cut off",
                "restore a heartbeat network (cables, switch, ip -br link), then "
                "corosync-cfgtool -s on both nodes",
            )
        ]
    if len(links) < 2 <= len(spec.heartbeat):
        return [
            _warning(
                "heartbeat-single-link",
                node.name,
                f"corosync on {node.name} runs {len(links)} knet link, the spec has "
                f"{len(spec.heartbeat)}",
                "hakvm apply SPEC (corosync.conf gets every heartbeat network)",
            )
        ]
    found: list[Finding] = []
    for lk in links:
        if lk.peer_connected:
            continue
        iface = interface_of(node, lk.address) or "the interface"
        found.append(
            _warning(
                "heartbeat-link-down",
                node.name,
                f"knet link {lk.link} ({lk.address}) is down on {node.name}: "
                f"{len(up)} heartbeat path(s) left",
                f"check {iface} on {node.name} and the peer (cable, switch, ip -br link), "
                "then corosync-cfgtool -s",
            )
        )
    return found


# --- DRBD ----------------------------------------------------------------------------------------


def check_replication(spec: ClusterSpec, answers: Mapping[str, NodeAnswer]) -> list[Finding]:
    found: list[Finding] = []
    for name, answer in sorted(answers.items()):
        resources = drbd_of(answer)
        for vm in spec.vms:
            if vm.name not in resources:
                found.append(
                    _critical(
                        "vm-no-replication",
                        name,
                        f"{vm.name} has no DRBD resource up on {name}: its disk is not "
                        "replicated there",
                        f"crm_resource --cleanup --resource {drbd_clone_id(vm.name)} "
                        f"(Pacemaker brings DRBD up; hakvm apply SPEC if {resource_path(vm.name)} "
                        "is missing)",
                    )
                )
    return found


def check_drbd(spec: ClusterSpec, answers: Mapping[str, NodeAnswer]) -> list[Finding]:
    found: list[Finding] = []
    for name, answer in sorted(answers.items()):
        resources = drbd_of(answer)
        for vm in spec.vms:
            res = resources.get(vm.name)
            if res is None:
                continue  # check_replication reports it
            if res.connection == "StandAlone":
                found.append(_split_brain(name, res))
            elif (res.connection, res.disk, res.peer_disk) != ("Connected", "UpToDate", "UpToDate"):
                state = f"{res.connection} {res.disk}/{res.peer_disk}"
                if res.sync_percent is not None:
                    state += f", {res.sync_percent:.1f}% synced"
                found.append(
                    _warning(
                        "drbd-not-uptodate",
                        name,
                        f"DRBD {vm.name} on {name} is {state}: no full replica until it is "
                        "UpToDate/UpToDate",
                        _drbd_fix(name, res),
                    )
                )
    return found


def _split_brain(node: str, res: DrbdResource) -> Finding:
    r = res.name
    return _critical(
        "drbd-split-brain",
        node,
        f"DRBD {r} is StandAlone on {node} (split-brain or refused peer): replication stopped",
        f"on the node whose changes to discard (its VM stopped): drbdadm secondary {r} && "
        f"drbdadm connect --discard-my-data {r}; on the other: drbdadm connect {r}",
    )


def _drbd_fix(node: str, res: DrbdResource) -> str:
    if res.connection.startswith("Sync") or res.connection.startswith("PausedSync"):
        return "wait for the resync: hakvm status SPEC --watch 10 shows progress and ETA"
    if res.connection != "Connected":
        return (
            f"on {node} and the peer: drbdadm connect {res.name}; if it stays "
            f"{res.connection}, check the replication network"
        )
    if res.disk in ("Diskless", "Failed"):
        return f"on {node}: drbdadm attach {res.name} (dmesg tells why the backing LV failed)"
    return f"on {node}: drbdadm disconnect {res.name} && drbdadm connect {res.name}"


# --- clock ---------------------------------------------------------------------------------------


def clock_offset(timed: TimedAnswer) -> ClockOffset | None:
    return clock_offset_of(timed.answer.text("clock"), timed.sent, timed.received)


def check_clock(spec: ClusterSpec, answers: Mapping[str, TimedAnswer]) -> list[Finding]:
    offsets: dict[str, ClockOffset] = {}
    for node in spec.nodes:
        timed = answers.get(node.name)
        if timed is not None and (offset := clock_offset(timed)) is not None:
            offsets[node.name] = offset
    missing = [n.name for n in spec.nodes if n.name not in offsets]
    if missing:
        raise Skipped(f"no clock answer from {', '.join(missing)}")
    (a, oa), (b, ob) = offsets.items()
    skew = abs(oa.offset_s - ob.offset_s)
    uncertainty = oa.uncertainty_s + ob.uncertainty_s
    if skew > SKEW_THRESHOLD_S + uncertainty:
        return [
            _warning(
                "clock-skew",
                None,
                f"the clocks of {a} and {b} differ by {skew:.1f} s (+/- {uncertainty:.1f} s)",
                _time_sync_fix(spec.cluster.os),
            )
        ]
    if skew + uncertainty > SKEW_THRESHOLD_S:
        raise Skipped(
            f"inconclusive: {skew:.1f} s +/- {uncertainty:.1f} s between the nodes (the "
            f"batches ran too slowly to bound a {SKEW_THRESHOLD_S:g} s skew)"
        )
    return []


def _time_sync_fix(os_family: OsFamily) -> str:
    if os_family is OsFamily.RHEL9:
        return "on both nodes: systemctl enable --now chronyd; check with chronyc tracking"
    return "on both nodes: apt install chrony (it starts NTP sync); check with chronyc tracking"


# --- bonds ---------------------------------------------------------------------------------------


def check_bonds(spec: ClusterSpec, answers: Mapping[str, NodeAnswer]) -> list[Finding]:
    found: list[Finding] = []
    for node in spec.nodes:
        answer = answers.get(node.name)
        if answer is None:
            continue
        for name, bond in sorted(node.interfaces.bonds.items()):
            text = answer.text(f"bond_{name}")
            if not text:
                found.append(
                    _warning(
                        "bond-degraded",
                        node.name,
                        f"{name} does not exist on {node.name} (no /proc/net/bonding/{name})",
                        "hakvm apply SPEC (the network phase creates it)",
                    )
                )
                continue
            found += _bond_findings(node.name, name, bond.members, text)
    return found


def _bond_findings(node: str, name: str, members: Sequence[str], text: str) -> list[Finding]:
    status = parse_bonding(name, text)
    found = [
        _warning(
            "bond-degraded",
            node,
            f"{name} member {m} is down on {node} (MII down)",
            f"check {m}'s cable and switch port on {node}: ip -br link show {m}",
        )
        for m in status.members_down
    ]
    missing = [m for m in members if m not in status.members_up + status.members_down]
    if missing:
        found.append(
            _warning(
                "bond-degraded",
                node,
                f"{name} on {node} lacks spec member(s) {', '.join(missing)}",
                "hakvm apply SPEC (the network phase enslaves them again)",
            )
        )
    return found


# --- secrets -------------------------------------------------------------------------------------


def _exposed(mode: int | None) -> bool:
    return mode is not None and mode & 0o077 != 0


def check_node_secrets(
    spec: ClusterSpec, files: Mapping[str, Mapping[str, FileFact | None]]
) -> list[Finding]:
    found: list[Finding] = []
    for node, node_files in sorted(files.items()):
        # authkey, DRBD master secret and resources (their shared secret), the migration
        # SSH key (root on the peer), the fence passwords
        for path in sorted({*secret_paths(spec), *masked_paths(spec)}):
            fact = node_files.get(path)
            if fact is not None and _exposed(fact.mode):
                found.append(
                    _critical(
                        "secret-readable",
                        node,
                        f"{path} on {node} is group/other accessible (mode {fact.mode:04o})",
                        f"on {node}: chmod go-rwx {path}",
                    )
                )
    return found


def check_local_secrets(modes: Mapping[str, int | None]) -> list[Finding]:
    return [
        _critical(
            "local-secret-readable",
            None,
            f"local {path} is group/other accessible (mode {mode:04o})",
            f"chmod go-rwx {path}",
        )
        for path, mode in sorted(modes.items())
        if mode is not None and _exposed(mode)
    ]


def check_hidepid(spec: ClusterSpec, deployed: DeployView) -> list[Finding]:
    """fence_ipmilan passes the BMC password to `ipmitool -P` at every fence monitor: with
    /proc mounted without hidepid any local process can read it (docs/known-limits.md)."""
    _facts(deployed)
    if not (hidden := {n: h for n, h in deployed.proc_hidden.items() if h is not None}):
        raise Skipped("no node said how /proc is mounted")
    exposed = [n for n, h in sorted(hidden.items()) if not h and any(x.bmc for x in spec.nodes)]
    return [
        Finding(
            check="proc-hidepid", severity="advice", node=node,
            message=f"/proc on {node} is mounted without hidepid: any local process (QEMU "
            "runs as libvirt-qemu) can read the BMC password fence_ipmilan gives ipmitool -P",
            fix=f"on {node}: mount -o remount,hidepid=2 /proc; in /etc/fstab: "
            "proc /proc proc defaults,hidepid=2 0 0",
        )
        for node in exposed
    ]


# --- drift ---------------------------------------------------------------------------------------


def check_drift(steps: Sequence[Step]) -> list[Finding]:
    return [
        _warning("drift", s.node, f"drifted: {s.title}", DRIFT_FIX)
        for s in steps
        if s.phase in DRIFT_PHASES
    ]


# --- reachability --------------------------------------------------------------------------------


def check_reachable(spec: ClusterSpec, answers: Mapping[str, NodeAnswer]) -> list[Finding]:
    found: list[Finding] = []
    for node in spec.nodes:
        answer = answers.get(node.name)
        if answer is not None and answer.raw is not None:
            continue
        ssh = node.ssh
        found.append(
            _warning(
                "node-unreachable",
                node.name,
                f"{node.name} did not answer, its checks were skipped: "
                f"{answer.error if answer else 'not asked'}",
                f"make ssh -p {ssh.port} {ssh.user}@{ssh.host} work (nodes.{node.name}.ssh)",
            )
        )
    return found


# --- running the checks (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    ids: tuple[str, ...]  # every finding id it can report: all verified when it runs
    run: Callable[[], list[Finding]]


GUEST_NET = "replication-on-guest-network"
FENCING_IDS = ("fencing-disabled", "fence-device-missing", "fence-device-stopped",
               "fence-device-failed")  # fmt: skip


def _needs(value: ClusterState | None) -> ClusterState:
    if value is None:
        raise Skipped("no node answered with Pacemaker's state (crm_mon)")
    return value


def _facts(deployed: DeployView) -> dict[str, dict[str, FileFact | None]]:
    if deployed.error is not None:
        raise Skipped(f"no facts: {deployed.error}")
    return deployed.files


def _drift(deployed: DeployView) -> list[Step]:
    _facts(deployed)
    if deployed.drift_error is not None:
        raise Skipped(f"plan refused: {deployed.drift_error}")
    return deployed.drift


def checks(spec: ClusterSpec, inputs: Inputs) -> list[Check]:
    _, state = pick_view(inputs.node_answers())  # the crm_mon view `hakvm status` trusts
    deployed = inputs.deployed
    return [
        Check(("node-unreachable",), lambda: check_reachable(spec, inputs.node_answers())),
        Check(FENCING_IDS, lambda: check_fencing(spec, _needs(state))),
        Check(
            ("no-quorum-policy-ignore", "no-quorum-policy-risky"),
            lambda: check_no_quorum_policy(spec, _needs(state)),
        ),
        Check(("heartbeat-single-link",), lambda: check_heartbeat_spec(spec)),
        Check((GUEST_NET,), lambda: check_guest_network(spec)),
        Check(
            ("heartbeat-down", "heartbeat-link-down"),
            lambda: check_heartbeat_links(spec, inputs.reachable()),
        ),
        Check(("vm-no-replication",), lambda: check_replication(spec, inputs.reachable())),
        Check(
            ("drbd-split-brain", "drbd-not-uptodate"),
            lambda: check_drbd(spec, inputs.reachable()),
        ),
        Check(("clock-skew",), lambda: check_clock(spec, inputs.answers)),
        Check(("bond-degraded",), lambda: check_bonds(spec, inputs.reachable())),
        Check((VOTE_ID,), lambda: check_qdevice_vote(spec, inputs.reachable())),
        Check((CONFIG_ID,), lambda: check_qdevice_config(_facts(deployed))),
        Check((HELD_ID,), lambda: check_wait_for_all_hold(spec, inputs.reachable())),
        Check(("local-secret-readable",), lambda: check_local_secrets(inputs.local_modes)),
        Check(("secret-readable",), lambda: check_node_secrets(spec, _facts(deployed))),
        Check(("proc-hidepid",), lambda: check_hidepid(spec, deployed)),
        Check(("drift",), lambda: check_drift(_drift(deployed))),
    ]


def diagnose(spec: ClusterSpec, inputs: Inputs) -> DoctorReport:
    findings: list[Finding] = []
    checks_run: list[str] = []
    skipped: list[str] = []
    for check in checks(spec, inputs):
        try:
            findings += check.run()
        except Skipped as why:
            skipped.append(f"{', '.join(check.ids)}: {why}")
            continue
        checks_run += [i for i in check.ids if i not in checks_run]
    findings.sort(key=lambda f: ("critical", "warning", "advice").index(f.severity))  # stable
    code = MonitorCode.HEALTHY
    if graded := [f for f in findings if f.severity != "advice"]:
        critical = any(f.severity == "critical" for f in graded)
        code = MonitorCode.CRITICAL if critical else MonitorCode.DEGRADED
    if all(a.raw is None for a in inputs.node_answers().values()):
        code = MonitorCode.UNKNOWN  # nothing answered: the checks that ran prove little
    return DoctorReport(
        cluster=spec.cluster.name,
        health=("healthy", "degraded", "critical", "unknown")[code],
        exit_code=code,
        findings=findings,
        checks_run=checks_run,
        skipped=skipped,
    )


# --- gathering -----------------------------------------------------------------------------------


async def deployment_view(spec: ClusterSpec, spec_path: Path) -> DeployView:
    """One facts gather for both the node secret modes and the drift (plan's own steps,
    computed as `engine.plan` does, without gathering the same facts a second time)."""
    try:
        async with Deployment(spec, spec_path) as dep:
            facts, builder = await dep.gather()
    except (RemoteError, SecretFileError, ValueError) as exc:
        return DeployView(error=str(exc))
    view = DeployView(files={name: f.files for name, f in facts.items()})
    view.proc_hidden = {name: f.proc_hides_processes for name, f in facts.items()}
    env = builder.env(facts)
    try:
        view.drift = [s for name, phase in ph.PHASES if name in DRIFT_PHASES for s in phase(env)]
    except ph.PlanError as exc:
        view.drift_error = str(exc)
    return view


async def doctor(spec: ClusterSpec, spec_path: Path) -> DoctorReport:
    # The status batch first, alone: beside the facts gather it took ~20 s per node on the
    # lab instead of ~8 s, and the clock bound (half the round trip) grows with it.
    answers = await ask_all(Session(spec, spec_path))
    deployed = await deployment_view(spec, spec_path)
    return diagnose(spec, Inputs(answers, deployed, local_secret_modes(spec, spec_path)))
