"""The agent's parsers on Pacemaker 2.1.5, corosync 3.1.7 and DRBD 8.4 output (recorded, or
produced by Debian 12's own tools: tests/unit/data/agent/README.md), and the text format."""

from __future__ import annotations

import math
import os
import time

import pytest

from hakvm.agent import exposition, parsers
from tests.unit.agent_samples import DATA
from tests.unit.recorded import answers

AGENT = DATA / "agent"


def test_legacy_and_current_crm_mon_xml_read_the_same() -> None:
    """`crm_mon -X --inactive` (root <crm_mon>, what the exporter reads) and
    `--output-as=xml` (root <pacemaker-result>, what hakvm status reads) differ only in the
    root and the trailing <status> (Pacemaker 2.1.5 lib/common/output_xml.c)."""
    legacy = parsers.parse_crm_mon((AGENT / "crm_mon-healthy.xml").read_text())
    current = parsers.parse_crm_mon(answers("healthy")["node01"].text("crm_mon"))
    for field in ("dc", "quorate", "stonith_enabled", "nodes", "attributes", "resources",
                  "placement", "history", "failures", "last_change"):  # fmt: skip
        assert getattr(legacy, field) == getattr(current, field), field
    assert legacy.dc == "node02" and legacy.quorate and legacy.stonith_enabled
    assert legacy.placement["vm-a"].active_on == ["node01"]
    assert legacy.placement["vm-a_drbd_clone"].active_on == ["node02", "node01"]


def test_crm_mon_refuses_what_is_not_its_xml() -> None:
    for text in ("", "<crm_mon", "<cib/>", '<!DOCTYPE x [<!ENTITY a "b">]><crm_mon/>'):
        with pytest.raises(ValueError, match="crm_mon"):
            parsers.parse_crm_mon(text)


def test_a_fenced_peer_and_an_unclean_one() -> None:
    fenced = parsers.parse_crm_mon((AGENT / "crm_mon-node02-fenced.xml").read_text())
    node02 = fenced.node("node02")
    assert node02 is not None and not node02.flags["online"] and not node02.flags["unclean"]
    assert fenced.placement["vm-b"].active_on == ["node01"]
    # Stopped clone instances are one series, as the exporter dedupes them.
    stopped = [r for r in fenced.resources if r.clone == "vm-b_drbd_clone" and not r.node]
    assert len(stopped) == 1 and stopped[0].role == "Stopped"
    unclean = parsers.parse_crm_mon((AGENT / "crm_mon-node02-unclean.xml").read_text())
    node02 = unclean.node("node02")
    assert node02 is not None and node02.flags["unclean"] and not node02.flags["online"]


def test_location_constraints_from_cibadmin_scope_constraints() -> None:
    found = parsers.parse_constraints((AGENT / "cibadmin-constraints.xml").read_text())
    assert [(c.id, c.score) for c in found] == [
        ("node01_fence_avoids_node01", -math.inf), ("node02_fence_avoids_node02", -math.inf),
        ("vm-a_prefers_node01", 100.0), ("vm-b_prefers_node02", 100.0),
    ]  # fmt: skip
    rule = '<constraints><rsc_location id="r" rsc="vm-a"><rule score="-INFINITY"/>' \
           '</rsc_location><rsc_location id="p" rsc="x" node="n" score="+INFINITY"/>' \
           "</constraints>"  # fmt: skip
    assert [(c.node, c.score) for c in parsers.parse_constraints(rule)] == [("", 0), ("n", 0)]


def test_quorumtool_quorate_inquorate_and_qdevice() -> None:
    both = parsers.parse_quorumtool((AGENT / "quorumtool-both.txt").read_text())
    assert (both.node_id, both.ring_id, both.quorate) == ("1", "1.2a", True)
    assert both.votes == {"expected_votes": 2, "highest_expected": 2, "total_votes": 2,
                          "quorum": 1}  # fmt: skip
    assert [(m.node_id, m.name, m.votes, m.local) for m in both.members] == [
        ("1", "node01", 1, True), ("2", "node02", 1, False)]  # fmt: skip
    blocked = (AGENT / "quorumtool-node02-lost.txt").read_text().replace(
        "Quorate:          Yes", "Quorate:          No").replace(
        "Quorum:           1  ", "Quorum:           2 Activity blocked")  # fmt: skip
    lost = parsers.parse_quorumtool(blocked)
    assert not lost.quorate and lost.votes["quorum"] == 2 and len(lost.members) == 1
    with pytest.raises(ValueError, match="quorumtool"):
        parsers.parse_quorumtool("Cannot initialize QUORUM service\n")


def test_cfgtool_knet_links_per_peer() -> None:
    local, links = parsers.parse_cfgtool(answers("hb-cut")["node02"].text("cfgtool"))
    assert local == 2
    assert [(lk.number, lk.address, lk.peers) for lk in links] == [
        (0, "10.88.1.2", {1: False}), (1, "10.88.0.2", {1: True})]  # fmt: skip


def test_proc_drbd_84_states_and_unconfigured_minors() -> None:
    text = answers("healthy")["node01"].text("proc_drbd") + (
        " 2: cs:Unconfigured\n"
        " 3: cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown   r-----\n"
        "    ns:0 nr:0 dw:4096 dr:265 al:8 bm:1 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:4096\n")
    found = parsers.parse_proc_drbd(text, {0: "vm-a", 1: "vm-b", 3: "vm-c"}, {3: 1 << 30})
    assert [d.resource for d in found] == ["vm-a", "vm-b", "vm-c"]
    vm_c = found[2]
    assert (vm_c.connection, vm_c.peer_role, vm_c.peer_disk) == ("StandAlone", "Unknown",
                                                                 "DUnknown")  # fmt: skip
    assert vm_c.out_of_sync_bytes == 4096 * 1024
    assert vm_c.percent_in_sync == pytest.approx(100 * (1 - 4096 * 1024 / (1 << 30)))
    assert vm_c.counters["written"] == 4096 and vm_c.counters["bm-writes"] == 1
    assert parsers.proc_drbd_version(text) == "8.4.11"


def test_times_pacemaker_prints() -> None:
    assert parsers.parse_fence_time("2026-11-26 06:02:11Z") == 1795672931
    assert parsers.parse_fence_time("2026-11-26 07:02:11 +01:00") == 1795672931
    assert parsers.parse_fence_time("2026-11-26 03:02:11 -03:00") == 1795672931
    assert parsers.parse_fence_time("") is None
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Paris"
    time.tzset()
    try:  # Pacemaker writes the CIB's last change in the node's own time zone
        assert parsers.parse_last_change("Thu Nov 26 07:02:11 2026") == 1795672931
        assert parsers.parse_last_change("Thu Nov  5 07:02:11 2026") == 1795672931 - 21 * 86400
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
    with pytest.raises(ValueError, match="last_change"):
        parsers.parse_last_change("yesterday")


def test_exposition_escapes_and_spells_special_values() -> None:
    family = exposition.Family("hakvm_x", 'a "help"\\ with\nnewline')
    family.add(math.inf, {"a": 'quo"te\\back\nline'})
    family.add(-math.inf, {"a": "b"})
    family.add(math.nan, {"a": "c"})
    family.add(0.25, {"a": "d"})
    family.add(7, {"a": "d"})  # the same labels twice: the first stays
    text = exposition.render([family, exposition.Family("hakvm_empty", "no samples")])
    assert text == (
        '# HELP hakvm_x a "help"\\\\ with\\nnewline\n'
        "# TYPE hakvm_x gauge\n"
        'hakvm_x{a="quo\\"te\\\\back\\nline"} +Inf\n'
        'hakvm_x{a="b"} -Inf\n'
        'hakvm_x{a="c"} NaN\n'
        'hakvm_x{a="d"} 0.25\n'
    )
    with pytest.raises(ValueError, match="bad metric name"):
        exposition.Family("9x", "")
    with pytest.raises(ValueError, match="bad label name"):
        exposition.Family("x", "").add(1, {"a-b": ""})
    with pytest.raises(ValueError, match="rendered twice"):
        exposition.render([family, family])
