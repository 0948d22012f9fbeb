"""plan's restart prediction: the real crm_simulate on the CIB recorded on the lab, patched
the way apply would patch it."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree

from hakvm.deploy import cib_merge
from hakvm.remote.facts import parse_batch
from hakvm.remote.pacemaker import SIMULATE_ARGV, disruptive, transition_summary
from hakvm.render import cib
from hakvm.render.base import RenderContext, Secrets
from hakvm.spec.derive import derive
from hakvm.spec.models import ClusterSpec

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"

SUMMARY = """Current cluster status:
  * Node List:
    * Online: [ node01 node02 ]

Transition Summary:
  * Restart    vm-a    ( node01 )  due to resource definition change
  * Start      vm-c    ( node02 )

Executing Cluster Transition:
  * Resource action: vm-a            stop on node01
"""


def test_transition_summary_and_what_disrupts() -> None:
    actions = transition_summary(SUMMARY)
    assert actions == [
        "Restart vm-a ( node01 ) due to resource definition change",
        "Start vm-c ( node02 )",
    ]
    assert disruptive(actions) == [actions[0]]
    assert transition_summary("Transition Summary:\n\nExecuting Cluster Transition:\n") == []
    assert transition_summary("garbage") == []


def _recorded_live_cib() -> str:
    """`cibadmin -Q` as recorded on the lab (node01 facts): vm-a on node01, vm-b on node02,
    from before VirtualDomain got migration_network_suffix."""
    rc, text = parse_batch((DATA / "facts-node01.b64").read_text())["cib"]
    assert rc == 0
    return text.decode()


def _lab(**vm_a: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "examples" / "lab.yaml").read_text())
    data = copy.deepcopy(data)
    data["cluster"]["timing"]["fence_delay_s"] = 10  # as on the recorded CIB's fence device
    del data["cluster"]["fencing"]["power_wait_s"]  # which has no power_wait either
    data["vms"][0].update(vm_a)
    return data


# VirtualDomain parameters hakvm renders that the recorded CIB predates.
NEWER_PARAMS = (
    "migration_network_suffix",
    "autoset_utilization_cpu",
    "autoset_utilization_hv_memory",
    "autoset_utilization_host_memory",
)


def _desired(
    data: dict[str, Any], *, drop_params: tuple[str, ...] = (), recorded_delay: bool = True
) -> str:
    spec = ClusterSpec.model_validate(data)
    rendered = cib.cib_xml(RenderContext(spec, derive(spec), Secrets.redacted()))
    root = etree.fromstring(rendered.encode())
    for name in drop_params:  # make the rendered CIB match the recorded one there
        for nv in root.iterfind(f".//nvpair[@name='{name}']"):
            nv.getparent().remove(nv)
    if recorded_delay:  # the recorded fence device has the delay's bare form ("10s")
        for nv in root.iterfind(".//nvpair[@name='pcmk_delay_base']"):
            nv.set("value", nv.get("value", "").split(":")[-1])
    return cib_merge.desired_cib(_recorded_live_cib(), etree.tostring(root, encoding="unicode"))


def _simulate(cib_text: str) -> list[str]:
    result = subprocess.run(
        SIMULATE_ARGV, input=cib_text, capture_output=True, text=True, check=True, timeout=120
    )
    return transition_summary(result.stdout)


@pytest.mark.realtool
def test_new_virtualdomain_parameter_restarts_the_running_vms() -> None:
    # What happened on the lab when migration_network_suffix was added: both VMs restarted.
    # (Adding the autoset_utilization_* parameters does the same: plan shows it first.)
    actions = _simulate(_desired(_lab()))
    assert disruptive(actions) == [
        "Restart vm-a ( node01 ) due to resource definition change",
        "Restart vm-b ( node02 ) due to resource definition change",
    ]


@pytest.mark.realtool
def test_monitor_interval_change_restarts_nothing() -> None:
    # Same parameters as the live CIB, only monitor intervals and cluster options differ.
    actions = _simulate(_desired(_lab(), drop_params=NEWER_PARAMS))
    assert disruptive(actions) == []


@pytest.mark.realtool
def test_changing_one_vm_restarts_only_that_vm() -> None:
    actions = _simulate(_desired(_lab(force_stop=False), drop_params=NEWER_PARAMS))
    assert disruptive(actions) == ["Restart vm-a ( node01 ) due to resource definition change"]


@pytest.mark.realtool
def test_the_delay_in_mapping_form_restarts_only_the_fence_device() -> None:
    # A cluster applied before pcmk_delay_base took the form node01:10s: the next apply
    # restarts node01's fence device (on node02) and no VM; plan shows it first.
    actions = _simulate(_desired(_lab(), drop_params=NEWER_PARAMS, recorded_delay=False))
    assert disruptive(actions) == [
        "Restart node01_fence ( node02 ) due to resource definition change"
    ]
