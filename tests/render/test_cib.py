"""CIB renderer: content rules (fast), crm_verify and crm_simulate placement runs (realtool)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from hakvm.render import cib, drbd
from hakvm.render.base import CLUSTER, RenderContext
from hakvm.spec.models import DiskMode
from tests.render.checkers.cib import Simulation, check_cib
from tests.render.examples import example_data, render_context


def _priority_lab() -> dict[str, Any]:
    data = copy.deepcopy(example_data("lab"))
    data["cluster"]["fencing"] = {"race_protection": "priority-fencing-delay"}
    data["vms"][1]["autostart"] = False
    return data


def _tree(ctx: RenderContext) -> etree._Element:
    return etree.fromstring(cib.cib_xml(ctx).encode())


def _nv(el: etree._Element, path: str, name: str) -> str | None:
    found = el.find(f"{path}/nvpair[@name='{name}']")
    return None if found is None else found.get("value")


def test_layout_and_properties() -> None:
    root = _tree(render_context(example_data("lab")))
    assert root.get("validate-with") == cib.VALIDATE_WITH
    conf = root.find("configuration")
    assert conf is not None
    assert [c.tag for c in conf] == [
        "crm_config",
        "rsc_defaults",
        "op_defaults",
        "nodes",
        "resources",
        "constraints",
        "alerts",
    ]
    assert root.find("status") is not None and len(root.find("status")) == 0  # type: ignore[arg-type]
    props = "configuration/crm_config/cluster_property_set"
    assert _nv(root, props, "stonith-enabled") == "true"
    assert _nv(root, props, "no-quorum-policy") == "stop"
    assert _nv(root, props, "stonith-timeout") == "150s"  # the lab's TCG setting
    assert _nv(root, props, "priority-fencing-delay") is None
    assert _nv(root, props, "load-threshold") == "2000%"  # the lab's TCG setting
    assert _nv(root, props, "node-action-limit") == "6"
    assert _nv(root, "configuration/rsc_defaults/meta_attributes", "resource-stickiness") == "200"
    nodes = [(n.get("id"), n.get("uname")) for n in root.iterfind("configuration/nodes/node")]
    assert nodes == [("1", "node01"), ("2", "node02")]


def test_load_threshold_left_to_pacemaker_unless_set() -> None:
    data = example_data("lab")
    del data["cluster"]["timing"]["load_threshold_pct"]
    del data["cluster"]["timing"]["node_action_limit"]
    root = _tree(render_context(data))
    props = "configuration/crm_config/cluster_property_set"
    assert _nv(root, props, "load-threshold") is None
    assert _nv(root, props, "node-action-limit") is None


def test_fencing_static_delay_on_survivor_only_and_no_password() -> None:
    ctx = render_context(example_data("lab"))
    text = cib.cib_xml(ctx)
    root = etree.fromstring(text.encode())
    for node in ("node01", "node02"):
        dev = root.find(f"configuration/resources/primitive[@id='{node}_fence']")
        assert dev is not None and dev.get("type") == "fence_ipmilan"
        ia = "instance_attributes"
        assert _nv(dev, ia, "pcmk_host_list") == node
        assert _nv(dev, ia, "password_script") == f"/etc/hakvm/fence/{node}.password.sh"
        assert _nv(dev, ia, "lanplus") == "1"
        delay = _nv(dev, ia, "pcmk_delay_base")
        # The mapping form: the fencer logs an error at every fencing for a bare value.
        assert delay == ("node01:45s" if node == ctx.derived.preferred_survivor else None)
        avoid = root.find(f"configuration/constraints/rsc_location[@rsc='{node}_fence']")
        assert avoid is not None
        assert (avoid.get("node"), avoid.get("score")) == (node, "-INFINITY")
    names = {nv.get("name") for nv in root.iter("nvpair")}
    assert not {"password", "passwd"} & names


def test_fencing_reboots_and_leaves_power_wait_to_the_agent_by_default() -> None:
    data = example_data("lab")
    data["cluster"]["fencing"].pop("power_wait_s", None)
    root = _tree(render_context(data))
    assert _nv(root, "configuration/crm_config/cluster_property_set", "stonith-action") == (
        "reboot"
    )
    assert not [nv for nv in root.iter("nvpair") if nv.get("name") == "power_wait"]


def test_fencing_action_off_and_a_tuned_power_wait() -> None:
    data = example_data("lab")
    data["cluster"]["fencing"].update(action="off", power_wait_s=0)
    root = _tree(render_context(data))
    assert _nv(root, "configuration/crm_config/cluster_property_set", "stonith-action") == "off"
    for node in ("node01", "node02"):
        dev = root.find(f"configuration/resources/primitive[@id='{node}_fence']")
        assert dev is not None and _nv(dev, "instance_attributes", "power_wait") == "0"


def test_priority_fencing_delay_mode() -> None:
    root = _tree(render_context(_priority_lab()))
    props = "configuration/crm_config/cluster_property_set"
    assert _nv(root, props, "priority-fencing-delay") == "45s"  # the lab's fence_delay_s
    assert not [nv for nv in root.iter("nvpair") if nv.get("name") == "pcmk_delay_base"]
    for vm in ("vm-a", "vm-b"):
        prim = root.find(f"configuration/resources/primitive[@id='{vm}']")
        assert prim is not None and _nv(prim, "meta_attributes", "priority") == "1"
    vm_b = root.find("configuration/resources/primitive[@id='vm-b']")
    assert vm_b is not None and _nv(vm_b, "meta_attributes", "target-role") == "Stopped"


@pytest.mark.parametrize("protection", ["static-delay", "priority-fencing-delay"])
def test_a_quorum_device_drops_every_fence_delay(protection: str) -> None:
    """qnetd's vote decides a split: the half without it loses quorum and cannot fence, so
    neither race protection is rendered, and a priority-fencing-delay from before is zeroed
    (apply keeps live cluster properties it does not render)."""
    data = example_data("lab-qdevice")
    data["cluster"]["fencing"] = {"race_protection": protection, "preferred_survivor": "node02"}
    data["cluster"]["timing"]["fence_delay_s"] = 30
    root = _tree(render_context(data))
    props = "configuration/crm_config/cluster_property_set"
    assert _nv(root, props, "priority-fencing-delay") == "0s"
    assert _nv(root, props, "no-quorum-policy") == "stop"
    names = {nv.get("name") for nv in root.iter("nvpair")}
    assert not {"pcmk_delay_base", "pcmk_delay_max", "priority"} & names


def test_block_mode_is_dual_primary_and_migratable() -> None:
    root = _tree(render_context(example_data("lab")))
    clone = root.find("configuration/resources/clone[@id='vm-a_drbd_clone']")
    assert clone is not None
    meta = "meta_attributes"
    assert _nv(clone, meta, "promotable") == "true"
    assert _nv(clone, meta, "promoted-max") == "2"
    assert _nv(clone, meta, "notify") == "true"
    roles = {op.get("role"): op.get("interval") for op in clone.iter("op") if op.get("role")}
    assert roles == {"Promoted": "59s", "Unpromoted": "61s"}  # lab: drbd_monitor_interval_s 60
    vm = root.find("configuration/resources/primitive[@id='vm-a']")
    assert vm is not None
    assert _nv(vm, "meta_attributes", "allow-migrate") == "true"
    assert _nv(vm, "instance_attributes", "config") == "/etc/hakvm/domains/vm-a.xml"
    ops = {op.get("name"): op.get("timeout") for op in vm.iter("op")}
    assert ops["start"] == "300s" and ops["migrate_to"] == "300s"
    assert root.find("configuration/resources/primitive[@type='Filesystem']") is None


def test_qcow2_mode_single_primary_with_filesystem() -> None:
    ctx = render_context(example_data("seed"))
    root = _tree(ctx)
    clone = root.find("configuration/resources/clone[@id='vm1_drbd_clone']")
    assert clone is not None and _nv(clone, "meta_attributes", "promoted-max") == "1"
    vm = root.find("configuration/resources/primitive[@id='vm1']")
    assert vm is not None and _nv(vm, "meta_attributes", "allow-migrate") is None
    fs = root.find("configuration/resources/primitive[@id='vm1_fs']")
    assert fs is not None
    assert _nv(fs, "instance_attributes", "device") == ctx.derived.vms["vm1"].device
    assert _nv(fs, "instance_attributes", "directory") == "/var/lib/hakvm/vm1"
    assert _nv(fs, "instance_attributes", "fstype") == "xfs"
    cons = root.find("configuration/constraints")
    assert cons is not None
    colo = cons.find("rsc_colocation[@rsc='vm1_fs']")
    assert colo is not None and colo.get("with-rsc-role") == "Promoted"
    assert cons.find("rsc_order[@first='vm1_fs'][@then='vm1']") is not None


def test_vm_kept_off_a_node_without_a_whole_copy() -> None:
    """Each VM's chain head (the VM in block mode, its filesystem in qcow2 mode) is banned
    where the drbd agent's promotion score is missing or below 'local data UpToDate', and
    where DRBD's resync flag (rendered into the .res handlers) is set."""
    for example in ("lab", "seed"):
        ctx = render_context(example_data(example))
        root = _tree(ctx)
        res_text = {f.path: f.content for f in drbd.render(ctx)[ctx.spec.nodes[0].name]}
        for vm in ctx.spec.vms:
            head = vm.name if vm.disk.mode is DiskMode.BLOCK else f"{vm.name}_fs"
            loc = root.find(f"configuration/constraints/rsc_location[@id='{head}_needs_good_data']")
            assert loc is not None and loc.get("rsc") == head and loc.get("node") is None
            rule = loc.find("rule")
            assert rule is not None
            assert (rule.get("score"), rule.get("boolean-op")) == ("-INFINITY", "or")
            exprs = [
                (e.get("attribute"), e.get("operation"), e.get("value"), e.get("type"))
                for e in rule.iterfind("expression")
            ]
            score = f"master-{vm.name}_drbd"
            flag = f"hakvm-resyncing-{vm.name}"
            assert exprs == [
                (score, "not_defined", None, None),
                (score, "lt", "1000", "number"),
                (flag, "defined", None, None),
            ]
            assert f"--name {flag} --update 1" in res_text[f"/etc/drbd.d/{vm.name}.res"]


@pytest.mark.realtool
def test_peer_crash_mid_resync_leaves_the_vm_stopped(tmp_path: Path) -> None:
    """node01 resyncs vm-b from node02 (DRBD's handler has set the flag; both sides stay
    Promoted in block mode) when node02 crashes: Pacemaker must not start vm-b on node01's
    partial copy, and must start it once node02, the good copy, is back."""
    sim = Simulation(cib.cib_xml(render_context(example_data("lab"))), tmp_path)
    placed = sim.run(up=sim.nodes)
    assert placed.started["vm-b"] == {"node02"}, placed.summary
    sim.set_transient("node01", "hakvm-resyncing-vm-b", "1")
    failed = sim.run(fail=["node02"])
    assert "Fence (reboot) node02" in failed.summary
    assert "vm-b" not in failed.started, failed.summary
    assert failed.started["vm-a"] == {"node01"}, "vm-a has a whole copy on node01"
    back = sim.run(up=["node02"])
    assert back.started["vm-b"] == {"node02"}, back.summary


def test_preference_below_stickiness() -> None:
    for example in ("lab", "seed"):
        ctx = render_context(example_data(example))
        root = _tree(ctx)
        prefs = [
            loc
            for loc in root.iterfind("configuration/constraints/rsc_location")
            if "_prefers_" in str(loc.get("id"))
        ]
        assert len(prefs) == len(ctx.spec.vms)
        for loc in prefs:
            assert 0 < int(str(loc.get("score"))) < ctx.spec.cluster.stickiness


def test_password_scripts_only_on_the_peer() -> None:
    rendered = cib.render(render_context(example_data("lab")))
    assert [f.path for f in rendered[CLUSTER]] == ["cib.xml"]
    for node, peer in (("node01", "node02"), ("node02", "node01")):
        files = rendered[node]
        assert [f.path for f in files] == [f"/etc/hakvm/fence/{peer}.password.sh"]
        assert files[0].mode == 0o700
        assert f"cat /etc/hakvm/fence/{peer}.password" in files[0].content


def test_deterministic_and_ids_unique() -> None:
    a = cib.render(render_context(example_data("seed")))
    assert a == cib.render(render_context(example_data("seed")))
    ids = [
        el.get("id") for el in _tree(render_context(example_data("seed"))).iter() if el.get("id")
    ]
    assert len(ids) == len(set(ids))


@pytest.mark.realtool
@pytest.mark.parametrize("example", ["lab", "seed", "priority", "lab-qdevice"])
def test_crm_verify(example: str) -> None:
    data = _priority_lab() if example == "priority" else example_data(example)
    check_cib(cib.cib_xml(render_context(data)))


@pytest.mark.realtool
def test_simulate_fencing_action_off(tmp_path: Path) -> None:
    """Pacemaker itself reads stonith-action: the lost node is powered off, not rebooted."""
    data = example_data("lab")
    data["cluster"]["fencing"].update(action="off", power_wait_s=0)
    text = cib.cib_xml(render_context(data))
    check_cib(text)
    sim = Simulation(text, tmp_path)
    sim.run(up=sim.nodes)
    failed = sim.run(fail=["node02"])
    assert "Fence (off) node02" in failed.summary, failed.summary
    assert failed.started["vm-b"] == {"node01"}, failed.summary


@pytest.mark.realtool
def test_checker_rejects_broken_cib() -> None:
    text = cib.cib_xml(render_context(example_data("lab")))
    dangling = text.replace('with-rsc="vm-a_drbd_clone"', 'with-rsc="no-such-clone"')
    assert dangling != text
    with pytest.raises(AssertionError, match="crm_verify"):
        check_cib(dangling)
    with pytest.raises(AssertionError):
        check_cib(text.replace('kind="Mandatory"', 'kind="Whenever"', 1))


@pytest.mark.realtool
def test_simulate_block_mode(tmp_path: Path) -> None:
    sim = Simulation(cib.cib_xml(render_context(example_data("lab"))), tmp_path)
    placed = sim.run(up=sim.nodes)
    assert placed.started["vm-a"] == {"node01"}, placed.summary
    assert placed.started["vm-b"] == {"node02"}, placed.summary
    assert placed.promoted["vm-a_drbd"] == {"node01", "node02"}  # dual primary
    assert placed.started["node01_fence"] == {"node02"}
    assert placed.started["node02_fence"] == {"node01"}

    failed = sim.run(fail=["node01"])
    assert "Fence (reboot) node01" in failed.summary
    assert failed.started["vm-a"] == {"node02"}

    back = sim.run(up=["node01"])
    assert back.started["vm-a"] == {"node02"}, "stickiness must keep vm-a where it failed over"
    assert back.promoted["vm-a_drbd"] == {"node01", "node02"}

    # An admin move (what crm_resource --move adds) is a live migration in block mode.
    tree = etree.fromstring(back.cib.encode())
    cons = tree.find("configuration/constraints")
    assert cons is not None
    etree.SubElement(
        cons, "rsc_location", id="cli-prefer-vm-a", rsc="vm-a", node="node01", score="INFINITY"
    )
    sim.current.write_bytes(etree.tostring(tree))
    moved = sim.run()
    assert "Migrate    vm-a" in moved.summary, moved.summary
    assert moved.started["vm-a"] == {"node01"}


@pytest.mark.realtool
def test_simulate_qcow2_mode(tmp_path: Path) -> None:
    data = example_data("seed")
    data["vms"] = data["vms"][:2]  # two VMs show it all; each extra one costs ~1 s here
    sim = Simulation(cib.cib_xml(render_context(data)), tmp_path)
    placed = sim.run(up=sim.nodes)
    for vm, node in (("vm1", "node01"), ("vm2", "node02")):
        assert placed.started[vm] == {node}, placed.summary
        assert placed.started[f"{vm}_fs"] == {node}
        assert placed.promoted[f"{vm}_drbd"] == {node}  # single primary, where the VM runs
    failed = sim.run(fail=["node01"])
    assert failed.started["vm1"] == {"node02"} and failed.promoted["vm1_drbd"] == {"node02"}
    back = sim.run(up=["node01"])
    assert back.started["vm1"] == {"node02"}, "stickiness must keep vm1 where it failed over"
    assert back.promoted["vm1_drbd"] == {"node02"}
