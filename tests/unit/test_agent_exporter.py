"""The collector's `ha_cluster_*` series against ha_cluster_exporter 1.4.2's own tests: for the
tool outputs its test suite replays (tests/unit/data/exporter-1.4.2), hakvm exports exactly the
samples the exporter's expected `*.metrics` hold (names, labels, values) with the exporter's
HELP texts; the types differ only where docs/metrics.md says so."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakvm.agent import exposition, hacluster, parsers
from tests.unit.agent_samples import DATA, helps, samples, types

EXPORTER = DATA / "exporter-1.4.2"
# The only type changes (promtool check metrics rejects the exporter's own).
RETYPED = {"ha_cluster_pacemaker_config_last_change": ("counter", "gauge"),
           "ha_cluster_pacemaker_fail_count": ("gauge", "untyped")}  # fmt: skip


@pytest.fixture
def utc() -> Iterator[None]:
    """The exporter reads crm_mon's local-time last_change as UTC: on a UTC node, the same."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def _compare(ours: str, expected_file: str) -> None:
    expected = (EXPORTER / expected_file).read_text()
    assert samples(ours) == samples(expected)
    assert helps(ours) == helps(expected)
    for name, kind in types(expected).items():
        assert types(ours)[name] == RETYPED.get(name, (kind, kind))[1], name


def test_pacemaker_series_are_the_exporters(utc: None) -> None:
    mon = parsers.parse_crm_mon((EXPORTER / "crm_mon.out").read_text())
    constraints = parsers.parse_constraints((EXPORTER / "cibadmin.out").read_text())
    text = exposition.render([*hacluster.pacemaker(mon), hacluster.locations(constraints)])
    _compare(text, "pacemaker.metrics")


def test_corosync_series_are_the_exporters() -> None:
    quorum = parsers.parse_quorumtool((EXPORTER / "corosync-quorumtool.out").read_text())
    local, links = parsers.parse_cfgtool((EXPORTER / "corosync-cfgtool.out").read_text())
    text = exposition.render([*hacluster.quorum(quorum), *hacluster.rings(links, quorum, local)])
    _compare(text, "corosync.metrics")


def test_drbd9_series_are_the_exporters(tmp_path: Path) -> None:
    for name in ("drbd-split-brain-detected-missingthingsWrongSkippedMetrics",
                 "drbd-split-brain-detected-resource01-vol01",
                 "drbd-split-brain-detected-resource02-vol02"):  # fmt: skip
        (tmp_path / name).touch()
    volumes = parsers.parse_drbdsetup_json((EXPORTER / "drbdsetup.out").read_text())
    _compare(exposition.render(hacluster.drbd(volumes)), "drbd.metrics")
    # The exporter's drbd_test.go: the split-brain hook's files, the malformed name skipped.
    split = hacluster.split_brain_files(str(tmp_path))
    assert split == [("resource01", "vol01"), ("resource02", "vol02")]
    text = exposition.render(hacluster.drbd([], split))
    assert 'ha_cluster_drbd_split_brain{resource="resource01",volume="vol01"} 1' in text
