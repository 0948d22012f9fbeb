"""`/metrics`: the cluster as this view sees it, in Prometheus' text exposition format, written
by the official client (`prometheus_client`: its escaping and format, not ours).

A few series, named as docs/metrics.md names the nodes' own where they overlap
(`hakvm_cluster_status`, `hakvm_vm_running`, `hakvm_vm_on_preferred_node`), plus the view's
own (`hakvm_serve_*`). The nodes' collector (node_exporter's textfile) has the full set.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hakvm.ops.view import ClusterView

IN_CLUSTER = ("online", "standby", "maintenance")


class ViewCollector(Collector):
    def __init__(self, view: ClusterView | None) -> None:
        self.view = view

    def collect(self) -> Iterator[GaugeMetricFamily]:
        view = self.view
        answered = GaugeMetricFamily(
            "hakvm_serve_up", "1 once hakvm serve has the nodes' answers to show"
        )
        answered.add_metric([], 1 if view else 0)
        yield answered
        if view is None:
            return
        report = view.report
        yield _gauge("hakvm_serve_last_refresh_timestamp_seconds",
                     "When the answers shown were read", view.refreshed)  # fmt: skip
        yield _gauge("hakvm_serve_refresh_success", "1 when the last refresh succeeded",
                     0 if view.error else 1)  # fmt: skip
        yield _gauge("hakvm_cluster_status", "Cluster health by hakvm status's rules: "
                     "0 healthy, 1 degraded, 2 critical, 3 unknown (no node answered)",
                     report.exit_code)  # fmt: skip
        yield _gauge("hakvm_cluster_problems", "Problems hakvm status lists", len(report.problems))
        online = GaugeMetricFamily("hakvm_node_online", "1 when the node is a member of the "
                                   "cluster (online, standby or maintenance)", labels=["node"])
        reachable = GaugeMetricFamily("hakvm_node_reachable", "1 when hakvm reached the node "
                                      "over SSH", labels=["node"])  # fmt: skip
        for node in report.nodes:
            online.add_metric([node.name], 1 if node.state in IN_CLUSTER else 0)
            reachable.add_metric([node.name], 1 if node.reachable else 0)
        yield online
        yield reachable
        running = GaugeMetricFamily("hakvm_vm_running", "1 when Pacemaker runs the VM on "
                                    "exactly one node", labels=["vm"])  # fmt: skip
        active = GaugeMetricFamily("hakvm_vm_active", "1 on each node where the VM is active",
                                   labels=["vm", "node"])  # fmt: skip
        preferred = GaugeMetricFamily("hakvm_vm_on_preferred_node", "1 when the VM runs on its "
                                      "preferred node (node: that node)", labels=["vm", "node"])
        for vm in report.vms:
            running.add_metric([vm.name], 1 if len(vm.running_on) == 1 else 0)
            for node in report.nodes:
                active.add_metric([vm.name, node.name], 1 if node.name in vm.running_on else 0)
            if vm.preferred_node:
                on = vm.running_on == [vm.preferred_node]
                preferred.add_metric([vm.name, vm.preferred_node], 1 if on else 0)
        yield running
        yield active
        yield preferred


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def exposition(view: ClusterView | None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ViewCollector(view))
    return generate_latest(registry)
