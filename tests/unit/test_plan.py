"""Plan from recorded-style facts, without SSH: fresh nodes get the full ordered plan,
converged nodes get none, and one changed VM touches only that VM (Debian and RHEL)."""

from __future__ import annotations

import copy
from pathlib import Path

import asyncssh
import pytest
import yaml

from hakvm.deploy import phases as ph
from hakvm.deploy.guards import lv_tags
from hakvm.deploy.monitoring import wanted_packages
from hakvm.deploy.secrets import AUTHKEY_PATH, DRBD_MASTER_PATH, ClusterSecrets
from hakvm.deploy.steps import Call, Run, Step, Write
from hakvm.remote.disks import BlockDevice, Disks
from hakvm.remote.drbd import DrbdResource
from hakvm.remote.facts import FileFact, LogicalVolume, NodeFacts
from hakvm.render import migration
from hakvm.render.base import CLUSTER, RenderContext, Secrets
from hakvm.render.cib import password_file_path
from hakvm.render.hosts import hosts_block, merge_hosts
from hakvm.render.tree import render_all
from hakvm.spec.validate import validate_file

REPO = Path(__file__).resolve().parents[2]
SECRETS = ClusterSecrets(
    authkey=b"k" * 256,
    drbd_master="ab" * 32,
    # Generated per run: no private key, even a test one, is committed.
    migration_key=asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh"),
)
ETC_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"


def _spec_file(tmp_path: Path, example: str, edit: object = None) -> Path:
    data = yaml.safe_load((REPO / "examples" / f"{example}.yaml").read_text())
    if callable(edit):
        edit(data)
    for node in data["nodes"]:
        secret = tmp_path / f"{node['name']}.pw"
        secret.write_text("secret\n")
        secret.chmod(0o600)
        node["bmc"]["password_file"] = str(secret)
    path = tmp_path / f"{example}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _env(path: Path, facts: dict[str, NodeFacts]) -> ph.PlanEnv:
    report = validate_file(path)
    assert report.spec is not None and report.derived is not None, report.lines()
    ctx = RenderContext(report.spec, report.derived, Secrets(SECRETS.drbd_master))
    return ph.PlanEnv(ctx, render_all(ctx), facts, SECRETS, path.parent)


def fresh_facts(name: str, os_family: str) -> NodeFacts:
    packages = ph.DEBIAN_PACKAGES if os_family == "debian12" else ph.RHEL_PACKAGES
    facts = NodeFacts(name)
    facts.packages = set(packages)
    facts.files = {"/etc/hosts": FileFact(ETC_HOSTS.encode(), 0o644)}
    facts.disks = Disks(
        {
            "/dev/vdb": BlockDevice("vdb", "/dev/vdb", 20 * 1024**3, "disk"),
            "/dev/sda4": BlockDevice("sda4", "/dev/sda4", 3 * 1024**4, "part", pttype="gpt"),
        }
    )
    facts.services_active = {"libvirtd": True}
    facts.services_enabled = {"libvirtd": True}
    return facts


def converged_facts(env: ph.PlanEnv) -> dict[str, NodeFacts]:
    """What the nodes look like after a successful apply of env's spec."""
    out = {}
    for node in env.ctx.spec.nodes:
        facts = fresh_facts(node.name, env.ctx.spec.cluster.os.value)
        for f in env.rendered[node.name]:
            facts.files[f.path] = FileFact(f.content.encode(), f.mode)
        block = hosts_block(env.ctx)
        facts.files["/etc/hosts"] = FileFact(merge_hosts(ETC_HOSTS, block).encode(), 0o644)
        facts.files[AUTHKEY_PATH] = FileFact(SECRETS.authkey, 0o400)
        facts.files[DRBD_MASTER_PATH] = FileFact(SECRETS.drbd_master.encode() + b"\n", 0o600)
        for other in env.ctx.spec.nodes:
            if other.name != node.name:
                facts.files[password_file_path(other.name)] = FileFact(b"secret\n", 0o600)
        ifs = node.interfaces
        for group in (ifs.bonds, ifs.ethernets, ifs.vlans, ifs.bridges):
            for name, cfg in group.items():
                facts.links_up[name] = True
                facts.addresses[name] = [str(a) for a in cfg.addresses]
        st = node.storage
        facts.volume_groups = {st.volume_group: st.size}
        if st.thin_pool:
            facts.logical_volumes[(st.volume_group, st.thin_pool)] = LogicalVolume(
                st.thin_pool, st.volume_group, st.size, "twi-aotz--", "", ()
            )
        for vm in env.ctx.spec.vms:
            facts.logical_volumes[(st.volume_group, vm.name)] = LogicalVolume(
                vm.name, st.volume_group, vm.disk.size, "Vwi-aotz--", st.thin_pool or "",
                lv_tags(env.ctx.spec.cluster.name, vm.name),
            )  # fmt: skip
            minor = env.ctx.derived.vms[vm.name].minor
            facts.drbd[vm.name] = DrbdResource(
                vm.name, minor, "Connected", "Secondary", "Secondary", "UpToDate", "UpToDate"
            )
        for svc in ("corosync", "pacemaker", "libvirtd", "hakvm-firewall", "hakvm-metrics.timer",
                    "prometheus-node-exporter"):  # fmt: skip
            facts.services_active[svc] = True
            facts.services_enabled[svc] = True
        facts.packages |= wanted_packages(env.ctx.spec, node.name)
        facts.files[migration.HOST_KEY_PATH] = FileFact(
            f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{node.name} root@{node.name}\n".encode(), 0o644
        )
        (cib,) = [f for f in env.rendered[CLUSTER] if f.path.endswith("cib.xml")]
        facts.cib = cib.content
        out[node.name] = facts
    # Migration trust depends on both nodes' host keys: fill it in once all facts exist.
    env = ph.PlanEnv(env.ctx, env.rendered, out, env.secrets, env.spec_dir)
    for name, facts in out.items():
        for path, content, mode in ph._migration_trust(env, name):
            facts.files[path] = FileFact(content, mode)
    return out


def _all_steps(env: ph.PlanEnv, skip: tuple[str, ...] = ("cib", "vms")) -> list[Step]:
    steps: list[Step] = []
    for name, phase in ph.PHASES:
        if name not in skip:
            steps.extend(phase(env))
    return steps


@pytest.mark.parametrize("example", ["lab", "seed"])
def test_fresh_nodes_get_ordered_plan(example: str, tmp_path: Path) -> None:
    path = _spec_file(tmp_path, example)
    os_family = "debian12" if example == "lab" else "rhel9"
    env = _env(path, {n: fresh_facts(n, os_family) for n in ("node01", "node02")})
    steps = _all_steps(env, skip=())
    phases_seen = list(dict.fromkeys(s.phase for s in steps))
    order = [name for name, _ in ph.PHASES]
    assert phases_seen == [p for p in order if p in phases_seen]
    assert {"network", "hosts", "firewall", "storage", "replication", "corosync",
            "pacemaker", "libvirt", "fencing", "cib", "vms"} <= set(phases_seen)  # fmt: skip
    argvs = [a.argv for s in steps for a in s.actions if isinstance(a, Run)]
    device = "/dev/vdb" if example == "lab" else "/dev/sda4"
    assert ("wipefs", "-a", device) in argvs
    writes = {a.path: a for s in steps for a in s.actions if isinstance(a, Write)}
    assert writes[AUTHKEY_PATH].mode == 0o400
    assert all(w.mode == 0o600 for p, w in writes.items() if p.endswith(".res"))
    # No secret is shown in a plan's diffs.
    assert not any(SECRETS.drbd_master in s.diff for s in steps)
    assert not any("secret\n" in s.diff for s in steps if "password" in s.title)
    # Thin LVs are tagged fresh, so the initial sync can be skipped.
    assert any(ph.FRESH_TAG in a for a in argvs if a[0] == "lvcreate" and "-V" in a)


def test_rhel_plan_uses_dnf_networkmanager_firewalld(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, "seed")
    facts = {n: fresh_facts(n, "rhel9") for n in ("node01", "node02")}
    facts["node01"].packages.discard("pacemaker")
    env = _env(path, facts)
    steps = _all_steps(env, skip=())
    argvs = [a.argv for s in steps for a in s.actions if isinstance(a, Run)]
    assert ("dnf", "install", "-y", "pacemaker") in argvs
    assert not any(a[0] == "apt-get" for a in argvs)
    paths = {a.path for s in steps for a in s.actions if isinstance(a, Write)}
    assert "/etc/NetworkManager/system-connections/hakvm-bond0.nmconnection" in paths
    assert "/etc/firewalld/zones/hakvm.xml" in paths
    assert ("firewall-cmd", "--reload") in argvs
    assert not any("/etc/network/interfaces.d" in p for p in paths)


def test_debian_missing_package_is_installed(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, "lab")
    env0 = _env(path, {})
    facts = converged_facts(env0)
    facts["node02"].packages.discard("thin-provisioning-tools")
    env = _env(path, facts)
    steps = ph.packages(env)
    assert [s.node for s in steps] == ["node02"]
    run = steps[0].actions[1]
    assert isinstance(run, Run)
    assert run.argv[-1] == "thin-provisioning-tools"
    assert ("DEBIAN_FRONTEND", "noninteractive") in run.env


def test_cold_libvirt_capability_cache_is_warmed_in_the_background(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, "lab")
    facts = converged_facts(_env(path, {}))
    facts["node01"].qemu_caps_cached = False
    facts["node02"].qemu_caps_cached = True
    (step,) = ph.packages(_env(path, facts))
    assert step.node == "node01"
    (probe,) = step.actions
    assert isinstance(probe, Run)
    assert probe.argv[:2] == ("systemd-run", "--no-block")  # never waits for the probe
    assert probe.argv[-4:] == ("virsh", "-c", "qemu:///system", "domcapabilities")


def test_qcow2_vms_are_prepared_only_until_the_cluster_manages_them(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, "seed")  # four qcow2-on-xfs VMs
    facts = converged_facts(_env(path, {}))
    assert ph.replication(_env(path, facts)) == []  # in the CIB: never touched again
    for f in facts.values():
        f.cib = None  # not deployed yet (or an apply stopped before the cib phase)
    steps = ph.replication(_env(path, facts))
    assert [s.title.split(":")[0] for s in steps] == [f"DRBD vm{i}" for i in range(1, 5)]
    # On the node that decides the initial syncs, so each runs after its VM's sync decision.
    assert {s.node for s in steps} == {"node01"}
    assert all(isinstance(a, Call) for s in steps for a in s.actions)


@pytest.mark.parametrize("example", ["lab", "seed"])
def test_converged_nodes_get_no_steps(example: str, tmp_path: Path) -> None:
    path = _spec_file(tmp_path, example)
    env = _env(path, {})
    env.facts = converged_facts(env)
    steps = _all_steps(env)
    assert steps == [], [s.title for s in steps]


def test_changing_one_vm_touches_only_that_vm(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, "lab")
    env = _env(path, {})
    facts = converged_facts(env)

    def grow_vm_b(data: dict[str, object]) -> None:
        vms = data["vms"]
        assert isinstance(vms, list)
        vms[1]["vcpus"] = 2

    changed = _env(_spec_file(tmp_path, "lab", grow_vm_b), copy.deepcopy(facts))
    steps = _all_steps(changed)
    assert steps, "a changed VM must yield steps"
    for step in steps:
        assert "vm-b" in step.title, step.title
        assert "vm-a" not in step.title


def test_new_vm_keeps_existing_minors(tmp_path: Path) -> None:
    from hakvm.deploy.engine import existing_minors

    path = _spec_file(tmp_path, "lab")
    env = _env(path, {})
    facts = converged_facts(env)

    def insert_first(data: dict[str, object]) -> None:
        vms = data["vms"]
        assert isinstance(vms, list)
        vms.insert(0, {"name": "vm-new", "memory": "32MiB", "disk": {"size": "1GiB"},
                       "networks": [{"bridge": "br0"}]})  # fmt: skip

    spec_path = _spec_file(tmp_path, "lab", insert_first)
    report = validate_file(spec_path)
    assert report.spec is not None
    minors = existing_minors(report.spec, facts)
    assert minors == {"vm-a": 0, "vm-b": 1}
    from hakvm.spec.derive import derive

    derived = derive(report.spec, minors)
    assert derived.vms["vm-new"].minor == 2
    assert derived.vms["vm-a"].minor == 0


def test_missing_volume_group_without_device_is_refused(tmp_path: Path) -> None:
    def no_device(data: dict[str, object]) -> None:
        nodes = data["nodes"]
        assert isinstance(nodes, list)
        for node in nodes:
            del node["storage"]["create_from"]

    path = _spec_file(tmp_path, "lab", no_device)
    env = _env(path, {n: fresh_facts(n, "debian12") for n in ("node01", "node02")})
    with pytest.raises(ph.PlanError, match="node01: volume group hakvm does not exist"):
        ph.storage(env)


def test_calls_are_described(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, "lab")
    env = _env(path, {n: fresh_facts(n, "debian12") for n in ("node01", "node02")})
    calls = [a for s in _all_steps(env, skip=()) for a in s.actions if isinstance(a, Call)]
    assert calls and all(c.describe() for c in calls)


def test_migration_trust_keeps_foreign_keys_and_pins_peer(tmp_path: Path) -> None:
    env = _env(_spec_file(tmp_path, "lab"), {})
    env.facts = converged_facts(env)
    admin_key = "ssh-ed25519 AAAAadminkey admin@laptop\n"
    env.facts["node01"].files[migration.AUTHORIZED_KEYS_PATH] = FileFact(admin_key.encode(), 0o600)
    files = {path: content.decode() for path, content, _ in ph._migration_trust(env, "node01")}
    authorized = files[migration.AUTHORIZED_KEYS_PATH]
    assert authorized.startswith(admin_key)
    # node01 accepts the migration key only from node02's replication (bond0.20) address.
    assert 'restrict,from="10.88.2.2",command="' in authorized
    known = files[migration.KNOWN_HOSTS_PATH].splitlines()
    assert known[1].startswith("node02-migration,10.88.2.2 ssh-ed25519 ")
    assert "StrictHostKeyChecking yes" in files[migration.SSH_CONFIG_PATH]


def test_the_carried_agent_fix_is_diverted_then_written_and_never_restarts_pacemaker(
    tmp_path: Path,
) -> None:
    from hakvm.render import agents

    path = _spec_file(tmp_path, "lab")
    fresh = _env(path, {n: fresh_facts(n, "debian12") for n in ("node01", "node02")})
    titles = [s.title for s in ph.pacemaker(fresh) if s.node == "node01"]
    assert titles == [
        f"divert {agents.LIBRARY}", f"override {agents.LIBRARY}", "start pacemaker",
        "wait for both nodes online with a DC",
    ]  # fmt: skip
    # A cluster deployed before the fix: the packaged library in place, Pacemaker running.
    running = _env(path, {})
    running.facts = converged_facts(running)
    for facts in running.facts.values():
        facts.files[agents.LIBRARY] = FileFact(b"# packaged ocf-shellfuncs\n" * 900, 0o644)
    steps = ph.pacemaker(running)
    assert [s.title.split()[0] for s in steps] == ["divert", "override"] * 2  # no restart
    (divert,) = steps[0].actions
    assert isinstance(divert, Run) and divert.argv[-1] == agents.LIBRARY
    # The plan shows the override whole, not a 900-line diff of the library it keeps.
    assert "packaged ocf-shellfuncs" not in steps[1].diff
    assert f". {agents.PACKAGED}" in steps[1].diff
