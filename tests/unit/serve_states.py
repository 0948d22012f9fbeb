"""Views `hakvm serve` shows, built from the lab's recorded status answers (tests/unit/data)
and the events its nodes' alert agent records: healthy, the heartbeat link cut, and a crash
of node02 (vm-b's node) told refresh by refresh (node lost, fenced, vm-b failed over to
node01, node02 back). Shared by the unit and the browser tests."""

from __future__ import annotations

import datetime
import json
import pathlib
from typing import Any

from hakvm.ops.drills import DrillRecord
from hakvm.ops.view import ClusterView, Observer, assemble
from hakvm.remote.probes import NodeAnswer
from hakvm.spec.models import ClusterSpec
from hakvm.spec.validate import validate_file
from tests.unit.recorded import answers, edit

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = REPO / "examples" / "lab.yaml"
T0 = datetime.datetime(2026, 11, 26, 6, 0, tzinfo=datetime.UTC).timestamp()
EVERY = 10.0

VM_B_ON_NODE02 = (
    'nodes_running_on="1">\n      <node name="node02" id="2" cached="true"/>\n    </resource>\n'
    "  </resources>"
)  # vm-b is the last resource of the recording


def lab_spec() -> ClusterSpec:
    report = validate_file(LAB)
    assert report.spec is not None
    return report.spec


def event(t: float, kind: str, node: str = "node01", **fields: Any) -> str:
    """One line as the alert agent writes it."""
    record = {"t": t, "node": node, "kind": kind, "target": None, "task": None, "rc": None,
              "status": None, "desc": None, "rsc": None, **fields}  # fmt: skip
    return json.dumps(record, separators=(",", ":"))


def with_events(seen: dict[str, NodeAnswer], lines: dict[str, list[str]]) -> None:
    for name, answer in seen.items():
        if answer.raw is not None:
            text = "".join(f"{line}\n" for line in lines.get(name, []))
            answer.raw["events"] = (0, text.encode())


def node02_lost(seen: NodeAnswer, *, unclean: bool, vm_b_on: str | None) -> None:
    """node01's crm_mon with node02 out of the cluster (unclean until fenced), node01 DC, and
    vm-b stopped or running on `vm_b_on`."""
    edit(seen, "crm_mon", 'name="node02" id="2" with_quorum', 'name="node01" id="1" with_quorum')
    edit(seen, "crm_mon", '<node name="node02" id="2" online="true"',
         '<node name="node02" id="2" online="false"')  # fmt: skip
    if unclean:
        edit(seen, "crm_mon", 'unclean="false" health="green" feature_set="3.16.1" '
             'shutdown="false" expected_up="true" is_dc="true"', 'unclean="true" '
             'health="green" feature_set="3.16.1" shutdown="false" expected_up="true" '
             'is_dc="false"')  # fmt: skip
    if vm_b_on is None:
        edit(seen, "crm_mon", VM_B_ON_NODE02, VM_B_ON_NODE02.replace("node02", "nobody"))
        edit(seen, "crm_mon", '<resource id="vm-b" resource_agent="ocf:heartbeat:VirtualDomain" '
             'role="Started" target_role="Started" active="true"', '<resource id="vm-b" '
             'resource_agent="ocf:heartbeat:VirtualDomain" role="Stopped" '
             'target_role="Started" active="false"')  # fmt: skip
    else:
        node_id = vm_b_on[-1]
        edit(seen, "crm_mon", VM_B_ON_NODE02,
             VM_B_ON_NODE02.replace('"node02" id="2"', f'"{vm_b_on}" id="{node_id}"'))


def fenced(seen: NodeAnswer, at: float) -> None:
    stamp = datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    history = (f'  <fence_history>\n    <fence_event action="reboot" target="node02" '
               f'delegate="node01" client="pacemaker-controld.1" origin="node01" '
               f'status="success" completed="{stamp}"/>\n  </fence_history>\n')  # fmt: skip
    edit(seen, "crm_mon", '  <status code="0" message="OK"/>',
         history + '  <status code="0" message="OK"/>')  # fmt: skip


def crash_events() -> list[str]:
    """What node01's agent records while node02 crashes and vm-b fails over."""
    return [
        event(T0 - 3000, "resource", target="node02", task="start", rc=0, status=0,
              target_rc=0, desc="ok", rsc="vm-b"),
        event(T0 - 2990, "resource", target="node01", task="start", rc=0, status=0,
              target_rc=0, desc="ok", rsc="vm-a"),
        event(T0 + 25, "node", target="node02", desc="lost", nodeid="2"),
        event(T0 + 45, "fencing", target="node02", task="reboot", rc=0, desc="OK"),
        event(T0 + 80, "resource", target="node01", task="start", rc=0, status=0,
              target_rc=0, desc="ok", rsc="vm-b"),
        event(T0 + 250, "node", target="node02", desc="member", nodeid="2"),
    ]  # fmt: skip


def healthy_view(spec: ClusterSpec, observer: Observer | None = None) -> ClusterView:
    seen = answers("healthy")
    with_events(seen, {})
    return assemble(spec, seen, observer or Observer(), [], now=T0, every=EVERY)


def cut_view(spec: ClusterSpec) -> ClusterView:
    """The dedicated heartbeat link (knet link 0) cut, after a healthy refresh."""
    observer = Observer()
    healthy_view(spec, observer)
    seen = answers("hb-cut")
    with_events(seen, {})
    return assemble(spec, seen, observer, [], now=T0 + EVERY, every=EVERY)


def crash_views(spec: ClusterSpec) -> list[ClusterView]:
    """Healthy; node02 lost (vm-b down); fenced, vm-b running on node01; node02 back."""
    observer = Observer()
    drill = DrillRecord(scenario="node-crash", passed=True, recovery_s=68.5,
                        started=T0 - 1800, finished=T0 - 1680)  # fmt: skip
    views = [healthy_view(spec, observer)]
    lines = crash_events()

    def refresh(seen: dict[str, NodeAnswer], t: float) -> None:
        with_events(seen, {"node01": [ln for ln in lines if json.loads(ln)["t"] <= t]})
        views.append(assemble(spec, seen, observer, [drill], now=t, every=EVERY))

    lost = answers("healthy")
    node02_lost(lost["node01"], unclean=True, vm_b_on=None)
    lost["node02"] = NodeAnswer("node02", error="node02: cannot connect: Connection refused")
    refresh(lost, T0 + 30)
    over = answers("healthy")
    node02_lost(over["node01"], unclean=False, vm_b_on="node01")
    fenced(over["node01"], T0 + 45)
    over["node02"] = NodeAnswer("node02", error="node02: cannot connect: Connection refused")
    refresh(over, T0 + 90)
    back = answers("healthy")  # vm-b stays on node01 (stickiness)
    for answer in back.values():
        edit(answer, "crm_mon", 'name="node02" id="2" with_quorum',
             'name="node01" id="1" with_quorum')  # fmt: skip
        edit(answer, "crm_mon", VM_B_ON_NODE02,
             VM_B_ON_NODE02.replace('"node02" id="2"', '"node01" id="1"'))  # fmt: skip
        fenced(answer, T0 + 45)
    refresh(back, T0 + 300)
    return views
