"""The spec's `monitoring` and what plan/apply do with it: validate names the field of each
mistake; the monitoring phase installs what the agent needs, writes its files, starts the
timer and node_exporter, and nothing once converged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hakvm.agent import layout
from hakvm.cli import main
from hakvm.deploy import phases as ph
from hakvm.deploy.steps import Run, Write
from hakvm.render import monitoring as rendered
from tests.unit.test_plan import _env, _spec_file, converged_facts, fresh_facts


def _monitoring(**fields: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["monitoring"] = fields

    return edit


@pytest.mark.parametrize(
    ("fields", "os", "line"),
    [
        ({"node_exporter": True}, "rhel9",
         "monitoring.node_exporter: installs Debian's prometheus-node-exporter (debian12 only)"),
        ({"interval_s": 2}, "debian12", "monitoring.interval_s: 2 is too small"),
        ({"node_exportr": True}, "debian12", "monitoring.node_exportr"),
    ],
)  # fmt: skip
def test_validate_names_the_monitoring_field(
    fields: dict[str, Any], os: str, line: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    def edit(data: dict[str, Any]) -> None:
        data["cluster"]["os"] = os
        data["monitoring"] = fields

    path = _spec_file(tmp_path, "lab", edit)
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr().out
    assert any(line in text for text in out.splitlines()), out


def test_fresh_nodes_install_write_and_start_the_agent(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, "lab")  # node_exporter: true
    env = _env(path, {n: fresh_facts(n, "debian12") for n in ("node01", "node02")})
    steps = [s for s in ph.monitoring(env) if s.node == "node01"]
    assert steps[0].title == "install ipmitool prometheus-node-exporter python3"
    writes = [a.path for s in steps for a in s.actions if isinstance(a, Write)]
    assert {layout.COLLECTOR_PATH, layout.CONFIG_PATH,
            rendered.TIMER_PATH, rendered.TMPFILES_PATH} <= set(writes)  # fmt: skip
    last = steps[-1]
    assert [a.argv for a in last.actions if isinstance(a, Run)] == [
        ("systemd-tmpfiles", "--create", rendered.TMPFILES_PATH),
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable", "hakvm-metrics.timer"),
        ("systemctl", "restart", "hakvm-metrics.timer"),
        ("systemctl", "enable", "--now", "prometheus-node-exporter"),
    ]
    order = [name for name, _ in ph.PHASES]
    assert order.index("monitoring") < order.index("cib")  # the agent before the CIB names it


def test_converged_nodes_get_no_monitoring_step_and_a_stopped_timer_is_restarted(
    tmp_path: Path,
) -> None:
    path = _spec_file(tmp_path, "lab")
    env = _env(path, {})
    env.facts = converged_facts(env)
    assert ph.monitoring(env) == []
    env.facts["node02"].services_active["hakvm-metrics.timer"] = False
    (step,) = ph.monitoring(env)
    assert step.node == "node02"
    assert ("systemctl", "restart", "hakvm-metrics.timer") in [
        a.argv for a in step.actions if isinstance(a, Run)]  # fmt: skip


def test_monitoring_off_installs_nothing(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, "lab", _monitoring(metrics=False))
    env = _env(path, {n: fresh_facts(n, "debian12") for n in ("node01", "node02")})
    assert ph.monitoring(env) == []
    data = yaml.safe_load(path.read_text())
    assert data["monitoring"] == {"metrics": False}
