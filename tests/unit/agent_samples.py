"""Helpers for the agent's tests: read the text exposition format back into samples, and an
agent config for the lab spec's nodes."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from hakvm.agent.config import AgentConfig
from hakvm.spec.models import ClusterSpec

DATA = Path(__file__).parent / "data"
SAMPLE_RE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)$")
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Sample = tuple[str, frozenset[tuple[str, str]]]


def value(text: str) -> float:
    return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(text) or float(text)


def samples(text: str) -> dict[Sample, float]:
    """(name, labels) -> value for every sample line; label order does not matter, and a
    label with an empty value is absent (as in Prometheus)."""
    out: dict[Sample, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE_RE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels = frozenset(
            (k, v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\"))
            for k, v in LABEL_RE.findall(match["labels"] or "")
            if v != ""
        )
        key = (match["name"], labels)
        assert key not in out, f"duplicate sample {key}"
        out[key] = value(match["value"])
    return out


def types(text: str) -> dict[str, str]:
    return {
        parts[2]: parts[3]
        for line in text.splitlines()
        if line.startswith("# TYPE ") and len(parts := line.split()) == 4
    }


def helps(text: str) -> dict[str, str]:
    return {
        line.split(" ", 3)[2]: line.split(" ", 3)[3]
        for line in text.splitlines()
        if line.startswith("# HELP ")
    }


# Every query of dashboard 12229 "ClusterLabs HA Cluster details" (ha_cluster_exporter 1.4.2,
# dashboards/grafana-ha-cluster-details.json) that reads an ha_cluster_* series; the SBD panel
# is empty without SBD, as with the exporter. See docs/metrics.md, "The dashboard contract".
DASHBOARD = [
    "query_result(label_replace((ha_cluster_pacemaker_nodes{job='$cluster',status='dc'} == 1), "
    "'ip', '$1', 'instance', '(.*):.*') + on(node, ip) group_left label_replace(label_replace("
    "0 * node_uname_info{job='$cluster'}, 'node', '$1', 'nodename', '(.*)'), 'ip', '$1', "
    "'instance','(.*):.*'))",
    'count(ha_cluster_pacemaker_nodes{instance="$dc_instance", status="online"} == 1) / '
    'count(count(ha_cluster_pacemaker_nodes{instance="$dc_instance"}) by (node))',
    'sum(ha_cluster_pacemaker_nodes{status="unclean", instance="$dc_instance"}) by (node)',
    'sum(ha_cluster_pacemaker_nodes{status="online", instance="$dc_instance"}) by (node)',
    'sum(ha_cluster_pacemaker_nodes{instance="$dc_instance"}) by (type)',
    'count(ha_cluster_pacemaker_resources{instance="$dc_instance", status="active"} == 1) / '
    'count(count(ha_cluster_pacemaker_resources{instance="$dc_instance"}) by (resource,node))',
    'ha_cluster_corosync_quorum_votes{instance="$dc_instance",type="expected_votes"}',
    'ha_cluster_corosync_quorum_votes{instance="$dc_instance",type="highest_expected"}',
    'ha_cluster_corosync_quorum_votes{instance="$dc_instance", type="total_votes"}',
    'ha_cluster_corosync_quorum_votes{instance="$dc_instance", type="quorum"}',
    'ha_cluster_corosync_quorate{instance="$dc_instance"}',
    'ha_cluster_corosync_ring_errors{instance="$dc_instance"}',
    'ha_cluster_pacemaker_config_last_change{instance="$dc_instance"} * 1000',
    'sum(ha_cluster_pacemaker_nodes{instance="$dc_instance"}) by (status)',
    'sum(ha_cluster_pacemaker_resources{instance="$dc_instance"}) by (status)',
    'sum(ha_cluster_pacemaker_resources{instance="$dc_instance"} == 1) by(resource, node, '
    "status, role, agent)",
    'sum(ha_cluster_pacemaker_migration_threshold{instance="$dc_instance"}) by(resource, node)',
    'sum(ha_cluster_pacemaker_fail_count{instance="$dc_instance"}) by(resource, node)',
    'ha_cluster_pacemaker_node_attributes{instance="$dc_instance"}',
    'clamp_min(clamp_max(ha_cluster_pacemaker_location_constraints{instance="$dc_instance"}, '
    "1000000), -1000000)",
]
TARGET_LABELS = {"job", "instance"}  # Prometheus's, from the scrape: not in the file
NODE_STATUSES = {"online", "standby", "standby_onfail", "maintenance", "pending", "unclean",
                 "shutdown", "expected_up", "dc"}  # fmt: skip


def dashboard_problems(text: str) -> list[str]:
    """What the textfile `text` lacks for dashboard 12229: each query's series with its
    label matchers (target labels aside), the labels it aggregates by, exactly one DC and
    every node status."""
    present = samples(text)
    problems: list[str] = []
    for query in DASHBOARD:
        by = {label.strip() for group in re.findall(r"by\s*\(([^)]*)\)", query)
              for label in group.split(",")}  # fmt: skip
        for name, selector in re.findall(r"(ha_cluster_\w+)(\{[^}]*\})?", query):
            matchers = {k: v for k, v in re.findall(r"(\w+)\s*=\s*['\"]([^'\"]*)['\"]", selector)
                        if k not in TARGET_LABELS}  # fmt: skip
            found = [dict(labels) for (n, labels), _ in present.items()
                     if n == name and set(matchers.items()) <= labels]  # fmt: skip
            if not found:
                problems.append(f"{query}: no {name}{matchers}")
                continue
            # Every `by` label is on the series ("node" of a stopped resource is empty, and
            # Prometheus drops an empty label: the exporter's series are the same).
            missing = by - {k for labels in found for k in labels} - {"ip"}
            if missing and not (name == "ha_cluster_pacemaker_resources" and missing <= {"node"}):
                problems.append(f"{query}: {name} lacks {missing}")
    dc = [dict(ls)["node"] for (n, ls), v in present.items()
          if n == "ha_cluster_pacemaker_nodes" and ("status", "dc") in ls and v == 1]  # fmt: skip
    if len(dc) != 1:  # exactly one: the dashboard's dc_instance join needs it
        problems.append(f"DC reported for {dc}")
    statuses = {dict(ls)["status"] for (n, ls) in present if n == "ha_cluster_pacemaker_nodes"}
    if statuses != NODE_STATUSES:
        problems.append(f"node statuses {sorted(statuses)}")
    return problems


def lab_config(node: str = "node01") -> AgentConfig:
    """The agent config the renderer writes for the lab spec (examples/lab.yaml)."""
    from hakvm.render.monitoring import agent_config
    from tests.render.examples import example_data, render_context

    ctx = render_context(example_data("lab"))
    return agent_config(ctx, ctx.spec.node(node))


@cache
def lab_spec() -> ClusterSpec:
    """examples/lab.yaml, validated."""
    from hakvm.spec.validate import validate_file

    report = validate_file(Path(__file__).resolve().parents[2] / "examples" / "lab.yaml")
    assert report.spec is not None
    return report.spec


def promtool_check(text: str, *, missing: str = "skip") -> None:
    """`promtool check metrics` passes on `text` (Debian's prometheus package: make deps);
    without promtool the test is skipped, or failed with missing="fail"."""
    if shutil.which("promtool") is None:
        why = "promtool is not installed (Debian package prometheus; make deps)"
        pytest.fail(why) if missing == "fail" else pytest.skip(why)
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                            text=True, check=False, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
