"""`hakvm replace-node`: each refusal, the order of its steps (the new node's DRBD joins as
SyncTarget, direction checked before any data moves, before its cluster stack starts), and
what it does once the node is in the cluster, against the shared fake nodes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import shlex
from pathlib import Path

import pytest
import yaml

from hakvm.deploy import actions
from hakvm.deploy import phases as ph
from hakvm.deploy.steps import Call, Step, Write
from hakvm.ops import replace
from hakvm.remote import pacemaker
from hakvm.remote.connection import RemoteError
from hakvm.remote.disks import BlockDevice
from hakvm.remote.drbd import DrbdResource
from hakvm.remote.facts import FileFact, LogicalVolume
from hakvm.render import migration
from hakvm.render.base import MANAGED_HEADER, RenderContext, Secrets
from hakvm.render.tree import render_all
from hakvm.spec.models import ClusterSpec, OsFamily
from hakvm.spec.validate import validate_file
from tests.unit import test_quorum_plan as qd_plan
from tests.unit.fakes import FakeNode, FakeNodes
from tests.unit.test_plan import SECRETS, converged_facts, fresh_facts

REPO = Path(__file__).resolve().parents[2]
NEW, SURVIVOR = "node02", "node01"


def crm_mon(*, node02: str = 'online="false" unclean="false"', vm_b: str = "node01",
            quorum: str = "true") -> str:  # fmt: skip
    def vm(name: str, where: str) -> str:
        nodes = f'<node name="{where}" id="1" cached="true"/>' if where else ""
        active = "true" if where else "false"
        role = "Started" if where else "Stopped"
        return (
            f'<resource id="{name}" resource_agent="ocf:heartbeat:VirtualDomain" role="{role}" '
            f'active="{active}" failed="false" managed="true">{nodes}</resource>'
        )

    return (
        '<pacemaker-result api-version="2.25" request="crm_mon --output-as=xml">'
        f'<summary><current_dc present="true" name="node01" with_quorum="{quorum}"/>'
        '<cluster_options stonith-enabled="true" no-quorum-policy="stop" '
        'maintenance-mode="false"/></summary><nodes>'
        '<node name="node01" online="true" standby="false" unclean="false" '
        'maintenance="false" is_dc="true"/>'
        f'<node name="node02" {node02} standby="false" maintenance="false" is_dc="false"/>'
        f'</nodes><resources>{vm("vm-a", "node01")}{vm("vm-b", vm_b)}</resources>'
        "</pacemaker-result>"
    )


def waiting(vm: str, minor: int) -> DrbdResource:
    return DrbdResource(vm, minor, "WFConnection", "Primary", "Unknown", "UpToDate", "DUnknown")


@pytest.fixture
def env(tmp_path: Path) -> ph.PlanEnv:
    """examples/lab.yaml: node01 deployed and running both VMs, node02 reinstalled (empty)."""
    return replacing_env(tmp_path, "lab")


def replacing_env(tmp_path: Path, example: str) -> ph.PlanEnv:
    data = yaml.safe_load((REPO / "examples" / f"{example}.yaml").read_text())
    for node in data["nodes"]:
        secret = tmp_path / f"{node['name']}.pw"
        secret.write_text("secret\n")
        node["bmc"]["password_file"] = str(secret)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    report = validate_file(path)
    assert report.spec is not None and report.derived is not None
    ctx = RenderContext(report.spec, report.derived, Secrets(SECRETS.drbd_master))
    env = ph.PlanEnv(ctx, render_all(ctx), {}, SECRETS, tmp_path, replacing=NEW)
    facts = converged_facts(env)
    survivor = facts[SURVIVOR]
    survivor.crm_mon = crm_mon()
    survivor.drbd = {v: waiting(v, d.minor or 0) for v, d in survivor.drbd.items()}
    new = fresh_facts(NEW, "debian12")
    new.os_release = {"ID": "debian", "VERSION_ID": "12"}
    new.files[migration.HOST_KEY_PATH] = FileFact(b"ssh-ed25519 AAAAnewkey root@node02\n", 0o644)
    env.facts = {SURVIVOR: survivor, NEW: new}
    return env


def spec_of(env: ph.PlanEnv) -> ClusterSpec:
    return env.ctx.spec


# --- refusals ---------------------------------------------------------------------------------


def test_a_reinstalled_node_and_a_survivor_running_everything_pass(env: ph.PlanEnv) -> None:
    assert replace.refusals(spec_of(env), NEW, env.facts) == []


def _edit_survivor_drbd(env: ph.PlanEnv, **changes: str) -> None:
    res = env.facts[SURVIVOR].drbd["vm-b"]
    env.facts[SURVIVOR].drbd["vm-b"] = dataclasses.replace(res, **changes)


def _vg_with_vm(env: ph.PlanEnv) -> None:
    env.facts[NEW].volume_groups = {"hakvm": 16 * 1024**3}
    env.facts[NEW].logical_volumes = {
        ("hakvm", "vm-a"): LogicalVolume("vm-a", "hakvm", 1, "Vwi-a-tz--", "drbdpool", ())
    }


def _new_disk(env: ph.PlanEnv, **changes: object) -> None:
    disks = env.facts[NEW].disks
    disks.devices["/dev/vdb"] = dataclasses.replace(disks.devices["/dev/vdb"], **changes)


ONLINE = 'online="true" unclean="false"'
UNCLEAN = 'online="false" unclean="true"'
REFUSALS = {
    "vm-b not on the survivor": (
        lambda e: setattr(e.facts[SURVIVOR], "crm_mon", crm_mon(vm_b="")),
        "vm-b is not running on node01 (running on: nowhere)",
    ),
    "survivor's copy not whole": (
        lambda e: _edit_survivor_drbd(e, disk="Inconsistent"),
        "node01: DRBD vm-b is Inconsistent: no whole copy to sync from",
    ),
    "survivor's DRBD StandAlone": (
        lambda e: _edit_survivor_drbd(e, connection="StandAlone"),
        "node01: DRBD vm-b is StandAlone",
    ),
    "survivor's DRBD still connected": (
        lambda e: _edit_survivor_drbd(e, connection="Connected"),
        "node01: DRBD vm-b is Connected: its peer is still there",
    ),
    "node still in the cluster": (
        lambda e: setattr(e.facts[SURVIVOR], "crm_mon", crm_mon(node02=ONLINE)),
        "node02 is online in the cluster",
    ),
    "node not fenced": (
        lambda e: setattr(e.facts[SURVIVOR], "crm_mon", crm_mon(node02=UNCLEAN)),
        "node02 is UNCLEAN: node01 has not fenced it yet",
    ),
    "no quorum": (
        lambda e: setattr(e.facts[SURVIVOR], "crm_mon", crm_mon(quorum="false")),
        "node01 has no quorum",
    ),
    "no Pacemaker on the survivor": (
        lambda e: setattr(e.facts[SURVIVOR], "crm_mon", None),
        "node01: Pacemaker does not answer there",
    ),
    # apply's own disk guard (deploy/guards.wipe_target), as the storage phase uses it.
    "new disk holds a filesystem": (
        lambda e: _new_disk(e, fstype="ext4"),
        "node02: /dev/vdb holds a ext4 signature: the new node's disk must be empty",
    ),
    "new disk mounted": (
        lambda e: _new_disk(e, fstype="ext4", mountpoints=("/srv",)),
        "node02: /dev/vdb is in use (vdb is mounted at /srv)",
    ),
    "new disk partitioned": (
        lambda e: _new_disk(e, pttype="gpt", children=(
            BlockDevice("vdb1", "/dev/vdb1", 1024**3, "part", pttype="gpt"),)),
        "node02: /dev/vdb holds a gpt partition table (vdb1: no signature)",
    ),
    "new node's pool holds a VM": (
        _vg_with_vm,
        "node02: volume group hakvm already holds vm-a",
    ),
    "not reinstalled": (
        lambda e: e.facts[NEW].files.update({"/etc/corosync/corosync.conf": FileFact(
            MANAGED_HEADER.encode() + b"totem {}\n", 0o644)}),
        "node02 still holds the cluster's corosync configuration: it was not reinstalled",
    ),
    "cluster stack running": (
        lambda e: e.facts[NEW].services_active.update(corosync=True),
        "node02 runs corosync already",
    ),
    "DRBD up on the new node": (
        lambda e: e.facts[NEW].drbd.update({"vm-a": waiting("vm-a", 0)}),
        "node02 has DRBD resources up (vm-a)",
    ),
    "another OS": (
        lambda e: e.facts[NEW].os_release.update(ID="rocky"),
        "node02 runs rocky, the spec says debian",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_refusal_names_what_is_wrong(env: ph.PlanEnv, case: str) -> None:
    edit, expected = REFUSALS[case]
    edit(env)
    problems = replace.refusals(spec_of(env), NEW, env.facts)
    assert problems and any(p.startswith(expected) for p in problems), problems


def test_a_replacement_in_progress_may_run_again(env: ph.PlanEnv) -> None:
    """Interrupted after the DRBD join: the node is in the cluster and its copies are
    SyncTarget of the survivor's; running replace-node again continues."""
    env.facts[SURVIVOR].crm_mon = crm_mon(node02=ONLINE)
    for vm, res in env.facts[SURVIVOR].drbd.items():
        env.facts[SURVIVOR].drbd[vm] = dataclasses.replace(res, connection="PausedSyncS")
        env.facts[NEW].drbd[vm] = dataclasses.replace(
            res, connection="PausedSyncT", role="Secondary", disk="Inconsistent"
        )
    _vg_with_vm(env)
    assert replace.refusals(spec_of(env), NEW, env.facts) == []


# --- the plan: what runs, in which order --------------------------------------------------------


def test_the_new_node_joins_as_sync_target_before_its_cluster_stack_starts(
    env: ph.PlanEnv,
) -> None:
    steps, problems = replace.plan(env, NEW)
    assert problems == []
    phases = list(dict.fromkeys(s.phase for s in steps))
    assert phases == [p for p in replace.REPLACE_ORDER if p in phases]
    assert phases.index("libvirt") < phases.index("fencing") < phases.index("storage")
    assert phases.index("storage") < phases.index("corosync") < phases.index("pacemaker")
    # Its own alert agent and metrics too (the lab's first replaced node had neither).
    assert phases[-1] == "monitoring"
    installed = {a.path for s in steps for a in s.actions if isinstance(a, Write)}
    assert {"/usr/local/lib/hakvm/alert-agent", "/etc/systemd/system/hakvm-metrics.timer"} <= (
        installed
    )
    joins = [s for s in steps if "join as SyncTarget of node01" in s.title]
    assert [s.title.split(":")[0] for s in joins] == ["DRBD vm-a", "DRBD vm-b"]
    assert not any("metadata and up" in s.title for s in steps)
    first_cluster_step = min(i for i, s in enumerate(steps) if s.phase in ("corosync", "pacemaker"))
    assert all(steps.index(j) < first_cluster_step for j in joins)
    # The survivor gets one thing: node02's new host key for live migration. Nothing else.
    survivor = [s for s in steps if s.node == SURVIVOR]
    assert [s.phase for s in survivor] == ["libvirt"]
    (write,) = survivor[0].actions
    assert isinstance(write, Write) and write.path == migration.KNOWN_HOSTS_PATH
    assert b"AAAAnewkey" in write.content


def test_a_spec_that_differs_from_the_survivor_is_refused(env: ph.PlanEnv) -> None:
    conf = env.facts[SURVIVOR].files["/etc/corosync/corosync.conf"]
    env.facts[SURVIVOR].files["/etc/corosync/corosync.conf"] = FileFact(
        conf.content + b"# edited\n", conf.mode
    )
    _, problems = replace.plan(env, NEW)
    assert problems[0] == (
        "the spec is not what node01 runs (node01: corosync: update /etc/corosync/corosync.conf):"
        " use the spec the cluster was deployed with (replace-node changes nothing but the new "
        "node)"
    )
    assert all("(node01: corosync: " in p for p in problems)


def test_keep_runs_only_the_new_nodes_steps_and_the_peer_host_key() -> None:
    other = Step(SURVIVOR, "libvirt", "update x", (Write("/etc/x", b"", 0o600),))
    trust = Step(SURVIVOR, "libvirt", "update", (Write(migration.KNOWN_HOSTS_PATH, b"", 0o644),))
    wait = Step(SURVIVOR, "pacemaker", "wait", (Call("wait", lambda nodes: asyncio.sleep(0)),))
    assert replace.keep(Step(NEW, "storage", "x", ()), NEW)
    assert replace.keep(trust, NEW) and not replace.keep(other, NEW)
    assert not replace.keep(wait, NEW) and replace.drift([wait], NEW) == []
    assert replace.drift([other], NEW) == ["node01: libvirt: update x"]


# --- with a quorum device -------------------------------------------------------------------------


def _qdevice_env(tmp_path: Path) -> ph.PlanEnv:
    """examples/lab-qdevice.yaml: node01 deployed with the device and voting, node02 new."""
    env = replacing_env(tmp_path, "lab-qdevice")
    env.qnetd_ca = qd_plan.CA
    qd_plan.running({SURVIVOR: env.facts[SURVIVOR]}, device=True)
    return env


def test_the_new_node_gets_the_survivors_qdevice_certificates_and_votes_first(
    tmp_path: Path,
) -> None:
    """Nothing is signed again and the survivor's qdevice database is not touched (a setup
    would make both nodes' anew); the new node's corosync-qdevice votes before its
    Pacemaker starts."""
    env = _qdevice_env(tmp_path)
    steps, problems = replace.plan(env, NEW)
    assert problems == []
    assert [(s.phase, s.node, s.title) for s in steps if s.phase in ("qdevice", "quorum")] == [
        ("qdevice", NEW, "copy the qdevice certificates from node01"),
        ("quorum", NEW, "start corosync-qdevice"),
        ("quorum", NEW, "wait for the quorum device's vote"),
    ]
    phases = list(dict.fromkeys(s.phase for s in steps))
    assert phases.index("qdevice") < phases.index("corosync") < phases.index("quorum")
    assert phases.index("quorum") < phases.index("pacemaker")
    assert [s.phase for s in steps if s.node == SURVIVOR] == ["libvirt"]


def test_a_survivor_without_valid_qdevice_certificates_is_refused(tmp_path: Path) -> None:
    env = _qdevice_env(tmp_path)
    env.facts[SURVIVOR].qdevice_certs = None
    _, problems = replace.plan(env, NEW)
    assert problems[0].startswith(
        "qdevice: node01 holds no valid qdevice certificate for lab to copy to node02"
    )


def test_the_certificates_are_copied_read_only_from_the_survivor() -> None:
    nodes = FakeNodes()
    ca_text = "QNet CA dump\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    nodes[SURVIVOR].on("cat", out=ca_text)
    nodes[SURVIVOR].on("base64", out=base64.b64encode(b"\x30bundle").decode())
    asyncio.run(actions.copy_qdevice_certificates(nodes[SURVIVOR], nodes[NEW]))
    db = "/etc/corosync/qdevice/net/nssdb"
    assert [f"{s.node}: {shlex.join(s.argv)}" for s in nodes.sent] == [
        "node01: cat /etc/corosync/qdevice/net/qnetd-cacert.crt",
        f"node01: base64 -w0 {db}/qdevice-net-node.p12",
        f"node02: rm -rf {db}",
        "node02: corosync-qdevice-net-certutil -i -c /etc/corosync/qdevice/net/qnetd-cacert.crt",
        f"node02: corosync-qdevice-net-certutil -m -c {db}/qdevice-net-node.p12",
        "node02: systemctl try-restart corosync-qdevice",
    ]
    assert nodes[NEW].files["/etc/corosync/qdevice/net/qnetd-cacert.crt"] == ca_text.encode()
    assert nodes[NEW].files[f"{db}/qdevice-net-node.p12"] == b"\x30bundle"
    assert not nodes[SURVIVOR].files  # nothing written there


# --- the DRBD join: the direction, checked before any data moves ---------------------------------

PROC = "version: 8.4.11 (api:1/proto:86-101)\n 0: cs:{cs} ro:{ro} ds:{ds} C r-----\n"


def proc(cs: str, ro: str, ds: str, extra: str = "") -> str:
    return PROC.format(cs=cs, ro=ro, ds=ds) + extra


def _join_nodes(
    new_states: list[str], survivor_states: list[str], *, metadata: bool = False
) -> FakeNodes:
    nodes = FakeNodes()
    new, survivor = nodes[NEW], nodes[SURVIVOR]
    new.on("drbdadm", "dstate", rc=10, err="'vm-a' not defined\n")
    if metadata:
        new.on("drbdadm", "dump-md", out='version "v08";\n')
    else:
        new.on("drbdadm", "dump-md", rc=255, err="No valid meta data found\n")
    for node, states in ((new, new_states), (survivor, survivor_states)):
        node.on("drbdadm", "sh-minor", out="0\n")
        for text in states:
            node.on("cat", "/proc/drbd", out=text)
    return nodes


async def _no_sleep(_: float) -> None:
    return None


def _join(nodes: FakeNodes, timeout: float = 120) -> None:
    ticks = iter(range(10_000))
    asyncio.run(actions.join_as_sync_target(
        nodes[NEW], nodes[SURVIVOR], "vm-a", "hakvm/vm-a", timeout=timeout, sleep=_no_sleep,
        clock=lambda: float(next(ticks)),
    ))  # fmt: skip


def _commands(node: FakeNode) -> list[tuple[str, ...]]:
    reads = {("drbdadm", "sh-minor"), ("cat", "/proc/drbd"), ("drbdadm", "dstate"),
             ("drbdadm", "dump-md")}  # fmt: skip
    return [a for a in node.argvs if a[:2] not in reads]


def test_fresh_metadata_paused_then_connected_and_the_direction_checked() -> None:
    nodes = _join_nodes(
        [proc("WFConnection", "Secondary/Unknown", "Inconsistent/DUnknown"),
         proc("PausedSyncT", "Secondary/Primary", "Inconsistent/UpToDate")],
        [proc("WFBitMapS", "Primary/Secondary", "UpToDate/Inconsistent"),
         proc("PausedSyncS", "Primary/Secondary", "UpToDate/Inconsistent")],
    )  # fmt: skip
    _join(nodes)
    assert _commands(nodes[NEW]) == [
        ("drbdadm", "create-md", "--force", "vm-a"),
        # DRBD 8.4's `drbdadm attach` makes neither (its `drbdadm -d` shows only drbdmeta and
        # drbdsetup attach): the first lab run of the replacement drill failed without them.
        ("drbdadm", "new-resource", "vm-a"),
        ("drbdadm", "new-minor", "vm-a"),
        ("drbdadm", "attach", "vm-a"),
        ("drbdadm", "pause-sync", "vm-a"),  # before connecting: no data moves, either way
        ("drbdadm", "--", "--discard-my-data", "connect", "vm-a"),
        ("lvchange", "--deltag", actions.FRESH_TAG, "hakvm/vm-a"),
    ]
    assert _commands(nodes[SURVIVOR]) == []  # the survivor is only read


@pytest.mark.parametrize(
    ("new_state", "survivor_state", "why"),
    [
        (proc("PausedSyncS", "Secondary/Primary", "Inconsistent/UpToDate"),
         proc("PausedSyncT", "Primary/Secondary", "Inconsistent/Inconsistent"),
         "the peer's copy would be overwritten"),
        (proc("PausedSyncS", "Secondary/Primary", "UpToDate/UpToDate"),
         proc("WFBitMapT", "Primary/Secondary", "UpToDate/UpToDate"),
         "the new copy would be the source"),
        (proc("StandAlone", "Secondary/Unknown", "Inconsistent/DUnknown"),
         proc("WFConnection", "Primary/Unknown", "UpToDate/DUnknown"),
         "the new node refused the connection"),
    ],
)  # fmt: skip
def test_the_wrong_direction_disconnects_before_any_data_moves(
    new_state: str, survivor_state: str, why: str
) -> None:
    nodes = _join_nodes([new_state], [survivor_state])
    with pytest.raises(RemoteError, match=f"DRBD vm-a: {why}.*node02 disconnected before any"):
        _join(nodes)
    done = _commands(nodes[NEW])
    assert done[-1] == ("drbdadm", "disconnect", "vm-a")
    assert ("drbdadm", "resume-sync", "vm-a") not in done
    assert not any(a[0] == "lvchange" for a in done)
    assert _commands(nodes[SURVIVOR]) == []


def test_a_join_that_never_connects_gives_up_disconnected() -> None:
    nodes = _join_nodes(
        [proc("WFConnection", "Secondary/Unknown", "Inconsistent/DUnknown")],
        [proc("WFConnection", "Primary/Unknown", "UpToDate/DUnknown")],
    )
    with pytest.raises(RemoteError, match="no SyncTarget/SyncSource pair within 5s"):
        _join(nodes, timeout=5)
    assert _commands(nodes[NEW])[-1] == ("drbdadm", "disconnect", "vm-a")


def test_existing_metadata_on_the_new_node_is_never_overwritten() -> None:
    nodes = _join_nodes([], [], metadata=True)
    with pytest.raises(RemoteError, match="already has metadata or is up: not a fresh disk"):
        _join(nodes)
    assert _commands(nodes[NEW]) == []


# --- in the cluster: resync resumed and watched, constraints lifted, VMs untouched ---------------

CIB = (
    '<cib><configuration><constraints>'
    '<rsc_location id="drbd-fence-by-handler-vm-a-vm-a_drbd_clone" rsc="vm-a_drbd_clone"/>'
    '<rsc_location id="vm-a_prefers_node01" rsc="vm-a" node="node01" score="100"/>'
    "</constraints></configuration></cib>"
)


def status_xml(vm_a_call: str) -> str:
    return (
        '<status><node_state uname="node01"><lrm><lrm_resources>'
        f'<lrm_resource id="vm-a"><lrm_rsc_op id="vm-a_last_0" call-id="{vm_a_call}"/>'
        '<lrm_rsc_op id="vm-a_monitor_60000" call-id="99"/></lrm_resource>'
        '<lrm_resource id="vm-b"><lrm_rsc_op id="vm-b_last_0" call-id="41"/></lrm_resource>'
        "</lrm_resources></lrm></node_state></status>"
    )


def _finish(
    env: ph.PlanEnv,
    *,
    vm_a_call: str = "40",
    survivor_late: str = "UpToDate",
    unhealthy: int = 0,
) -> tuple[FakeNodes, replace.ReplaceReport, list[str]]:
    nodes = FakeNodes()
    new, survivor = nodes[NEW], nodes[SURVIVOR]
    survivor.on("crm_mon", out=crm_mon(node02=ONLINE))
    survivor.on("cibadmin", "-Q", "-o", "status", out=status_xml(vm_a_call))
    survivor.on("cibadmin", "-Q", out=CIB)
    survivor.on("crm_diff", rc=1, out="<diff/>")
    for node in (new, survivor):
        node.on("drbdadm", "sh-minor", "vm-a", out="0\n")
        node.on("drbdadm", "sh-minor", "vm-b", out="1\n")
    sync = " 1: cs:Connected ro:Primary/Primary ds:UpToDate/UpToDate C r-----\n"
    new.on("cat", "/proc/drbd", out=proc(
        "SyncTarget", "Secondary/Primary", "Inconsistent/UpToDate",
        "\t[==>.................] sync'ed: 12.5% (900/1024)M\n"
        "\tfinish: 0:01:30 speed: 10,000 (10,000) want: 40,960 K/sec\n") + sync)  # fmt: skip
    done = proc("Connected", "Primary/Primary", "UpToDate/UpToDate")
    new.on("cat", "/proc/drbd", out=done + sync)
    survivor.on("cat", "/proc/drbd", out=proc(
        "SyncSource", "Primary/Secondary", f"{survivor_late}/Inconsistent") + sync)  # fmt: skip
    said: list[str] = []
    report = replace.ReplaceReport(NEW, SURVIVOR)
    before = {("node01", "vm-a"): "40", ("node01", "vm-b"): "41"}

    answers = [(False, ["1 failed action(s): node02_fence monitor on node01"])] * unhealthy

    async def healthy() -> tuple[bool, list[str]]:
        return answers.pop(0) if answers else (True, [])

    ticks = iter(range(10_000))
    asyncio.run(replace.finish(
        spec_of(env), report, survivor, new, said.append, before, healthy, sleep=_no_sleep,
        clock=lambda: float(next(ticks)),
    ))  # fmt: skip
    return nodes, report, said


def test_in_the_cluster_the_resync_resumes_and_is_watched_with_its_eta(env: ph.PlanEnv) -> None:
    nodes, report, said = _finish(env)
    order = [(s.node, s.argv[0], s.argv[1] if len(s.argv) > 1 else "") for s in nodes.sent
             if s.argv[:2] not in (["cat", "/proc/drbd"], ["drbdadm", "sh-minor"])]  # fmt: skip
    assert order[:5] == [
        ("node01", "crm_mon", "--output-as=xml"),  # node02 online with a DC
        ("node01", "crm_resource", "--cleanup"),
        ("node01", "stonith_admin", "--history"),
        ("node01", "crm_resource", "--wait"),  # the new node's probes done first
        ("node02", "drbdadm", "resume-sync"),
    ]
    # One VM's resync at a time: vm-b's resumes once vm-a's copy is whole.
    events = [e.split(" (")[0] for _, e in report.timeline]
    assert events[1:6] == [
        "cluster idle",
        "vm-a: resync from node01 resumed", "vm-a: resync done",
        "vm-b: resync from node01 resumed", "vm-b: resync done",
    ]
    resumed = [s.argv[-1] for s in nodes.sent if s.argv[:2] == ["drbdadm", "resume-sync"]]
    assert resumed == ["vm-a", "vm-b"]
    assert ["crm_resource", "--cleanup", "--node", "node02"] in [s.argv for s in nodes.sent]
    assert said == ["resync from node01: vm-a 12.5% (ETA 0:01:30)"]
    assert set(report.resync_s) == {"vm-a", "vm-b"}
    # DRBD's own fencing constraint is lifted; the admin's preference stays.
    patched = nodes[SURVIVOR].files[pacemaker.DESIRED].decode()
    assert "drbd-fence-by-handler" not in patched and "vm-a_prefers_node01" in patched
    assert report.untouched is True and report.problems == []
    events = [e for _, e in report.timeline]
    assert events[0] == "node02 online in the cluster" and events[-1] == "cluster healthy"


def test_a_vm_that_moved_meanwhile_is_reported(env: ph.PlanEnv) -> None:
    _, report, _ = _finish(env, vm_a_call="57")
    assert report.untouched is False
    assert report.problems == ["stopped, started or moved meanwhile: vm-a on node01"]


def test_a_survivor_copy_that_stops_being_uptodate_stops_everything(env: ph.PlanEnv) -> None:
    with pytest.raises(replace.ReplaceFailed, match="the survivor's copy is Inconsistent") as info:
        _finish(env, survivor_late="Inconsistent")
    # vm-a's resync failed: vm-b's was never resumed, and the error says so.
    assert str(info.value).endswith(
        "still paused on node02: vm-b (replace-node again resumes them)"
    )


def test_failed_actions_are_cleaned_after_the_vms_history_was_read(env: ph.PlanEnv) -> None:
    """A cleanup re-probes and rewrites a resource's history: the comparison comes first."""
    nodes, report, _ = _finish(env, unhealthy=3)
    argvs = [s.argv for s in nodes.sent if s.node == SURVIVOR]
    history = argvs.index(["cibadmin", "-Q", "-o", "status"])
    cleanups = [i for i, a in enumerate(argvs) if a[:2] == ["crm_resource", "--cleanup"]]
    assert len(cleanups) == 3 and cleanups[0] < history < cleanups[1] < cleanups[2]
    assert argvs[cleanups[1]] == ["crm_resource", "--cleanup", "--node", "node02"]
    assert argvs[cleanups[2]] == ["crm_resource", "--cleanup"]  # then everywhere, once
    assert report.untouched is True and [e for _, e in report.timeline][-1] == "cluster healthy"


def test_only_debian_clusters_are_replaced_for_now(env: ph.PlanEnv) -> None:
    rhel = spec_of(env).model_copy(
        update={"cluster": spec_of(env).cluster.model_copy(update={"os": OsFamily.RHEL9})}
    )
    assert replace.refusals(rhel, NEW, env.facts) == [
        "replace-node supports Debian 12 (DRBD 8.4) only, for now"
    ]


def test_a_survivor_deployed_before_the_carried_agent_fix_gets_it_and_is_no_drift(
    env: ph.PlanEnv,
) -> None:
    """The fix only diverts and overrides one library file (no restart): a survivor that
    lacks it is brought up to date instead of refused as a spec it does not run."""
    from hakvm.render import agents

    env.facts[SURVIVOR].files[agents.LIBRARY] = FileFact(b"# packaged\n", 0o644)
    steps, problems = replace.plan(env, NEW)
    assert problems == []
    on_survivor = [s.title for s in steps if s.node == SURVIVOR and s.phase == "pacemaker"]
    assert on_survivor == [f"divert {agents.LIBRARY}", f"override {agents.LIBRARY}"]
