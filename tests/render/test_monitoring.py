"""What apply installs so the cluster is watched without hakvm (render/monitoring.py and the
CIB's alert): the agent's files as they are in src/hakvm/agent, its launchers run by Debian's
own python3 (standard library only), the units checked by systemd-analyze, the config without
any secret, the alert in the CIB checked by crm_verify."""

from __future__ import annotations

import copy
import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from hakvm.agent import layout
from hakvm.render import cib, monitoring
from hakvm.render.base import RenderContext
from tests.render.checkers.cib import check_cib
from tests.render.examples import example_data, render_context

AGENT_SRC = Path(__file__).resolve().parents[2] / "src" / "hakvm" / "agent"


def _files(ctx: RenderContext, node: str = "node01") -> dict[str, tuple[str, int]]:
    return {f.path: (f.content, f.mode) for f in monitoring.render(ctx).get(node, [])}


def test_the_agent_ships_as_its_own_source_files() -> None:
    files = _files(render_context(example_data("lab")))
    shipped = {p.rsplit("/", 1)[1]: c for p, (c, _) in files.items()
               if p.startswith(layout.PACKAGE_DIR + "/")}  # fmt: skip
    assert shipped == {p.name: p.read_text() for p in AGENT_SRC.glob("*.py")}
    assert files[layout.COLLECTOR_PATH][1] == files[layout.ALERT_AGENT_PATH][1] == 0o755
    assert files[monitoring.SERVICE_PATH][1] == files[monitoring.TIMER_PATH][1] == 0o644
    for path in (layout.COLLECTOR_PATH, layout.ALERT_AGENT_PATH):
        assert files[path][0].startswith("#!/usr/bin/python3 -I\n# Managed by hakvm")


def test_config_names_the_peer_bmc_password_file_and_holds_no_secret(tmp_path: Path) -> None:
    data = copy.deepcopy(example_data("lab"))
    secret = "Zq9-not-in-any-output-7Kx"
    for node in data["nodes"]:
        (tmp_path / node["name"]).write_text(secret + "\n")
        node["bmc"]["password_file"] = str(tmp_path / node["name"])
    ctx = render_context(data)
    for node in ("node01", "node02"):
        files = _files(ctx, node)
        assert not any(secret in content for content, _ in files.values())
        config = json.loads(files[layout.CONFIG_PATH][0])
        peer = "node02" if node == "node01" else "node01"
        assert config["node"] == node
        assert config["peer_bmc"] == {
            "node": peer, "address": "10.0.2.2", "port": 6231 if peer == "node02" else 6230,
            "user": "hakvm", "lanplus": True, "password_file": f"/etc/hakvm/fence/{peer}.password",
        }  # fmt: skip
        assert config["bonds"] == {"bond0": ["eth1", "eth2"]}
        assert [(v["name"], v["drbd_minor"]) for v in config["vms"]] == [("vm-a", 0), ("vm-b", 1)]


def test_what_the_spec_turns_off_is_not_installed() -> None:
    def files(**monitoring_spec: object) -> set[str]:
        data = copy.deepcopy(example_data("lab"))
        data["monitoring"] = monitoring_spec
        return set(_files(render_context(data)))

    assert files(metrics=False, events=False) == set()
    no_events = files(events=False)
    assert layout.ALERT_AGENT_PATH not in no_events and layout.COLLECTOR_PATH in no_events
    no_metrics = files(metrics=False)
    assert layout.ALERT_AGENT_PATH in no_metrics
    assert not {layout.COLLECTOR_PATH, layout.CONFIG_PATH, monitoring.TIMER_PATH} & no_metrics
    assert "OnUnitActiveSec=30s" in _files(render_context(
        {**example_data("lab"), "monitoring": {"interval_s": 30}}))[monitoring.TIMER_PATH][0]


def test_units_run_the_collector_within_its_interval() -> None:
    files = _files(render_context(example_data("seed")))  # the default interval, 15 s
    service = files[monitoring.SERVICE_PATH][0]
    assert "Type=oneshot\n" in service and "TimeoutStartSec=14s\n" in service
    assert f"ExecStart={layout.COLLECTOR_PATH}\n" in service
    timer = files[monitoring.TIMER_PATH][0]
    assert "OnUnitActiveSec=15s\n" in timer and "WantedBy=timers.target\n" in timer


@pytest.mark.realtool
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    """The units as rendered, ExecStart pointing at the rendered launcher in a temp dir
    (verify checks that the command is there and executable); no warning either."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    files = _files(render_context(example_data("lab")))
    launcher = tmp_path / "hakvm-metrics"
    launcher.write_text(files[layout.COLLECTOR_PATH][0])
    launcher.chmod(0o755)
    service = tmp_path / monitoring.SERVICE
    service.write_text(files[monitoring.SERVICE_PATH][0].replace(
        layout.COLLECTOR_PATH, str(launcher)))  # fmt: skip
    (tmp_path / monitoring.TIMER).write_text(files[monitoring.TIMER_PATH][0])
    result = subprocess.run(
        ["systemd-analyze", "verify", str(service), str(tmp_path / monitoring.TIMER)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")


def test_launcher_runs_the_collector_with_debians_python_alone(tmp_path: Path) -> None:
    """Installed as apply installs it (the package beside its launcher), run by
    /usr/bin/python3 -I with no virtualenv: without /etc/hakvm/agent.json it still writes
    its file, with hakvm_collector_success 0."""
    files = _files(render_context(example_data("lab")))
    root = tmp_path / "lib"
    for path, (content, mode) in files.items():
        if path.startswith(layout.INSTALL_DIR + "/"):
            target = root / path.removeprefix(layout.INSTALL_DIR + "/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content.replace(repr(layout.INSTALL_DIR), repr(str(root))))
            target.chmod(mode)
    out = tmp_path / "textfile" / "hakvm.prom"
    result = subprocess.run(
        [str(root / "hakvm-metrics"), "--output", str(out)], capture_output=True, text=True,
        check=False, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "agent.json" in result.stderr
    assert "hakvm_collector_success 0\n" in out.read_text()
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in out.parent.iterdir()] == ["hakvm.prom"]  # no temp file left


def test_events_alert_in_the_cib_runs_the_agent_for_every_event() -> None:
    root = etree.fromstring(cib.cib_xml(render_context(example_data("lab"))).encode())
    (alert,) = root.iterfind("configuration/alerts/alert")
    assert (alert.get("id"), alert.get("path")) == ("hakvm-events", layout.ALERT_AGENT_PATH)
    assert alert.find("select") is None  # every kind: fencing, node, resource, attribute
    assert [r.get("value") for r in alert.iter("recipient")] == [layout.EVENTS_PATH]


@pytest.mark.realtool
def test_webhook_is_a_second_recipient_whose_url_stays_out_of_the_cib(tmp_path: Path) -> None:
    data = copy.deepcopy(example_data("lab"))
    data["monitoring"] = {"alerts": {"webhook_url_file": str(tmp_path / "hook")}}
    text = cib.cib_xml(render_context(data))
    root = etree.fromstring(text.encode())
    values = [r.get("value") for r in root.iter("recipient")]
    assert values == [layout.EVENTS_PATH, layout.WEBHOOK_URL_PATH]
    check_cib(text)
    data["monitoring"] = {"events": False}
    assert "<alerts" not in cib.cib_xml(render_context(data))


def test_tmpfiles_give_the_alert_agent_its_own_directory() -> None:
    conf = _files(render_context(example_data("lab")))[monitoring.TMPFILES_PATH][0]
    rows = [line.split() for line in conf.splitlines() if not line.startswith("#")]
    assert ["d", layout.EVENTS_DIR, "0750", "hacluster", "haclient", "-"] in rows
    # Each directory the alert agent (hacluster) reads through is traversable.
    for path in (layout.INSTALL_DIR, layout.PACKAGE_DIR, layout.LOG_DIR):
        assert ["d", path, "0755", "root", "root", "-"] in rows
    assert os.path.dirname(layout.WEBHOOK_URL_PATH) == layout.ALERTS_CONF_DIR


@pytest.mark.realtool
def test_systemd_tmpfiles_makes_the_directories_with_their_owners(tmp_path: Path) -> None:
    """The rendered tmpfiles.d file, run by systemd-tmpfiles into a scratch root (with this
    host's users: pacemaker's package made hacluster): modes and owners as the agents need,
    a directory apply made first (root's 0700) opened up."""
    if shutil.which("systemd-tmpfiles") is None or os.geteuid() != 0:
        pytest.skip("needs systemd-tmpfiles and root (chown)")
    conf = _files(render_context(example_data("lab")))[monitoring.TMPFILES_PATH][0]
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", tmp_path / "etc" / name)
    if "\nhacluster:" not in "\n" + (tmp_path / "etc" / "passwd").read_text():
        pytest.skip("no hacluster user here (Debian package pacemaker; make deps)")
    (tmp_path / layout.INSTALL_DIR.lstrip("/")).mkdir(parents=True, mode=0o700)
    (tmp_path / "hakvm-agent.conf").write_text(conf)
    result = subprocess.run(
        ["systemd-tmpfiles", f"--root={tmp_path}", "--create", str(tmp_path / "hakvm-agent.conf")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")

    def owner_mode(path: str) -> tuple[str, str]:
        found = (tmp_path / path.lstrip("/")).stat()
        return pwd.getpwuid(found.st_uid).pw_name, oct(found.st_mode & 0o777)

    assert owner_mode(layout.EVENTS_DIR) == ("hacluster", "0o750")
    for path in (layout.INSTALL_DIR, layout.PACKAGE_DIR, layout.DRILLS_DIR,
                 layout.ALERTS_CONF_DIR):  # fmt: skip
        assert owner_mode(path) == ("root", "0o755")
