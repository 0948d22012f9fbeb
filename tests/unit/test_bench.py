"""bench/run.py: the symmetric recovery benchmark's bookkeeping, run against scripted drills
(the lab run itself is `python bench/run.py --only recovery`), and the operate benchmark's
reading of QEMU's events, against events recorded on the lab."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
from typing import Any

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scripted(
    monkeypatch: pytest.MonkeyPatch,
    bench: Any,
    hakvm: Any,
    specs: dict[str, pathlib.Path],
    partial: pathlib.Path,
) -> None:
    """The bench's lab calls replaced: `hakvm` answers the CLI, the other probes answer
    nothing useful (no start exec-time, no fencer record, a 3 s fence query)."""
    for name, value in (("hakvm", hakvm), ("recovery_specs", lambda _: specs),
                        ("place_home", lambda _: None), ("start_exec_s", lambda node, vm: None),
                        ("fence_query_s", lambda node, device: 3.0),
                        ("fencing_of", lambda survivor, victim: None),
                        ("PARTIAL", partial)):  # fmt: skip
        monkeypatch.setattr(bench, name, value)


def test_each_node_crashed_under_each_setting_alternated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    bench = _bench()
    asked: list[tuple[str, ...]] = []
    recovery = {"default": 70.0, "hakvm": 90.0, "qdevice": 30.0}

    def hakvm(*args: str, **_: Any) -> subprocess.CompletedProcess[str]:
        asked.append(args)
        out = ""
        if args[0] == "drill":
            setting = pathlib.Path(args[2]).stem.replace("lab", "hakvm")
            victim = args[args.index("--victim") + 1]
            moved = "vm-a" if victim == "node01" else "vm-b"
            extra = 20.0 if (setting, victim) == ("hakvm", "node01") else 0.0  # the delay
            out = json.dumps([{
                "passed": True, "recovery_s": recovery[setting] + extra,
                "journal": {"detected_s": 6.0, "fenced_s": 12.0 + extra,
                            "started_s": {moved: 25.0 + extra}, "uncertainty_s": 0.01},
            }])  # fmt: skip
        return subprocess.CompletedProcess(args, 0, out, "")

    specs = {name: tmp_path / f"{name if name != 'hakvm' else 'lab'}.yaml"
             for name in bench.SETTINGS}  # fmt: skip
    _scripted(monkeypatch, bench, hakvm, specs, tmp_path / "partial.json")
    monkeypatch.setattr(bench, "start_exec_s", lambda node, vm: 15.0)
    fenced: list[tuple[str, str]] = []

    def fencing_of(survivor: str, victim: str) -> dict[str, Any]:
        fenced.append((survivor, victim))
        return {"took_s": 20.0 + 10 * len(fenced), "delay_s": 0.0, "result": "OK (complete)"}

    monkeypatch.setattr(bench, "fencing_of", fencing_of)
    results = bench.bench_recovery(1)

    drills = [(pathlib.Path(a[2]).stem, a[a.index("--victim") + 1]) for a in asked
              if a[0] == "drill"]  # fmt: skip
    assert drills == [(s.stem, v) for s in specs.values() for v in ("node01", "node02")]
    applies = [pathlib.Path(a[1]).stem for a in asked if a[0] == "apply"]
    assert applies == ["default", "lab", "qdevice", "lab"]  # one per setting, then the spec's
    assert results["recovery_hakvm_node01_crashed_s"]["median"] == 110.0
    assert results["recovery_hakvm_s"]["median"] == 100.0  # over crashes of either node
    assert results["ratio_qdevice_to_default"] == 30.0 / 70.0
    assert results["components_qdevice"]["fenced_s"]["median"] == 12.0
    # The survivor's fencer asked about the victim; qdevice's were the 5th and 6th crashes.
    assert fenced == [("node02", "node01"), ("node01", "node02")] * 3
    assert results["components_qdevice"]["fence_operation_s"]["median"] == 75.0
    assert results["floors"]["token_plus_consensus_s"] == pytest.approx(6.6)
    assert results["ratio_qdevice_to_floors"] == pytest.approx(30.0 / (6.6 + 3.0 + 15.0))
    assert asked[-1][0] == "apply" and asked[-1][1] == str(specs["hakvm"])


def test_a_resumed_run_goes_on_with_the_next_crash_and_keeps_the_earlier_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    bench = _bench()
    drills: list[tuple[str, str]] = []

    def hakvm(*args: str, **_: Any) -> subprocess.CompletedProcess[str]:
        out = ""
        if args[0] == "drill":
            victim = args[args.index("--victim") + 1]
            drills.append((pathlib.Path(args[2]).stem, victim))
            out = json.dumps([{"passed": True, "recovery_s": 50.0, "journal": None}])
        return subprocess.CompletedProcess(args, 0, out, "")

    specs = {name: tmp_path / f"{name}.yaml" for name in bench.SETTINGS}
    _scripted(monkeypatch, bench, hakvm, specs, tmp_path / "partial.json")
    earlier = {"rep": 0, "settings": "default", "victim": "node01", "fence_query_s": 4.0,
               "start_exec_s": None, "passed": True, "recovery_s": 80.0,
               "journal": None}  # fmt: skip
    bench.PARTIAL.write_text(json.dumps({"reps": 1, "sessions": [{"started": "s1"}],
                                         "runs": [earlier]}))  # fmt: skip
    with pytest.raises(SystemExit, match="--reps 1, not 2"):
        bench.bench_recovery(2, resume=True)
    results = bench.bench_recovery(1, resume=True)

    assert drills[0] == ("default", "node02") and len(drills) == 5
    assert results["recovery_default_node01_crashed_s"]["median"] == 80.0
    assert results["floors"]["fence_device_query_s"]["max"] == 4.0
    assert len(results["sessions"]) == 2 and not bench.PARTIAL.exists()
    assert results["components_default"]["fence_operation_s"] is None  # none in any run


def test_the_table_goes_to_the_benchmark_page(tmp_path: pathlib.Path) -> None:
    """The README links docs/benchmarks.md, where the markers are; a page without them is an
    error, not a table silently left stale."""
    bench = _bench()
    assert bench.TABLE_DOC == REPO / "docs" / "benchmarks.md"
    page = tmp_path / "benchmarks.md"
    page.write_text(bench.TABLE_DOC.read_text())
    bench.update_table("| new | table |\n", page)
    text = page.read_text()
    assert f"{bench.TABLE_BEGIN}\n| new | table |\n{bench.TABLE_END}" in text
    assert text.startswith("# Benchmarks")
    page.write_text("# Benchmarks\n")
    with pytest.raises(SystemExit, match="markers"):
        bench.update_table("| x |\n", page)


def test_an_unfinished_run_is_summarized_with_what_it_has() -> None:
    bench = _bench()
    run = {"rep": 0, "settings": "default", "victim": "node01", "fence_query_s": 3.0,
           "start_exec_s": 30.0, "recovery_s": 80.0, "journal": None,
           "fencing": {"took_s": 20.0, "delay_s": 0.0, "result": "OK (complete)"}}  # fmt: skip
    figures = bench.summarize({"runs": [run]})
    assert figures["recovery_default_node01_crashed_s"]["median"] == 80.0
    assert figures["recovery_default_node02_crashed_s"] is None
    assert figures["components_default"]["fence_operation_s"]["median"] == 20.0
    assert "recovery_hakvm_s" not in figures and "ratio_qdevice_to_default" not in figures


def test_each_drill_is_a_cell_of_its_setting_and_crashed_node() -> None:
    bench = _bench()
    journal = {"detected_s": 6.2, "fenced_s": 65.0, "started_s": {"vm-a": 100.0}}
    runs = [
        {"rep": 0, "settings": "hakvm", "victim": "node01", "recovery_s": 110.0,
         "start_exec_s": 30.0, "journal": journal,
         "fencing": {"took_s": 53.0, "delay_s": 45.0, "result": "OK (complete)"}},
        {"rep": 1, "settings": "hakvm", "victim": "node01", "recovery_s": 120.0,
         "start_exec_s": None, "journal": None, "fencing": None},
    ]  # fmt: skip
    rows = bench.drill_table(runs).splitlines()
    assert len(rows) == 3  # the header, its rule, one row: no empty rows for the others
    cells = [c.strip() for c in rows[2].strip("|").split("|")]
    assert cells == ["hakvm", "node01", "110.0, 120.0", "6.2, -", "12.0, -", "53.0 (45), -",
                     "65.0, -", "100.0, -", "30.0, -"]  # fmt: skip


def test_fence_action_alternates_reboot_and_off_on_the_quorum_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """fence-action runs the same drills as recovery with the quorum device's two fencing
    actions, in a partial file of its own (a recovery run's is never touched), and gives
    off/reboot; its `off` spec differs from the device's only in the action."""
    bench = _bench()
    asked: list[tuple[str, ...]] = []
    recovery = {"qdevice": 100.0, "qdevice-off": 80.0}

    def hakvm(*args: str, **_: Any) -> subprocess.CompletedProcess[str]:
        asked.append(args)
        out = ""
        if args[0] == "drill":
            out = json.dumps([{"passed": True, "journal": None,
                               "recovery_s": recovery[pathlib.Path(args[2]).stem]}])  # fmt: skip
        return subprocess.CompletedProcess(args, 0, out, "")

    specs = {name: tmp_path / f"{name}.yaml" for name in (*bench.SETTINGS, *bench.ACTIONS)}
    _scripted(monkeypatch, bench, hakvm, specs, tmp_path / "recovery-partial.json")
    bench.PARTIAL.write_text("{}")
    results = bench.bench_recovery(2, False, bench.ACTIONS, tmp_path / "action-partial.json")

    drills = [(pathlib.Path(a[2]).stem, a[a.index("--victim") + 1]) for a in asked
              if a[0] == "drill"]  # fmt: skip
    assert drills == [(s, v) for s in bench.ACTIONS for v in ("node01", "node02")] * 2
    assert results["ratio_off_to_reboot"] == 0.8
    assert "ratio_qdevice_to_default" not in results
    assert bench.PARTIAL.read_text() == "{}"
    assert not (tmp_path / "action-partial.json").exists()


def test_the_off_spec_is_the_quorum_devices_with_fencing_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    bench = _bench()

    def lab_spec(template: pathlib.Path, _lab: Any, out: pathlib.Path, *_: Any,
                 **__: Any) -> pathlib.Path:  # fmt: skip
        out.write_text(template.read_text())  # the lab's ports aside: the template itself
        return out

    monkeypatch.setattr(bench.specfile, "lab_spec", lab_spec)
    monkeypatch.setattr(bench, "deployed_spec", lambda d: d / "lab.yaml")
    specs = bench.recovery_specs(tmp_path)
    device = yaml.safe_load(specs["qdevice"].read_text())
    off = yaml.safe_load(specs["qdevice-off"].read_text())
    assert device["cluster"]["fencing"].get("action", "reboot") == "reboot"
    device["cluster"]["fencing"]["action"] = "off"
    assert off == device


QEMU_EVENTS = pathlib.Path(__file__).parent / "data" / "qemu-events"


def test_switch_over_phases_from_each_nodes_own_qemu_events_as_recorded() -> None:
    """Ten live migrations of vm-a (bench/run.py --only operate, 2026-12-04 16:00-16:11),
    what each node's `virsh qemu-monitor-event --loop` printed: QEMU's own times. Where the
    node was the source, STOP to its MIGRATION "completed" (node01's first: 1796399571.824261
    to 1796399572.133017, 309 ms); where it was the target, its "completed" to its RESUME
    (1796399649.776812 to 1796399650.004700, 228 ms). Worked out apart with awk."""
    bench = _bench()
    node01 = (QEMU_EVENTS / "node01-2026-12-04.log").read_text()
    node02 = (QEMU_EVENTS / "node02-2026-12-04.log").read_text()
    sent, resumed = bench.switch_over_phases(node01, "vm-a")
    assert (sent, resumed) == ([309, 562, 538, 337, 352], [228, 892, 272, 373, 209])
    sent, resumed = bench.switch_over_phases(node02, "vm-a")
    assert (sent, resumed) == ([249, 339, 316, 325, 266], [548, 498, 423, 264, 249])
    assert bench.switch_over_phases(node01, "vm-b") == ([], [])


def test_a_failed_migration_a_paused_guest_and_another_domain_count_in_neither() -> None:
    bench = _bench()
    line = "event {} at 1764842400.{} for domain '{}': {}"
    events = "\n".join([
        line.format("STOP", "000000", "vm-a", "<null>"),
        line.format("MIGRATION", "100000", "vm-b", '{"status":"completed"}'),
        line.format("MIGRATION", "500000", "vm-a", '{"status":"failed"}'),
        line.format("RESUME", "600000", "vm-a", "<null>"),  # libvirt resumed the source
        line.format("STOP", "650000", "vm-a", "<null>"),  # paused, not for a migration
        line.format("MIGRATION", "700000", "vm-a", '{"status":"setup"}'),  # then migrated
        line.format("MIGRATION", "800000", "vm-a", '{"status":"completed"}'),
        line.format("MIGRATION", "900000", "vm-a", '{"status":"completed"}'),  # back, incoming
        line.format("RESUME", "950000", "vm-a", "<null>"),
    ])  # fmt: skip
    assert bench.switch_over_phases(events, "vm-a") == ([], [50])
    assert bench.switch_over_phases(events, "vm-b") == ([], [])
