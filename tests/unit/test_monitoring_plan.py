"""The spec's `monitoring` and what plan/apply do with it: validate names the field of each
mistake; the monitoring phase installs what the agent needs, writes its files, starts the
timer and node_exporter, and nothing once converged; the webhook URL is read from its file,
checked strictly, written for hacluster only and never shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hakvm.agent import layout
from hakvm.cli import main
from hakvm.deploy import monitoring as mon
from hakvm.deploy import phases as ph
from hakvm.deploy.steps import Run, Write
from hakvm.remote.facts import FileFact
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
        ({"events": False, "alerts": {"webhook_url_file": "hook.url"}}, "debian12",
         "monitoring.alerts.webhook_url_file: forwards the alert agent's events: needs "
         "monitoring.events true"),
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
    assert {layout.COLLECTOR_PATH, layout.ALERT_AGENT_PATH, layout.CONFIG_PATH,
            rendered.TIMER_PATH, rendered.TMPFILES_PATH} <= set(writes)  # fmt: skip
    last = steps[-1]
    assert [a.argv for a in last.actions if isinstance(a, Run)] == [
        ("systemd-tmpfiles", "--create", rendered.TMPFILES_PATH),
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable", "--no-reload", "hakvm-metrics.timer"),
        ("systemctl", "restart", "hakvm-metrics.timer"),
        ("systemctl", "enable", "--no-reload", "--now", "prometheus-node-exporter"),
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


def test_webhook_url_is_written_for_hacluster_only_and_never_shown(tmp_path: Path) -> None:
    url = "https://hooks.example/services/T0KEN/SECRET"
    (tmp_path / "hook.url").write_text(url + "\n")
    path = _spec_file(tmp_path, "lab", _monitoring(alerts={"webhook_url_file": "hook.url"}))
    env = _env(path, {})
    env.facts = converged_facts(env)
    steps = ph.monitoring(env)
    assert [s.title for s in steps] == [f"create {layout.WEBHOOK_URL_PATH}"] * 2
    write = steps[0].actions[0]
    assert isinstance(write, Write)
    assert (write.content, write.mode, write.owner, write.group) == (
        (url + "\n").encode(), 0o600, "hacluster", "haclient")
    assert not any("T0KEN" in s.diff or "T0KEN" in str(s.as_dict()) for s in steps)
    for facts in env.facts.values():
        facts.files[layout.WEBHOOK_URL_PATH] = FileFact(write.content, 0o600)
    assert ph.monitoring(env) == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [("ftp://hooks.example/T0KEN", "must start with https://"),
     ("https://me:T0KEN@hooks.example/", "no user:password@"), (None, "No such file")],
)  # fmt: skip
def test_a_bad_webhook_url_stops_the_plan_in_one_line(
    content: str | None, problem: str, tmp_path: Path
) -> None:
    if content is not None:
        (tmp_path / "hook.url").write_text(content)
    path = _spec_file(tmp_path, "lab", _monitoring(alerts={"webhook_url_file": "hook.url"}))
    with pytest.raises(mon.WebhookUrlError) as caught:
        ph.monitoring(_env(path, {}))
    message = str(caught.value)
    assert message.startswith("monitoring.alerts.webhook_url_file: ") and problem in message
    assert "\n" not in message and "T0KEN" not in message
    assert caught.value.exit_code == 2


def test_monitoring_off_installs_nothing(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, "lab", _monitoring(metrics=False, events=False))
    env = _env(path, {n: fresh_facts(n, "debian12") for n in ("node01", "node02")})
    assert ph.monitoring(env) == []
    data = yaml.safe_load(path.read_text())
    assert data["monitoring"] == {"metrics": False, "events": False}
