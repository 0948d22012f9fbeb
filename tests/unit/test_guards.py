"""Never destroy what hakvm did not create (issue 16, items 1-3), from recorded-style facts:

1. a cluster configuration that is not this spec's cluster is refused (read from the CIB on
   disk too, so a stopped cluster is seen) and never deleted: moved aside, only when it is a
   throw-away one-node cluster or the user names it (--replace-cluster);
2. the disk storage.create_from names is refused when it is in use or holds data the spec
   does not name (lsblk/pvs/by-id answers in tests/unit/data);
3. an existing VM logical volume is used only if tagged as this cluster's VM, made by an
   earlier hakvm (proven by its DRBD resource file), or adopted with --adopt.
"""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess

import pytest

from hakvm.deploy import cib_merge, engine, guards
from hakvm.deploy import phases as ph
from hakvm.deploy.guards import RunOptions
from hakvm.deploy.steps import Run, Step
from hakvm.ops import vm as ops
from hakvm.remote.facts import (
    FileFact,
    LogicalVolume,
    NodeFacts,
    facts_from_batch,
    parse_batch,
    parse_corosync_conf,
)
from hakvm.render.corosync import PATH as COROSYNC_PATH
from hakvm.render.drbd import resource_path
from hakvm.spec.models import ClusterSpec
from tests.unit.test_plan import _env, _spec_file, converged_facts, fresh_facts
from tests.unit.test_vm import FakeCluster, live_cib, teardown

DATA = pathlib.Path(__file__).parent / "data"
NODES = ("node01", "node02")


def argvs(steps: list[Step]) -> list[tuple[str, ...]]:
    return [a.argv for s in steps for a in s.actions if isinstance(a, Run)]


def with_options(
    env: ph.PlanEnv, replace_cluster: str | None = None, adopt: frozenset[str] = frozenset()
) -> ph.PlanEnv:
    options = RunOptions(replace_cluster, adopt, stamp="20260101T000000Z")
    return dataclasses.replace(env, options=options)


# --- 1. the cluster ----------------------------------------------------------------------------

DEBIAN_CONF = (DATA / "corosync-debian-default.conf").read_bytes()  # Debian 12's, as installed
PROD_CONF = b"""totem {
    version: 2
    cluster_name: prod
    transport: knet
}
nodelist {
    node {
        name: db1
        nodeid: 1
        ring0_addr: 192.0.2.11
    }
    node {
        name: db2
        nodeid: 2
        ring0_addr: 192.0.2.12
    }
}
quorum {
    provider: corosync_votequorum
    two_node: 1
}
"""


def a_cib(cluster: str, nodes: list[str], resources: str = "") -> str:
    """A CIB as Pacemaker keeps it: `cibadmin --empty`'s, plus what the controller writes
    (the cluster name from corosync.conf, the nodes) and `resources`."""
    nvpair = (
        f'<nvpair id="cib-bootstrap-options-cluster-name" name="cluster-name" value="{cluster}"/>'
    )
    listed = "".join(f'<node id="{i}" uname="{n}"/>' for i, n in enumerate(nodes, start=1))
    return (
        '<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.9" epoch="5" num_updates="0" '
        'admin_epoch="0"><configuration><crm_config>'
        f'<cluster_property_set id="cib-bootstrap-options">{nvpair}</cluster_property_set>'
        f"</crm_config><nodes>{listed}</nodes><resources>{resources}</resources><constraints/>"
        "</configuration><status/></cib>"
    )


PROD_CIB = a_cib(
    "prod",
    ["db1", "db2"],
    '<primitive id="db-ip" class="ocf" provider="heartbeat" type="IPaddr2"/>'
    '<primitive id="postgres" class="ocf" provider="heartbeat" type="pgsql"/>',
)
DEBIAN_CIB = a_cib("debian", ["node1"])  # the one-node cluster Debian's package starts


def stopped_cluster(tmp_path: pathlib.Path, conf: bytes, cib: str) -> ph.PlanEnv:
    """Fresh lab nodes where another cluster's Pacemaker is installed but stopped: no live
    CIB, only the one on disk."""
    env = _env(_spec_file(tmp_path, "lab"), {n: fresh_facts(n, "debian12") for n in NODES})
    for facts in env.facts.values():
        facts.files[COROSYNC_PATH] = FileFact(conf, 0o644)
        facts.cib_on_disk = cib
        facts.services_active["pacemaker"] = facts.services_active["corosync"] = False
    return env


def test_a_stopped_foreign_cluster_is_refused_naming_it(tmp_path: pathlib.Path) -> None:
    env = stopped_cluster(tmp_path, PROD_CONF, PROD_CIB)
    with pytest.raises(ph.PlanError) as refused:
        ph.corosync(env)
    line = str(refused.value)
    assert line == (
        "node01: belongs to cluster prod (corosync.conf not hakvm's, nodes db1, db2; CIB not "
        "hakvm's, 2 resource(s): db-ip, postgres), not to this spec's lab: refusing to replace "
        "it; --replace-cluster prod moves its configuration aside and replaces it"
    )
    assert "\n" not in line
    # Before any phase runs (nothing changed), exit 3.
    with pytest.raises(engine.RefusedError, match=r"^corosync: node01: belongs to cluster prod"):
        engine.preflight(env)
    assert engine.RefusedError.exit_code == 3


def test_replace_cluster_moves_it_aside_and_deletes_nothing(tmp_path: pathlib.Path) -> None:
    env = with_options(stopped_cluster(tmp_path, PROD_CONF, PROD_CIB), replace_cluster="prod")
    steps = ph.corosync(env)
    dest = "/var/lib/pacemaker/cib/hakvm-moved-20260101T000000Z"
    first = steps[0]
    assert first.title == (
        f"stop cluster prod and move its configuration to {dest}/ (--replace-cluster prod)"
    )
    assert argvs([first]) == [
        ("systemctl", "stop", "pacemaker", "corosync"),
        ("sh", "-c", guards.MOVE_SCRIPT, "sh", dest, COROSYNC_PATH),
    ]
    assert not any("rm" in " ".join(a) for a in argvs(steps))
    # The other cluster's name, not just any: still refused.
    with pytest.raises(ph.PlanError, match="cluster prod"):
        ph.corosync(with_options(env, replace_cluster="other"))


def test_the_word_hakvm_does_not_make_a_cluster_hakvms(tmp_path: pathlib.Path) -> None:
    """Running, named like hakvm, without hakvm's header: another cluster still."""
    named = PROD_CONF.replace(b"cluster_name: prod", b"cluster_name: hakvm-prod  # hakvm")
    env = stopped_cluster(tmp_path, named, PROD_CIB.replace('"prod"', '"hakvm-prod"'))
    for facts in env.facts.values():
        facts.cib, facts.cib_on_disk = facts.cib_on_disk, None
        facts.services_active["pacemaker"] = True
    with pytest.raises(ph.PlanError, match="belongs to cluster hakvm-prod"):
        ph.corosync(env)


def test_another_hakvm_cluster_is_foreign_too(tmp_path: pathlib.Path) -> None:
    env = _env(_spec_file(tmp_path, "lab"), {})
    env.facts = converged_facts(env)
    ours = env.facts["node02"].files[COROSYNC_PATH]
    assert ours is not None
    other = ours.content.replace(b"cluster_name: lab", b"cluster_name: lab2")
    env.facts["node02"].files[COROSYNC_PATH] = FileFact(other, 0o644)
    cib = env.facts["node02"].cib
    assert cib is not None
    env.facts["node02"].cib = cib.replace("<crm_config>", "<crm_config>" + NAME_LAB2)
    hakvms = r"^node02: belongs to cluster lab2 \(corosync.conf hakvm's, nodes node01, node02;"
    with pytest.raises(ph.PlanError, match=hakvms):
        ph.corosync(env)


NAME_LAB2 = (
    '<cluster_property_set id="x"><nvpair id="x-n" name="cluster-name" value="lab2"/>'
    "</cluster_property_set>"
)


def test_the_distributions_one_node_cluster_is_moved_not_deleted(tmp_path: pathlib.Path) -> None:
    env = with_options(stopped_cluster(tmp_path, DEBIAN_CONF, DEBIAN_CIB))
    steps = ph.corosync(env)
    assert next(s.title for s in steps if s.node == "node01").startswith(
        "stop cluster debian and move its configuration to /var/lib/pacemaker/cib/hakvm-moved-"
    )
    assert "no resources" in steps[0].diff
    stock = parse_corosync_conf(DEBIAN_CONF.decode())  # its commented-out ring1_addr is not one
    assert (stock.cluster_name, stock.nodes) == ("debian", ("node1",))
    assert stock.addresses == ("127.0.0.1",)
    assert not any("rm" in " ".join(a) for a in argvs(steps))
    assert argvs(steps)[-1] == ("systemctl", "restart", "corosync")


def test_hakvms_own_stopped_cluster_is_left_alone(tmp_path: pathlib.Path) -> None:
    env = _env(_spec_file(tmp_path, "lab"), {})
    env.facts = converged_facts(env)
    facts = env.facts["node02"]
    facts.cib_on_disk, facts.cib = facts.cib, None
    facts.services_active["pacemaker"] = False
    assert ph.corosync(env) == []
    # hakvm's marker is in the CIB it pushes; the controller adds the cluster name.
    summary = cib_merge.summarize(ph.rendered_cib(env))
    assert summary.hakvm and summary.resources
    recorded = parse_batch((DATA / "facts-node01.b64").read_text())["cib"][1].decode()
    assert cib_merge.summarize(recorded) == dataclasses.replace(
        cib_merge.summarize(recorded), cluster_name="lab", hakvm=True
    )
    assert not cib_merge.summarize(PROD_CIB).hakvm


def test_the_move_script_moves_every_cib_file_and_copies_the_rest(tmp_path: pathlib.Path) -> None:
    cib_dir = tmp_path / "cib"
    cib_dir.mkdir()
    names = ["cib.xml", "cib.xml.sig", "cib-7.raw", "cib-7.raw.sig", "cib.last"]
    for name in names:
        (cib_dir / name).write_text(name)
    conf = tmp_path / "corosync.conf"
    conf.write_text("conf")
    dest = cib_dir / "hakvm-moved-x"
    argv = ["sh", "-c", guards.MOVE_SCRIPT, "sh", str(dest), str(conf), str(tmp_path / "none")]
    subprocess.run(argv, check=True)
    assert sorted(p.name for p in cib_dir.iterdir()) == ["hakvm-moved-x"]
    assert sorted(p.name for p in dest.iterdir()) == sorted([*names, "corosync.conf"])
    assert conf.read_text() == "conf" and dest.stat().st_mode & 0o777 == 0o700


# --- 2. the disk storage.create_from names --------------------------------------------------


def recorded_disks(name: str) -> NodeFacts:
    """A node with the disks of tests/unit/data/disks-* (through the facts batch parser)."""
    batch = {
        "lsblk": (0, (DATA / "disks-lsblk.json").read_bytes()),
        "pvs": (0, (DATA / "disks-pvs.json").read_bytes()),
        "disk_links": (0, (DATA / "disks-links.txt").read_bytes()),
    }
    facts = facts_from_batch(fresh_facts(name, "debian12"), batch, [], {})
    facts.files["/etc/hosts"] = fresh_facts(name, "debian12").files["/etc/hosts"]
    return facts


def create_from(tmp_path: pathlib.Path, **device: object) -> ph.PlanEnv:
    def edit(data: dict[str, list[dict[str, dict[str, object]]]]) -> None:
        for node in data["nodes"]:
            node["storage"]["volume_group"] = "vg0"  # not there yet: create_from is used
            node["storage"]["create_from"] = {"destroy_existing_data": True, **device}

    path = _spec_file(tmp_path, "lab", edit)
    return _env(path, {n: recorded_disks(n) for n in NODES})


def wipe(env: ph.PlanEnv) -> Step:
    steps = [s for s in ph.storage(env) if s.title.startswith("wipe ")]
    return steps[0]


@pytest.mark.parametrize(
    ("device", "refusal"),
    [
        ("/dev/sdb", r"/dev/sdb is in use \(sdb1 is mounted at /srv\)"),
        ("/dev/sda", r"sda1 is mounted at /boot/efi; sda2 is mounted at /; sda3 is active swap"),
        ("/dev/sdc1", r"/dev/sdc1 holds a ext4 signature: .*expect_signature: ext4$"),
        ("/dev/sdc", r"holds a gpt partition table \(sdc1: ext4\): .*expect_signature: gpt$"),
        ("/dev/sdd", r"holds an LVM physical volume of volume group backup: .*LVM2_member$"),
        ("/dev/sde", r"data-srv is mounted at /var/lib/data; data-srv \(lvm\) sits on sde"),
        ("/dev/sdg", r"/dev/sdg is in use \(md0 \(raid1\) sits on sdg\)"),
        ("/dev/sdz", r"storage.create_from.device /dev/sdz not found"),
    ],
)
def test_a_disk_in_use_or_holding_data_is_refused(
    tmp_path: pathlib.Path, device: str, refusal: str
) -> None:
    env = create_from(tmp_path, device=device)
    with pytest.raises(ph.PlanError, match=f"^node01: .*{refusal}"):
        ph.storage(env)


def test_a_pinned_signature_lets_that_data_go_but_never_a_mount(tmp_path: pathlib.Path) -> None:
    step = wipe(create_from(tmp_path, device="/dev/sdd", expect_signature="LVM2_member"))
    assert "wipes an LVM physical volume of volume group backup" in step.diff
    with pytest.raises(ph.PlanError, match="is in use"):
        ph.storage(create_from(tmp_path, device="/dev/sde", expect_signature="LVM2_member"))
    with pytest.raises(ph.PlanError, match=r"expect_signature is ext4 but .* \(signature gpt\)"):
        ph.storage(create_from(tmp_path, device="/dev/sdc", expect_signature="ext4"))
    # Pinned, but the device holds nothing (not the one the admin looked at): refused too.
    with pytest.raises(ph.PlanError, match=r"but /dev/sdf holds nothing \(signature none\)"):
        ph.storage(create_from(tmp_path, device="/dev/sdf", expect_signature="ext4"))


def test_a_stable_by_id_name_is_resolved_and_shown_with_its_lsblk_line(
    tmp_path: pathlib.Path,
) -> None:
    by_id = "/dev/disk/by-id/wwn-0x5002538e40a1b2c3"
    step = wipe(create_from(tmp_path, device=by_id, serial="S3Z9NB0K123456"))
    assert step.title == f"wipe {by_id} and create volume group vg0"
    assert step.diff.splitlines() == [
        f"{by_id} on node01 (lsblk):",
        'NAME="sdf" PATH="/dev/sdf" SIZE="1920383410176" TYPE="disk" FSTYPE="" PTTYPE="" '
        'MOUNTPOINTS="" SERIAL="S3Z9NB0K123456" WWN="0x5002538e40a1b2c3"',
    ]
    assert argvs([step]) == [
        ("wipefs", "-a", by_id),
        ("vgcreate", "-q", "-y", "--addtag", "hakvm_cluster=lab", "vg0", by_id),
    ]
    # A free partition of the root disk, by its by-id name, is fine too.
    wipe(create_from(tmp_path, device="/dev/disk/by-id/wwn-0x5002538e09a1b2c3-part4"))
    with pytest.raises(ph.PlanError, match=r"serial: .* has serial S3Z9NB0K123456 and WWN"):
        ph.storage(create_from(tmp_path, device=by_id, serial="ZA4B9X8Y"))


def test_the_labs_recorded_pv_with_volumes_is_in_use(tmp_path: pathlib.Path) -> None:
    """Real answers of a deployed lab node (the lsblk of before: names as paths)."""
    env = create_from(tmp_path, device="/dev/vdb")
    recorded = parse_batch((DATA / "facts-node01.b64").read_text())
    for name in NODES:
        env.facts[name] = facts_from_batch(fresh_facts(name, "debian12"), recorded, [], {})
    with pytest.raises(ph.PlanError, match=r"/dev/vdb is in use \(.*hakvm-drbdpool_tmeta"):
        ph.storage(env)


# --- 3. each VM's logical volume ---------------------------------------------------------------


def planted(tmp_path: pathlib.Path, tags: tuple[str, ...] = (), legacy: bool = False) -> ph.PlanEnv:
    """The converged lab, with vm-b's LV as `tags` say (and, unless `legacy`, no DRBD file
    for it yet: a VM just added to the spec, an LV of that name already there)."""
    env = _env(_spec_file(tmp_path, "lab"), {})
    env.facts = converged_facts(env)
    for facts in env.facts.values():
        lv = facts.logical_volumes[("hakvm", "vm-b")]
        facts.logical_volumes[("hakvm", "vm-b")] = dataclasses.replace(lv, tags=tags)
        if not legacy:
            facts.files[resource_path("vm-b")] = None
    return env


def lv_steps(env: ph.PlanEnv) -> list[Step]:
    """The storage phase's steps that tag an existing LV (adopted or an earlier hakvm's)."""
    return [s for s in ph.storage(env) if s.title.startswith(("adopt ", "tag "))]


def test_new_volumes_are_tagged_as_this_clusters_vm(tmp_path: pathlib.Path) -> None:
    env = _env(_spec_file(tmp_path, "lab"), {n: fresh_facts(n, "debian12") for n in NODES})
    creates = [a for a in argvs(ph.storage(env)) if a[:1] == ("lvcreate",) and "-V" in a]
    assert len(creates) == 4
    for argv in creates:
        vm = argv[argv.index("-n") + 1]
        assert ("--addtag", "hakvm_cluster=lab", "--addtag", f"hakvm_vm={vm}") == argv[-6:-2]


@pytest.mark.parametrize(
    ("tags", "shown"),
    [((), "untagged"), (("hakvm_cluster=prod", "hakvm_vm=vm-b"), "tagged hakvm_cluster=prod")],
)
def test_an_lv_hakvm_did_not_make_is_refused_unless_adopted(
    tmp_path: pathlib.Path, tags: tuple[str, ...], shown: str
) -> None:
    env = planted(tmp_path, tags)
    with pytest.raises(ph.PlanError) as refused:
        ph.storage(env)
    assert str(refused.value).startswith(
        f"node01: logical volume hakvm/vm-b exists and is not hakvm's ({shown}"
    )
    assert str(refused.value).endswith("--adopt vm-b takes it over")
    adopt, _ = lv_steps(with_options(env, adopt=frozenset({"vm-b"})))
    assert adopt.title.startswith("adopt hakvm/vm-b (--adopt vm-b; ")
    drop = ("--deltag", "hakvm_cluster=prod") if tags else ()
    assert argvs([adopt]) == [
        ("lvchange", *drop, "--addtag", "hakvm_cluster=lab",
         *(() if tags else ("--addtag", "hakvm_vm=vm-b")), "hakvm/vm-b"),
    ]  # fmt: skip


def test_an_earlier_hakvms_untagged_lv_is_recognised_and_tagged(tmp_path: pathlib.Path) -> None:
    env = planted(tmp_path, legacy=True)
    tag, _ = lv_steps(env)
    assert tag.title == (
        "tag hakvm/vm-b as cluster lab's (made by an earlier hakvm: /etc/drbd.d/vm-b.res names it)"
    )
    lv = env.facts["node01"].logical_volumes[("hakvm", "vm-b")]
    res = env.facts["node01"].files[resource_path("vm-b")]
    conf = env.facts["node01"].files[COROSYNC_PATH]
    assert res is not None and conf is not None

    def owner(res: bytes, conf: bytes, lv: LogicalVolume = lv, node: str = "node01") -> str:
        return guards.lv_owner(lv, node, "lab", res, conf).name

    assert owner(res.content, conf.content) == "EARLIER"
    # No proof: the file is not hakvm's, names another disk or node, or the node is in
    # another cluster.
    assert owner(res.content.split(b"\n", 1)[1], conf.content) == "UNTAGGED"
    assert owner(res.content.replace(b"/dev/hakvm/vm-b", b"/dev/vg/vm-b"), conf.content) == (
        "UNTAGGED"
    )
    assert owner(res.content, conf.content, node="node03") == "UNTAGGED"
    assert owner(res.content, conf.content.replace(b"cluster_name: lab", b"cluster_name: x")) == (
        "UNTAGGED"
    )


# --- vm remove --delete-storage ---------------------------------------------------------------


def remove(cluster: FakeCluster, spec: ClusterSpec) -> ops.RemoveResult:
    return teardown(cluster, spec, force=True, delete_storage=True)


@pytest.fixture
def lab_spec(tmp_path: pathlib.Path) -> ClusterSpec:
    return _env(_spec_file(tmp_path, "lab"), {}).ctx.spec


def test_remove_delete_storage_refuses_an_lv_not_this_clusters(lab_spec: ClusterSpec) -> None:
    cluster = FakeCluster(live_cib())
    cluster.lvs["node02"]["hakvm/vm-a"] = ""  # untagged, and no hakvm DRBD file proves it
    with pytest.raises(ops.VmStateError, match=r"^node02: logical volume hakvm/vm-a is not "):
        remove(cluster, lab_spec)
    assert cluster.mutations() == []


def test_remove_delete_storage_tags_an_earlier_hakvms_lv_first(
    lab_spec: ClusterSpec, tmp_path: pathlib.Path
) -> None:
    env = _env(_spec_file(tmp_path, "lab"), {})
    rendered = {f.path: f.content.encode() for f in env.rendered["node01"]}
    cluster = FakeCluster(live_cib())
    cluster.texts = {p: rendered[p] for p in (COROSYNC_PATH, resource_path("vm-a"))}
    for node in NODES:
        cluster.lvs[node]["hakvm/vm-a"] = ""
    cluster.texts[resource_path("vm-a")] = cluster.texts[resource_path("vm-a")].replace(
        b"on node02 {", b"on node02-gone {"
    )  # proves node01's LV only
    with pytest.raises(ops.VmStateError, match=r"^node02: logical volume"):
        remove(cluster, lab_spec)
    assert cluster.mutations() == []  # both nodes checked before anything changes
    cluster.texts[resource_path("vm-a")] = rendered[resource_path("vm-a")]
    remove(cluster, lab_spec)
    tagged = ("lvchange", "--addtag", "hakvm_cluster=lab", "--addtag", "hakvm_vm=vm-a")
    assert cluster.mutations()[:2] == [(n, (*tagged, "hakvm/vm-a")) for n in NODES]
    assert cluster.mutations()[-1] == ("node02", ("lvremove", "-y", "hakvm/vm-a"))


def test_remove_reads_the_proof_but_not_the_drbd_secret(tmp_path: pathlib.Path) -> None:
    """vm remove's grep, run for real on a rendered resource file with its secret."""
    env = _env(_spec_file(tmp_path, "lab"), {})
    rendered = {f.path: f.content for f in env.rendered["node01"]}
    res = tmp_path / "vm-a.res"
    res.write_text(rendered[resource_path("vm-a")])
    proof = subprocess.run([*ops.RES_PROOF, str(res)], capture_output=True, check=True).stdout
    assert b"shared-secret" not in proof and b"secret" not in proof.lower()
    lv = LogicalVolume("vm-a", "hakvm", 1, "Vwi-a-tz--", "drbdpool", ())
    conf = rendered[COROSYNC_PATH].encode()
    for node in NODES:
        assert guards.lv_owner(lv, node, "lab", proof, conf) is guards.LvOwner.EARLIER


def test_plan_refuses_adopting_a_vm_not_in_the_spec(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hakvm.cli import main

    async def must_not_run(*_: object) -> None:
        raise AssertionError("no node may be asked")

    monkeypatch.setattr(engine, "plan", must_not_run)
    path = _spec_file(tmp_path, "lab")
    assert main(["plan", str(path), "--adopt", "vm-z"]) == 2
    assert "vm-z is not a VM of the spec" in capsys.readouterr().err
