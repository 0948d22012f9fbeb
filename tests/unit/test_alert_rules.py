"""prometheus/alerts.yml: valid for Prometheus (`promtool check rules`), and right on the
scenarios of prometheus/tests (`promtool test rules`: a healthy cluster fires nothing, a cut
link, a crash and each failure fire their rule once); every rule is tested both ways and
reads only series that exist (the collector's, or node_exporter's textfile mtime)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hakvm.agent import hacluster

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "prometheus" / "alerts.yml"
TESTS = sorted((REPO / "prometheus" / "tests").glob("*.yml"))
AGENT = REPO / "src" / "hakvm" / "agent"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian package prometheus; make deps)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, check=False,
                          timeout=120, cwd=REPO)  # fmt: skip


def rules() -> list[dict[str, str]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", *map(str, TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TESTS)


def test_every_rule_is_tested_firing_and_not_firing() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - fires == set(), "rules no test makes fire"
    healthy = yaml.safe_load((REPO / "prometheus" / "tests" / "healthy.yml").read_text())
    silent = {c["alertname"] for g in healthy["tests"] for c in g["alert_rule_test"]
              if not c["exp_alerts"]}  # fmt: skip
    assert names - silent == set(), "rules not checked silent on a healthy cluster"


def test_rules_read_only_series_that_exist() -> None:
    produced = {name for path in AGENT.glob("*.py")
                for name in re.findall(r'Family\(\s*"(\w+)"', path.read_text())}  # fmt: skip
    produced |= {family.name for family in hacluster.drbd([])}
    produced |= {"node_textfile_mtime_seconds"}  # node_exporter's, for the textfile's age
    used = {name for rule in rules()
            for name in re.findall(r"\b((?:ha_cluster|hakvm|node)_\w+)", rule["expr"])}  # fmt: skip
    assert used - produced == set()
