"""`hakvm vm list | add | remove` without SSH: the spec file edits (byte for byte), the CIB
removal (exactly one VM's elements), and the ordered commands a remove issues, against a fake
two-node cluster that records every argv and answers like the lab did (its crm_mon is the
recorded one)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import re
import shutil
import sys
from collections.abc import Callable
from typing import Any

import pytest
from lxml import etree

from hakvm.deploy import cib_merge
from hakvm.deploy.engine import PhaseReport, RunReport
from hakvm.deploy.guards import lv_tags
from hakvm.deploy.steps import Step
from hakvm.ops import vm as ops
from hakvm.ops.status import assess
from hakvm.remote import pacemaker
from hakvm.remote.connection import RemoteError
from hakvm.remote.facts import parse_batch
from hakvm.remote.probes import NodeAnswer
from hakvm.render.base import RenderContext, Secrets
from hakvm.render.cib import cib_xml
from hakvm.spec.derive import derive
from hakvm.spec.models import ClusterSpec
from hakvm.spec.validate import validate_file
from tests.unit.fakes import FakeNode, Reply
from tests.unit.recorded import answers

DATA = pathlib.Path(__file__).parent / "data"
REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = REPO / "examples" / "lab.yaml"
GOLDEN_CIB = REPO / "tests" / "render" / "golden" / "lab" / "cluster" / "cib.xml"
NODES = ("node01", "node02")
VM_A_FILES = ["/etc/drbd.d/vm-a.res", "/etc/hakvm/domains/vm-a.xml"]
VM_A_CIB = {
    "vm-a_drbd_clone", "vm-a", "vm-a_with_drbd", "vm-a_after_drbd", "vm-a_prefers_node01",
    "vm-a_needs_good_data",
    "cli-prefer-vm-a", "admin-ip-before-vm-a",
}  # fmt: skip


@pytest.fixture
def spec_path(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "lab.yaml"
    shutil.copy(LAB, path)
    return path


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    report = validate_file(LAB)
    assert report.spec is not None, report.lines()
    return report.spec


def run(*args: str | pathlib.Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`hakvm vm ...` through the real entry point (exit-code mapping included)."""
    from hakvm.cli import cli, main
    from hakvm.cli.vm import vm_group

    if "vm" not in cli.commands:
        cli.add_command(vm_group)
    capsys.readouterr()
    code = main(["vm", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


# --- add, through the command ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["vm-a", "--memory", "64MiB", "--disk", "1GiB"], "a VM named 'vm-a' already exists"),
        (["vm-c", "--memory", "64XB", "--disk", "1GiB"], "vms[2].memory: '64XB' is not a size"),
        (
            ["vm-c", "--memory", "64MiB", "--disk", "1GiB", "--preferred-node", "node09"],
            "vms[2].preferred_node: 'node09' is not a node; use one of node01, node02",
        ),
        (["Bad_Name", "--memory", "64MiB", "--disk", "1GiB"], "vms[2].name: 'Bad_Name'"),
        (
            ["vm-c", "--memory", "64MiB", "--disk", "1GiB", "--bridge", "br9"],
            "bridge 'br9' is not defined on node01",
        ),
    ],
)
def test_add_refuses_bad_input_and_leaves_the_file(
    spec_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    error: str,
) -> None:
    monkeypatch.setattr("hakvm.deploy.engine.apply", _must_not_run)
    before = spec_path.read_bytes()
    code, _, err = run("add", spec_path, *args, capsys=capsys)
    assert code == 2
    assert error in err
    assert all(line.startswith((f"{spec_path}:", "hakvm:")) for line in err.splitlines())
    assert spec_path.read_bytes() == before


def no_node_lock(*_: object, **__: object) -> contextlib.nullcontext[None]:
    """The node lock, for a command whose nodes are fakes (tests/unit/test_locks.py tests it)."""
    return contextlib.nullcontext()


async def _must_not_run(*_: object, **__: object) -> RunReport:
    raise AssertionError("must not be called")


def test_add_writes_then_applies_and_counts_changes(
    spec_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    async def fake_apply(spec: ClusterSpec, path: pathlib.Path, progress: object) -> RunReport:
        seen.append([v.name for v in spec.vms])
        steps = [Step("node01", "storage", f"step {i}", ()) for i in range(3)]
        return RunReport([PhaseReport("storage", steps)])

    monkeypatch.setattr("hakvm.deploy.engine.apply", fake_apply)
    monkeypatch.setattr("hakvm.cli.vm.node_locks", no_node_lock)
    code, out, _ = run(
        "add", spec_path, "vm-c", "--memory", "64MiB", "--disk", "1GiB", capsys=capsys
    )
    assert code == 0
    assert seen == [["vm-a", "vm-b", "vm-c"]]
    assert "vm-c: 3 step(s) changed" in out


def test_add_no_apply_only_writes(
    spec_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hakvm.deploy.engine.apply", _must_not_run)
    code, _, _ = run(
        "add", spec_path, "vm-c", "--memory", "64MiB", "--disk", "1GiB", "--no-apply",
        capsys=capsys,
    )  # fmt: skip
    assert code == 0
    assert "name: vm-c" in spec_path.read_text()


# --- list ------------------------------------------------------------------------------------


def test_list_rows_join_the_spec_and_the_live_state(spec: ClusterSpec) -> None:
    rows = ops.vm_rows(spec, assess(spec, answers()))
    a, b = rows
    assert (a.name, a.vcpus, a.memory, a.disk_mode) == ("vm-a", 1, 32 * 2**20, "block")
    assert a.disk_size == 2**30
    assert (a.state, a.running_on, a.preferred_node) == ("running", ["node01"], "node01")
    assert [(d.node, d.disk, d.peer_disk) for d in a.drbd] == [
        ("node01", "UpToDate", "UpToDate"), ("node02", "UpToDate", "UpToDate"),
    ]  # fmt: skip
    assert (b.state, b.running_on) == ("running", ["node02"])


def test_list_json_and_bad_spec_exit_codes(
    spec_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fake_collect(spec: ClusterSpec, path: pathlib.Path) -> dict[str, NodeAnswer]:
        return answers()

    monkeypatch.setattr("hakvm.ops.status.collect", fake_collect)
    code, out, _ = run("list", spec_path, "--json", capsys=capsys)
    assert code == 0
    listed = json.loads(out)["vms"]
    assert [(v["name"], v["state"], v["running_on"]) for v in listed] == [
        ("vm-a", "running", ["node01"]), ("vm-b", "running", ["node02"]),
    ]  # fmt: skip
    spec_path.write_text("cluster: [\n")
    code, _, _ = run("list", spec_path, capsys=capsys)
    assert code == 3


# --- the CIB ---------------------------------------------------------------------------------


def live_cib(vm_a_role: str | None = None) -> str:
    """The lab's rendered CIB as a live one, plus what admins and tools add to a live CIB."""
    root = etree.fromstring(GOLDEN_CIB.read_bytes())
    resources = root.find("configuration/resources")
    constraints = root.find("configuration/constraints")
    assert resources is not None and constraints is not None
    for xml in (
        '<primitive id="admin-ip" class="ocf" provider="heartbeat" type="IPaddr2"/>',
        # Look like hakvm's by id or agent, but not by what only hakvm renders:
        '<primitive id="legacy" class="ocf" provider="heartbeat" type="VirtualDomain">'
        '<instance_attributes id="legacy-ia"><nvpair id="legacy-c" name="config" '
        'value="/srv/legacy.xml"/></instance_attributes></primitive>',
        '<clone id="old_drbd_clone"><primitive id="old_drbd" class="ocf" provider="linbit" '
        'type="drbd"><instance_attributes id="old-ia"><nvpair id="old-r" name="drbd_resource" '
        'value="r0"/></instance_attributes></primitive></clone>',
    ):
        resources.append(etree.fromstring(xml))
    for xml in (
        '<rsc_colocation id="admin-ip-with-vm-b" rsc="admin-ip" with-rsc="vm-b" score="100"/>',
        '<rsc_order id="admin-ip-before-vm-a" first="admin-ip" then="vm-a"/>',
        '<rsc_location id="cli-prefer-vm-a" rsc="vm-a" role="Started" node="node02" '
        'score="INFINITY"/>',
    ):
        constraints.append(etree.fromstring(xml))
    if vm_a_role is not None:
        nv = root.find(".//nvpair[@id='vm-a-meta_attributes-target-role']")
        assert nv is not None
        nv.set("value", vm_a_role)
    return etree.tostring(root, encoding="unicode")


def config_ids(cib: str) -> set[str]:
    conf = etree.fromstring(cib.encode()).find("configuration")
    assert conf is not None
    return {
        el.get("id") or "" for el in conf.findall("resources/*") + conf.findall("constraints/*")
    }


def _canonical_others(cib: str, drop: set[str]) -> list[bytes]:
    parser = etree.XMLParser(remove_blank_text=True)  # pretty-printing is not a change
    conf = etree.fromstring(cib.encode(), parser).find("configuration")
    assert conf is not None
    return [
        etree.tostring(el, method="c14n")
        for el in conf.findall("resources/*") + conf.findall("constraints/*")
        if el.get("id") not in drop
    ]


def test_without_vm_removes_exactly_that_vms_elements() -> None:
    live = live_cib()
    desired, removed = cib_merge.without_vm(live, "vm-a")
    assert set(removed) == VM_A_CIB
    assert config_ids(live) - config_ids(desired) == VM_A_CIB
    # Everything else (vm-b, fencing, the admin's resources and constraints) is untouched.
    assert _canonical_others(desired, set()) == _canonical_others(live, VM_A_CIB)
    assert cib_merge.without_vm(desired, "vm-a") == (desired, [])  # idempotent


def test_leftover_constraints_go_but_never_those_of_an_admins_namesake() -> None:
    root = etree.fromstring(live_cib().encode())
    resources = root.find("configuration/resources")
    constraints = root.find("configuration/constraints")
    assert resources is not None and constraints is not None
    # vm-x's resources are gone (an earlier partial removal), its constraint dangles; an admin
    # runs a resource that happens to be named vm-x_fs.
    resources.append(etree.fromstring('<primitive id="vm-x_fs" class="ocf" type="Dummy"/>'))
    for xml in (
        '<rsc_location id="cli-ban-vm-x" rsc="vm-x" node="node01" score="-INFINITY"/>',
        '<rsc_location id="admin-fs" rsc="vm-x_fs" node="node01" score="50"/>',
    ):
        constraints.append(etree.fromstring(xml))
    _, removed = cib_merge.without_vm(etree.tostring(root, encoding="unicode"), "vm-x")
    assert removed == ["cli-ban-vm-x"]


def test_lookalikes_are_never_taken_for_hakvms() -> None:
    for name in ("legacy", "old", "admin-ip"):
        _, removed = cib_merge.without_vm(live_cib(), name)
        assert name not in removed and f"{name}_drbd_clone" not in removed
    assert cib_merge.vm_resource_ids(live_cib(), "vm-a") == ["vm-a", "vm-a_drbd_clone"]


def _rendered_without(spec: ClusterSpec, name: str) -> str:
    smaller = spec.model_copy(update={"vms": [v for v in spec.vms if v.name != name]})
    return cib_xml(RenderContext(smaller, derive(smaller), Secrets.redacted()))


def test_apply_deletes_a_vm_gone_from_the_spec_only_once_stopped(spec: ClusterSpec) -> None:
    rendered = _rendered_without(spec, "vm-a")
    stopped = cib_merge.desired_cib(live_cib("Stopped"), rendered)
    assert config_ids(live_cib()) - config_ids(stopped) == VM_A_CIB
    kept = {"vm-b", "vm-b_drbd_clone", "admin-ip", "legacy", "old_drbd_clone"}
    assert kept <= config_ids(stopped)
    # Still Started: a VM dropped from the spec by mistake keeps running.
    started = cib_merge.desired_cib(live_cib("Started"), rendered)
    assert config_ids(started) == config_ids(live_cib())
    # The fencing-first pass deletes nothing.
    fencing = cib_merge.desired_cib(live_cib("Stopped"), rendered, only_ids={"node01_fence"})
    assert config_ids(fencing) == config_ids(live_cib())


def test_apply_keeps_every_vm_the_spec_renders(spec: ClusterSpec) -> None:
    rendered = cib_xml(RenderContext(spec, derive(spec), Secrets.redacted()))
    desired = cib_merge.desired_cib(live_cib("Stopped"), rendered)
    assert VM_A_CIB - {"cli-prefer-vm-a", "admin-ip-before-vm-a"} <= config_ids(desired)


# --- remove: a fake two-node cluster ----------------------------------------------------------


def crm_mon_xml(stopped: set[str]) -> str:
    """The recorded crm_mon, with the resources in `stopped` (or their clone) stopped."""
    raw = parse_batch((DATA / "status-healthy-node01.b64").read_text())["crm_mon"][1]
    root = etree.fromstring(raw)
    for res in root.iter("resource"):
        parent = res.getparent()
        clone = parent.get("id") if parent is not None and parent.tag == "clone" else None
        if res.get("id") in stopped or clone in stopped:
            res.set("active", "false")
            res.set("role", "Stopped")
            for node in res.findall("node"):
                res.remove(node)
    return etree.tostring(root, encoding="unicode")


class FakeCluster:
    """Both nodes' state, changed only by the commands hakvm sends."""

    def __init__(self, cib: str) -> None:
        self.cib = cib
        self.stopped: set[str] = set()
        self.stopping: set[str] = set()  # target-role Stopped, not yet stopped
        self.polls_to_stop = 2  # crm_mon answers before a requested stop is done
        self.obey_stop = True
        self.files = {n: set(VM_A_FILES) for n in NODES}
        self.texts: dict[str, bytes] = {}  # what `cat` reads (the same on both nodes)
        self.lvs = {n: {"hakvm/vm-a": OURS_A, "hakvm/vm-b": OURS_B, "hakvm/drbdpool": ""}
                    for n in NODES}  # fmt: skip
        self.log: list[tuple[str, tuple[str, ...]]] = []
        self.fail: dict[tuple[str, str], int] = {}  # (node, argv[0]) -> times to fail

    def conns(self) -> list[FakeNode]:
        return [FakeNode(n, self.answer) for n in NODES]

    def mutations(self) -> list[tuple[str, tuple[str, ...]]]:
        reads = {"crm_mon", "test", "lvs", "cat", "grep", "crm_verify", "crm_diff", "write"}
        return [
            (n, argv) for n, argv in self.log
            if argv[0] not in reads and argv[:2] != ("cibadmin", "-Q")
        ]  # fmt: skip

    def answer(self, node: FakeNode, argv: tuple[str, ...], stdin: bytes | None) -> Reply:
        """How the two nodes answer, and what each command changes."""
        self.log.append((node.name, argv))
        if self.fail.get((node.name, argv[0]), 0) > 0:
            self.fail[(node.name, argv[0])] -= 1
            return 1, ""  # failed: changed nothing
        files, lvs = self.files[node.name], self.lvs[node.name]
        handlers: dict[str, Callable[[], tuple[int, str]]] = {
            "crm_mon": self._crm_mon,
            "cibadmin": lambda: self._cibadmin(node, argv),
            "crm_resource": lambda: self._set_role(argv),
            "crm_verify": lambda: (0, ""),
            "crm_diff": lambda: (1, "<diff/>"),
            "test": lambda: (0 if argv[-1] in files else 1, ""),
            "drbdadm": lambda: (0, ""),
            "rm": lambda: (files.difference_update(argv[2:]), (0, ""))[1],
            "lvs": lambda: self._lvs(lvs, argv),
            "lvremove": lambda: (lvs.pop(argv[-1]), (0, ""))[1],
            "lvchange": lambda: self._lvchange(lvs, argv),
            "cat": lambda: self._read(argv),
            "grep": lambda: self._read(argv),
        }
        return handlers[argv[0]]()

    def _read(self, argv: tuple[str, ...]) -> tuple[int, str]:
        """`cat FILE`, or `grep -E RE FILE` (the lines matching)."""
        text = self.texts.get(argv[-1])
        if text is None:
            return 1 if argv[0] == "cat" else 2, ""
        lines = text.decode().splitlines(keepends=True)
        if argv[0] == "grep":
            pattern = argv[-2].replace("[[:space:]]", r"\s")
            lines = [line for line in lines if re.match(pattern, line)]
        return (0, "".join(lines)) if lines else (1, "")

    @staticmethod
    def _lvs(lvs: dict[str, str], argv: tuple[str, ...]) -> tuple[int, str]:
        """`lvs` of one LV, as LVM answers it (JSON with its tags, or the plain name)."""
        if argv[-1] not in lvs:
            return 5, ""
        if "--reportformat" not in argv:
            return 0, "  vm-a\n"
        vg, name = argv[-1].split("/")
        lv = {"lv_name": name, "vg_name": vg, "lv_size": "1082130432B",
              "lv_attr": "Vwi-a-tz--", "pool_lv": "drbdpool", "lv_tags": lvs[argv[-1]]}  # fmt: skip
        return 0, json.dumps({"report": [{"lv": [lv]}]})

    @staticmethod
    def _lvchange(lvs: dict[str, str], argv: tuple[str, ...]) -> tuple[int, str]:
        tags = set(filter(None, lvs[argv[-1]].split(",")))
        tags |= {argv[i + 1] for i, a in enumerate(argv) if a == "--addtag"}
        tags -= {argv[i + 1] for i, a in enumerate(argv) if a == "--deltag"}
        lvs[argv[-1]] = ",".join(sorted(tags))
        return 0, ""

    def _crm_mon(self) -> tuple[int, str]:
        if self.stopping and self.polls_to_stop == 0:
            self.stopped |= self.stopping
            self.stopping = set()
        self.polls_to_stop -= bool(self.stopping)
        return 0, crm_mon_xml(self.stopped)

    def _cibadmin(self, node: FakeNode, argv: tuple[str, ...]) -> tuple[int, str]:
        if argv[1] == "-Q":
            return 0, self.cib
        assert argv[1:] == ("--patch", "--xml-file", pacemaker.PATCH)
        # Deleting resources Pacemaker still runs would stop them as unordered orphans.
        assert not self.stopping, "CIB patched before crm_mon showed the VM stopped"
        self.cib = node.files[pacemaker.DESIRED].decode()
        return 0, ""

    def _set_role(self, argv: tuple[str, ...]) -> tuple[int, str]:
        assert argv[1] == "--resource" and argv[3:] == STOP
        if self.obey_stop and argv[2] not in self.stopped:
            self.stopping.add(argv[2])
        return 0, ""


async def _no_sleep(_: float) -> None:
    return None


def teardown(cluster: FakeCluster, spec: ClusterSpec, **kw: Any) -> ops.RemoveResult:
    return asyncio.run(ops.teardown(cluster.conns(), spec, "vm-a", sleep=_no_sleep, **kw))


STOP = ("--meta", "--set-parameter", "target-role", "--parameter-value", "Stopped")
OURS_A, OURS_B = (",".join(lv_tags("lab", vm)) for vm in ("vm-a", "vm-b"))
PATCH = ("cibadmin", "--patch", "--xml-file", pacemaker.PATCH)


def expected_mutations(delete_storage: bool) -> list[tuple[str, tuple[str, ...]]]:
    out = [
        ("node01", ("crm_resource", "--resource", "vm-a", *STOP)),
        ("node01", ("crm_resource", "--resource", "vm-a_drbd_clone", *STOP)),
        ("node01", PATCH),
        ("node01", ("rm", "-rf", "--", pacemaker.SCRATCH)),  # this run's scratch directory
    ]
    for node in NODES:
        out += [(node, ("drbdadm", "down", "vm-a")), (node, ("rm", "-f", *VM_A_FILES))]
        if delete_storage:
            out.append((node, ("lvremove", "-y", "hakvm/vm-a")))
    return out


def test_remove_refuses_a_running_vm_without_force(spec: ClusterSpec) -> None:
    cluster = FakeCluster(live_cib())
    with pytest.raises(ops.VmStateError, match=r"^vm-a is running on node01: .*--force$"):
        teardown(cluster, spec)
    assert cluster.mutations() == []


def test_remove_refuses_a_vm_pacemaker_is_starting(
    spec: ClusterSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Active nowhere but being (re)started: still refused without --force."""

    recorded = crm_mon_xml

    def starting(stopped: set[str]) -> str:
        root = etree.fromstring(recorded(stopped | {"vm-a"}).encode())
        vm_a = next(r for r in root.iter("resource") if r.get("id") == "vm-a")
        vm_a.set("role", "Starting")
        return etree.tostring(root, encoding="unicode")

    monkeypatch.setattr(sys.modules[__name__], "crm_mon_xml", starting)
    cluster = FakeCluster(live_cib())
    with pytest.raises(ops.VmStateError, match=r"^vm-a is being started or moved: .*--force$"):
        teardown(cluster, spec)
    assert cluster.mutations() == []


def test_remove_cli_refusal_is_one_line_exit_3_and_leaves_the_spec(
    spec_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = FakeCluster(live_cib())

    async def fake_connect_all(nodes: object, spec_dir: object) -> list[FakeNode]:
        return cluster.conns()

    monkeypatch.setattr("hakvm.remote.session.connect_all", fake_connect_all)
    monkeypatch.setattr("hakvm.cli.vm.node_locks", no_node_lock)
    monkeypatch.setattr("hakvm.ops.vm.POLL_S", 0)
    before = spec_path.read_bytes()
    code, _, err = run("remove", spec_path, "vm-a", capsys=capsys)
    assert code == 3
    assert err.splitlines() == ["hakvm: vm-a is running on node01: stop it first or use --force"]
    assert spec_path.read_bytes() == before
    assert cluster.mutations() == []


def test_remove_waits_for_crm_mon_to_show_it_stopped(spec: ClusterSpec) -> None:
    cluster = FakeCluster(live_cib())
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    asyncio.run(ops.teardown(cluster.conns(), spec, "vm-a", force=True, sleep=sleep))
    assert slept == [3, 3]  # two polls saw it still running
    first_patch = cluster.log.index(("node01", PATCH))
    polls = [i for i, (_, argv) in enumerate(cluster.log) if argv[0] == "crm_mon"]
    assert len(polls) == 4 and polls[-1] < first_patch  # refusal check + 3 polls, all before


@pytest.mark.parametrize("delete_storage", [False, True])
def test_remove_issues_these_commands_in_this_order(
    spec: ClusterSpec, delete_storage: bool
) -> None:
    cluster = FakeCluster(live_cib())
    result = teardown(cluster, spec, force=True, delete_storage=delete_storage)
    assert cluster.mutations() == expected_mutations(delete_storage)
    assert set(result.cib_removed) == VM_A_CIB
    assert config_ids(live_cib()) - config_ids(cluster.cib) == VM_A_CIB
    assert all(cluster.files[n] == set() for n in NODES)
    if delete_storage:
        assert result.lvs_removed == ["node01: hakvm/vm-a", "node02: hakvm/vm-a"]
        assert all(set(cluster.lvs[n]) == {"hakvm/vm-b", "hakvm/drbdpool"} for n in NODES)
    else:
        assert result.lvs_kept == ["node01: hakvm/vm-a", "node02: hakvm/vm-a"]
        assert not any(argv[0] == "lvremove" for _, argv in cluster.log)
        assert all("hakvm/vm-a" in cluster.lvs[n] for n in NODES)


def test_remove_cli_end_to_end_then_spec_entry_goes_last(
    spec_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = FakeCluster(live_cib())

    async def fake_connect_all(nodes: object, spec_dir: object) -> list[FakeNode]:
        return cluster.conns()

    monkeypatch.setattr("hakvm.remote.session.connect_all", fake_connect_all)
    monkeypatch.setattr("hakvm.cli.vm.node_locks", no_node_lock)
    monkeypatch.setattr("hakvm.ops.vm.POLL_S", 0)
    code, out, _ = run("remove", spec_path, "vm-a", "--force", capsys=capsys)
    assert code == 0
    assert "kept logical volume node01: hakvm/vm-a, node02: hakvm/vm-a" in out
    assert "name: vm-a" not in spec_path.read_text()
    assert cluster.mutations() == expected_mutations(False)


def test_interrupted_remove_finishes_when_run_again(spec: ClusterSpec) -> None:
    cluster = FakeCluster(live_cib())
    cluster.fail[("node02", "rm")] = 1
    with pytest.raises(RemoteError):
        teardown(cluster, spec, force=True, delete_storage=True)
    assert cluster.files["node02"] == set(VM_A_FILES)
    cluster.log.clear()
    teardown(cluster, spec, force=True, delete_storage=True)
    # Only what was left: node01 is done, the CIB is clean, node02 goes on where it stopped.
    assert cluster.mutations() == [
        ("node02", ("drbdadm", "down", "vm-a")),
        ("node02", ("rm", "-f", *VM_A_FILES)),
        ("node02", ("lvremove", "-y", "hakvm/vm-a")),
    ]
    cluster.log.clear()
    teardown(cluster, spec, force=True, delete_storage=True)
    assert cluster.mutations() == []


def test_a_name_gone_from_the_spec_is_cleaned_only_with_traces(spec: ClusterSpec) -> None:
    without_a = spec.model_copy(update={"vms": [v for v in spec.vms if v.name != "vm-a"]})
    cluster = FakeCluster(live_cib())
    cluster.stopped = {"vm-a", "vm-a_drbd_clone"}
    teardown(cluster, without_a)
    assert cluster.mutations() == expected_mutations(False)
    with pytest.raises(ops.VmInputError, match="no trace"):
        teardown(cluster, without_a)


def test_remove_refuses_the_thin_pools_name_for_lvremove(spec: ClusterSpec) -> None:
    cluster = FakeCluster(live_cib())
    with pytest.raises(ops.VmInputError, match="thin pool"):
        asyncio.run(ops.teardown(cluster.conns(), spec, "drbdpool", delete_storage=True))
    assert cluster.log == []


def test_stop_wait_times_out_naming_what_still_runs(spec: ClusterSpec) -> None:
    cluster = FakeCluster(live_cib())
    cluster.obey_stop = False
    ticks = iter(range(0, 10_000, 100))
    with pytest.raises(RemoteError, match=r"vm-a still active after 30s"):
        asyncio.run(
            ops.wait_stopped(
                cluster.conns()[0], ["vm-a"], 30, _no_sleep, clock=lambda: float(next(ticks))
            )
        )
