"""apply's Call actions (deploy/actions.py) against the shared fake node: the commands each
sends, in order, and above all what the safety-critical ones must never do: create DRBD
metadata where some exists, give up on a CIB that moved before retrying, or keep a network
change that cut the management path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hakvm.deploy import actions, cib_merge
from hakvm.remote import pacemaker
from hakvm.remote.connection import RemoteError
from hakvm.remote.facts import parse_batch
from hakvm.remote.pacemaker import PacemakerError
from hakvm.spec.models import OsFamily
from tests.unit.fakes import FakeNode, FakeNodes, Reply, next_answer

DATA = Path(__file__).parent / "data"
GOLDEN_CIB = Path(__file__).resolve().parents[1] / "render" / "golden" / "lab" / "cluster"


async def _no_sleep(_: float) -> None:
    return None


def _crm_mon() -> str:
    return parse_batch((DATA / "status-healthy-node01.b64").read_text())["crm_mon"][1].decode()


# --- DRBD metadata: created only where there is none ------------------------------------------

CREATE_MD = ("drbdadm", "create-md", "--force", "vm-a")
ADJUST = ("drbdadm", "adjust", "vm-a")


def test_attached_resource_is_only_adjusted() -> None:
    node = FakeNode().on("drbdadm", "dstate", out="UpToDate/UpToDate\n")
    asyncio.run(actions.drbd_up(node, "vm-a"))
    assert node.argvs == [("drbdadm", "dstate", "vm-a"), ADJUST]


def test_existing_metadata_is_never_recreated() -> None:
    node = FakeNode().on("drbdadm", "dstate", out="Diskless/DUnknown\n")
    node.on("drbdadm", "dump-md", out="version \"v08\";\n")
    asyncio.run(actions.drbd_up(node, "vm-a"))
    assert CREATE_MD not in node.argvs
    assert node.argvs[-1] == ADJUST


def test_metadata_is_created_where_drbdmeta_finds_none() -> None:
    node = FakeNode().on("drbdadm", "dstate", rc=10, err="'vm-a' not defined\n")
    node.on("drbdadm", "dump-md", rc=255, err="No valid meta data found\n")
    asyncio.run(actions.drbd_up(node, "vm-a"))
    assert node.argvs[-2:] == [CREATE_MD, ADJUST]
    assert node.sent[-2].stdin == "yes\n"  # create-md's own question, answered


def test_an_unexpected_dump_md_failure_creates_nothing() -> None:
    node = FakeNode().on("drbdadm", "dstate", out="Unconfigured\n")
    node.on("drbdadm", "dump-md", rc=20, err="open(/dev/hakvm/vm-a) failed: Device busy\n")
    with pytest.raises(RemoteError, match=r"node01: drbdadm dump-md vm-a: open.*Device busy"):
        asyncio.run(actions.drbd_up(node, "vm-a"))
    assert CREATE_MD not in node.argvs and ADJUST not in node.argvs


# --- the initial sync -------------------------------------------------------------------------


def _sync(tags: dict[str, str]) -> FakeNodes:
    nodes = FakeNodes()
    for name, tag in tags.items():
        nodes[name].on("drbdadm", "cstate", out="Connected\n").on("lvs", out=f"  {tag}\n")
    conns = [nodes["node01"], nodes["node02"]]
    volumes = ["hakvm/vm-a", "hakvm/vm-a"]
    asyncio.run(actions.initial_sync(conns, "vm-a", volumes, nodes["node02"], _no_sleep))
    return nodes


def test_two_fresh_thin_volumes_skip_the_initial_sync() -> None:
    nodes = _sync({"node01": actions.FRESH_TAG, "node02": actions.FRESH_TAG})
    sent = [(s.node, tuple(s.argv)) for s in nodes.sent]
    skip = ("node01", ("drbdadm", "--", "--clear-bitmap", "new-current-uuid", "vm-a"))
    assert skip in sent
    assert not any("primary" in argv for _, argv in sent)
    assert sent[-2:] == [
        ("node01", ("lvchange", "--deltag", actions.FRESH_TAG, "hakvm/vm-a")),
        ("node02", ("lvchange", "--deltag", actions.FRESH_TAG, "hakvm/vm-a")),
    ]


def test_anything_not_provably_identical_syncs_from_the_source() -> None:
    nodes = _sync({"node01": actions.FRESH_TAG, "node02": ""})
    sent = [(s.node, tuple(s.argv)) for s in nodes.sent]
    assert ("node02", ("drbdadm", "primary", "--force", "vm-a")) in sent
    assert not any("new-current-uuid" in argv for _, argv in sent)


def test_a_resource_that_never_connects_is_named() -> None:
    node = FakeNode().on("drbdadm", "cstate", out="StandAlone\n")
    ticks = iter(range(0, 1000, 60))
    with pytest.raises(RemoteError, match=r"DRBD vm-a did not connect within 120s \(node01: "):
        asyncio.run(
            actions.wait_connected([node], "vm-a", 120, _no_sleep, lambda: float(next(ticks)))
        )


# --- the network change and its rollback ------------------------------------------------------

TIMER = ("systemd-run", f"--unit={actions.ROLLBACK_UNIT}", "--on-active=120", "--collect",
         "/usr/local/lib/hakvm/net-rollback")  # fmt: skip
COMMIT = ("/usr/local/lib/hakvm/net-commit",)
STOP_TIMER = ("systemctl", "stop", f"{actions.ROLLBACK_UNIT}.timer")


def _activate(nodes: FakeNodes, os_family: OsFamily = OsFamily.DEBIAN12) -> None:
    node = nodes["node01"]
    asyncio.run(
        actions.activate_network(
            node, ["bond0", "br0"], os_family, lambda: nodes.probe("node01")
        )
    )


def test_network_change_is_armed_then_committed_once_ssh_gets_in() -> None:
    nodes = FakeNodes()
    _activate(nodes)
    argvs = nodes["node01"].argvs
    armed = argvs.index(TIMER)
    first_change = argvs.index(("ifdown", "--force", "br0"))  # bridges go down first
    assert armed < first_change
    assert argvs[first_change:first_change + 4] == [
        ("ifdown", "--force", "br0"), ("ifdown", "--force", "bond0"),
        ("ifup", "bond0"), ("ifup", "br0"),
    ]  # fmt: skip
    assert nodes.probes == ["node01"]
    assert argvs[-2:] == [STOP_TIMER, COMMIT]


def test_lost_management_path_leaves_the_rollback_armed() -> None:
    nodes = FakeNodes()
    nodes.probe_error = "cannot connect to root@10.0.0.1:22: timed out"
    with pytest.raises(RemoteError, match=r"management path lost .* restored within 120s"):
        _activate(nodes)
    argvs = nodes["node01"].argvs
    assert TIMER in argvs
    assert STOP_TIMER not in argvs and COMMIT not in argvs


def test_failed_ifup_leaves_the_rollback_armed() -> None:
    nodes = FakeNodes()
    nodes["node01"].on("ifup", "bond0", rc=1, err="bond0: no such device")
    with pytest.raises(RemoteError):
        _activate(nodes)
    assert nodes.probes == [] and COMMIT not in nodes["node01"].argvs


def test_rhel_brings_networkmanager_connections_up() -> None:
    nodes = FakeNodes()
    _activate(nodes, OsFamily.RHEL9)
    argvs = nodes["node01"].argvs
    assert ("nmcli", "connection", "up", "hakvm-bond0") in argvs
    assert not any(a[0] in ("ifup", "ifdown") for a in argvs)


# --- the CIB push: fencing first, retried when the CIB moved ----------------------------------

PATCH = ("cibadmin", "--patch", "--xml-file", pacemaker.PATCH)


def _rendered() -> str:
    return (GOLDEN_CIB / "cib.xml").read_text()


def _live() -> str:
    """The rendered CIB without hakvm's configuration: what a fresh cluster has."""
    from lxml import etree

    root = etree.fromstring(_rendered().encode())
    for section in ("resources", "constraints"):
        found = root.find(f"configuration/{section}")
        assert found is not None
        for child in list(found):
            found.remove(child)
    return etree.tostring(root, encoding="unicode")


class LiveCib:
    """A node's CIB as its tools see it: a patch applies (the CIB becomes the desired one
    staged on the node), except the first `moves` times, when the CIB moved under it."""

    def __init__(self, moves: int = 0) -> None:
        self.cib = _live()
        self.moves = moves
        self.pushed: list[str] = []
        # crm_mon's answers while apply waits for the fence devices (the last one repeats).
        self.crm_mon = [_crm_mon()]

    def __call__(self, node: FakeNode, argv: tuple[str, ...], stdin: bytes | None) -> Reply:
        if argv == ("cibadmin", "-Q"):
            return 0, self.cib
        if argv == tuple(pacemaker.CRM_MON_ARGV):
            return 0, next_answer(self.crm_mon)
        if argv[0] == "crm_diff":
            return 1, "<diff/>"  # 1: there are differences
        if argv == PATCH:
            if self.moves:
                self.moves -= 1
                return 1, "", "Update was older than existing configuration"
            self.cib = node.files[pacemaker.DESIRED].decode()
            self.pushed.append(self.cib)
        return 0, ""


def _crm_mon(*edits: tuple[str, str]) -> str:
    """The recorded healthy cluster's crm_mon (both fence devices started), edited."""
    from tests.unit.recorded import answers

    text = answers("healthy")["node01"].text("crm_mon")
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    return text


STARTED = 'id="node02_fence" resource_agent="stonith:fence_ipmilan" role="Started" active="true"'
STOPPED = 'id="node02_fence" resource_agent="stonith:fence_ipmilan" role="Stopped" active="false"'


def test_cib_push_patches_fencing_first_then_everything() -> None:
    cib = LiveCib()
    node = FakeNode(answer=cib)
    asyncio.run(actions.push_cib(node, _rendered(), _no_sleep))
    fencing, everything = cib.pushed
    fence_ids = cib_merge.stonith_ids(_rendered())
    assert fence_ids and all(f'id="{i}"' in fencing for i in fence_ids)
    assert 'id="vm-a"' not in fencing and 'id="vm-a"' in everything
    # Between the two, the new fence devices were seen started.
    patches = [i for i, a in enumerate(node.argvs) if a == PATCH]
    between = node.argvs[patches[0] : patches[1]]
    assert tuple(pacemaker.CRM_MON_ARGV) in between


def test_resources_wait_until_the_new_fence_devices_run() -> None:
    cib = LiveCib()
    cib.crm_mon = [_crm_mon((STARTED, STOPPED)), _crm_mon((STARTED, STOPPED)), _crm_mon()]
    node = FakeNode(answer=cib)
    asyncio.run(actions.push_cib(node, _rendered(), _no_sleep))
    assert node.argvs.count(tuple(pacemaker.CRM_MON_ARGV)) == 3 and len(cib.pushed) == 2


def test_a_fence_device_that_failed_to_start_stops_the_apply_before_any_resource() -> None:
    cib = LiveCib()
    failure = (
        '<failure op_key="node02_fence_start_0" node="node01" exitstatus="error" '
        'exitreason="" exitcode="1" call="28" status="Timed Out" task="start"/>'
    )
    failures = ("</resources>", f"</resources><failures>{failure}</failures>")
    cib.crm_mon = [_crm_mon((STARTED, STOPPED), failures)]
    node = FakeNode(answer=cib)
    with pytest.raises(RemoteError, match=r"fence device node02_fence start on node01 .*"
                       r"crm_resource --cleanup --resource node02_fence"):  # fmt: skip
        asyncio.run(actions.push_cib(node, _rendered(), _no_sleep))
    assert len(cib.pushed) == 1  # fencing only: no VM in a cluster that cannot fence


def test_a_fence_device_whose_node_is_offline_is_not_waited_for() -> None:
    """node02_fence runs only on node01: with node01 offline it cannot start, and the apply
    (on a cluster missing a node) goes on."""
    cib = LiveCib()
    node01 = '<node name="node01" id="1" online='
    offline = (f'{node01}"true"', f'{node01}"false"')
    cib.crm_mon = [_crm_mon((STARTED, STOPPED), offline)]
    asyncio.run(actions.push_cib(FakeNode(answer=cib), _rendered(), _no_sleep))
    assert len(cib.pushed) == 2


def test_a_fence_device_that_never_starts_times_out_by_name() -> None:
    cib = LiveCib()
    cib.crm_mon = [_crm_mon((STARTED, STOPPED))]
    ticks = iter(range(0, 10_000, 60))
    late = r"fence device\(s\) not started after 360s: node02_fence"
    with pytest.raises(RemoteError, match=late):
        asyncio.run(actions.push_cib(FakeNode(answer=cib), _rendered(), _no_sleep,
                                     clock=lambda: float(next(ticks))))  # fmt: skip


def test_cib_push_rereads_and_retries_when_the_cib_moved() -> None:
    cib = LiveCib(moves=2)
    node = FakeNode(answer=cib)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    asyncio.run(actions.push_cib(node, _rendered(), sleep))
    assert node.argvs.count(PATCH) == 4 and slept == [2, 2] and len(cib.pushed) == 2
    # Every attempt diffs against the CIB as read again, never a stale copy.
    reads_and_patches = [a for a in node.argvs if a in (("cibadmin", "-Q"), PATCH)]
    assert reads_and_patches == [("cibadmin", "-Q"), PATCH] * 4


def test_cib_push_gives_up_after_five_attempts() -> None:
    node = FakeNode(answer=LiveCib(moves=99))
    with pytest.raises(PacemakerError, match="the CIB patch did not apply after 5 attempts"):
        asyncio.run(actions.push_cib(node, _rendered(), _no_sleep))
    assert node.argvs.count(PATCH) == 5


def test_cib_push_with_nothing_to_change_patches_nothing() -> None:
    node = FakeNode().on("cibadmin", "-Q", out=_rendered())
    asyncio.run(actions.push_cib(node, _rendered(), _no_sleep))
    assert node.argvs == [("cibadmin", "-Q"), ("cibadmin", "-Q")]


# --- waiting for Pacemaker --------------------------------------------------------------------


def test_wait_cluster_asks_again_until_crm_mon_answers() -> None:
    node = FakeNode().on("crm_mon", rc=102, err="Not connected").on("crm_mon", out=_crm_mon())
    asyncio.run(actions.wait_cluster(node, ["node01", "node02"], sleep=_no_sleep))
    assert node.argvs.count(("crm_mon", "--output-as=xml", "-1")) == 2


def test_wait_cluster_times_out() -> None:
    node = FakeNode().on("crm_mon", rc=102, err="Not connected")
    ticks = iter(range(0, 1000, 100))
    with pytest.raises(RemoteError, match="did not form within 240s"):
        asyncio.run(
            actions.wait_cluster(
                node, ["node01", "node02"], sleep=_no_sleep, clock=lambda: float(next(ticks))
            )
        )


def test_wait_vms_returns_once_every_vm_runs_and_names_the_missing_ones() -> None:
    node = FakeNode().on("crm_mon", out=_crm_mon())
    asyncio.run(actions.wait_vms(node, ["vm-a", "vm-b"], 600, _no_sleep))
    ticks = iter(range(0, 10_000, 400))
    with pytest.raises(RemoteError, match=r"VMs not running after 600s: vm-c"):
        asyncio.run(
            actions.wait_vms(
                node, ["vm-a", "vm-c"], 600, _no_sleep, lambda: float(next(ticks))
            )
        )


# --- qcow2 on XFS -----------------------------------------------------------------------------


def test_qcow2_preparation_refuses_a_primary_and_formats_only_a_blank_device() -> None:
    nodes = FakeNodes()
    nodes["node02"].on("drbdadm", "role", out="Primary/Secondary\n")
    prepare = actions.prepare_qcow2(
        {"node01": nodes["node01"], "node02": nodes["node02"]}, "node01", "vm1",
        device="/dev/drbd0", mount_dir="/var/lib/hakvm/vm1", image="/var/lib/hakvm/vm1/d.qcow2",
        size=2**30,
    )  # fmt: skip
    with pytest.raises(RemoteError, match="DRBD vm1 is Primary on node02"):
        asyncio.run(prepare)
    assert not any(s.argv[:2] == ["drbdadm", "primary"] for s in nodes.sent)

    nodes = FakeNodes()
    nodes["node01"].on("blkid", out="xfs\n").on("test", rc=1)
    asyncio.run(
        actions.prepare_qcow2(
            {"node01": nodes["node01"], "node02": nodes["node02"]}, "node01", "vm1",
            device="/dev/drbd0", mount_dir="/m", image="/m/d.qcow2", size=2**30,
        )
    )  # fmt: skip
    argvs = nodes["node01"].argvs
    assert not any(a[0] == "mkfs.xfs" for a in argvs)  # XFS already there: kept
    assert ("qemu-img", "create", "-q", "-f", "qcow2", "/m/d.qcow2", str(2**30)) in argvs
    assert argvs[-2:] == [("umount", "/m"), ("drbdadm", "secondary", "vm1")]
