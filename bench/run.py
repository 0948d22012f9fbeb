"""hakvm benchmarks: ratios measured side by side in one run, on the QEMU lab.

Usage: ``python bench/run.py [--only NAME[,NAME]] [--reps N] [--resume | --summarize]``; writes
``bench/results.json`` and ``bench/results.md`` (the table the README shows) and prints the
table.

Benchmarks:
  deploy   fresh lab -> first apply (1 GiB VM disks), no-op re-apply; then a second fresh
           lab -> first apply with 8 GiB VM disks. Ratios: no-op/first and 8 GiB/1 GiB
           (about 1.0 means no waiting for an initial DRBD sync).
  operate  on a deployed lab (the one deploy leaves, else a fresh one): `hakvm status`
           versus a bare `crm_mon --output-as=xml` over SSH, alternated, N each (at least 30),
           medians and their ratio; live migration of vm-a back and forth N times, libvirt's
           downtime and downtime_net, and what they add up from by each node's own clock
           (QEMU's events: the source's pause to its stream's end, the target's end of
           stream to its resume), medians and spread.
  recovery on a deployed lab: `hakvm drill --scenario node-crash --victim NODE` N times per
           node and setting, alternated (in each repetition, each setting applied in turn:
           the defaults the original recipe leaves with fencing added without a delay,
           hakvm's lab settings with their static fence delay, hakvm with the lab's quorum
           device; under each, node01 crashed, then node02), each from the same placement
           (vm-a on node01, vm-b on node02); recovery medians and spread over crashes of
           either node and per node, each recovery's components from the
           survivor's own events (lost, fenced, started; responsive from the drill; the
           fencer's operation, its delay inside, from its pacemaker.log) beside
           their floors (token + consensus, a fence device query, the VM start's own
           exec-time), and the ratios qdevice/default, hakvm/default, qdevice/floors.
  fence-action  the same drills, alternated the same way, on the quorum device's lab under
           its two fencing actions: `reboot` (the default) and `off`; ratio off/reboot.

Each run replaces only the benchmarks it ran in bench/results.json (each keeps its date).
recovery writes bench/recovery-partial.json after each drill (fence-action its own
bench/fence-action-partial.json); `--resume` goes on from it
(same --reps) on a lab deployed again, and its figures name every session they ran in;
`--summarize` prints that file's figures so far and each drill's components (a row per setting
and crashed node, as bench/results.md gives them for a finished run), and runs nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Container
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from hakvm.lab import specfile, ssh  # noqa: E402
from hakvm.lab.state import Lab  # noqa: E402
from hakvm.remote import fencelog  # noqa: E402

# Its own lab and cluster secrets by default; HAKVM_BENCH_LAB_DIR / HAKVM_BENCH_STATE_DIR point
# the operate benchmark at a lab already deployed (say `make demo`'s: .hakvm/lab and
# ~/.local/state/hakvm), which saves a deploy. deploy and recovery always rebuild their lab.
LAB_DIR = pathlib.Path(os.environ.get("HAKVM_BENCH_LAB_DIR") or REPO / ".hakvm" / "bench-lab")
STATE_DIR = pathlib.Path(
    os.environ.get("HAKVM_BENCH_STATE_DIR") or REPO / ".hakvm" / "bench-state"
)
LAB_GIVEN = bool(os.environ.get("HAKVM_BENCH_LAB_DIR") or os.environ.get("HAKVM_BENCH_STATE_DIR"))


def hakvm(
    *args: str, timeout: float = 3600, answers: Container[int] = (0,)
) -> subprocess.CompletedProcess[str]:
    """Run hakvm with the bench's state dir; an exit code outside `answers` ends the bench
    (status answers 1 for degraded, drill 1 for a failed invariant: answers, not failures)."""
    env = dict(os.environ, HAKVM_STATE_DIR=str(STATE_DIR))
    result = subprocess.run(
        [sys.executable, "-m", "hakvm.cli", *args],
        capture_output=True, text=True, timeout=timeout, check=False, env=env,
    )  # fmt: skip
    if result.returncode not in answers:
        raise SystemExit(f"bench: hakvm {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def fresh_lab() -> None:
    if LAB_GIVEN:
        # Rebuilding wipes the state dir: never someone else's lab or cluster secrets.
        raise SystemExit("bench: this benchmark rebuilds its lab; unset HAKVM_BENCH_*_DIR")
    subprocess.run(
        [sys.executable, "-m", "hakvm.cli", "lab", "--lab-dir", str(LAB_DIR), "down"],
        capture_output=True, check=False,
    )  # fmt: skip
    if STATE_DIR.exists():
        subprocess.run(["rm", "-rf", str(STATE_DIR)], check=True)
    hakvm("lab", "--lab-dir", str(LAB_DIR), "up")


# Two 8 GiB disks plus DRBD metadata need just over 16 GiB: the example spec's 16 GiB pool is
# too small for them. The lab's storage disk is 20 GiB (thin qcow2), so an 18 GiB pool fits;
# both deploy runs get it, so they differ only in disk size.
BENCH_POOL_SIZE = "18GiB"


def bench_deploy(_reps: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in ("1GiB", "8GiB"):
            fresh_lab()
            spec = specfile.lab_spec(
                REPO / "examples" / "lab.yaml", LAB_DIR, pathlib.Path(tmp) / f"lab-{size}.yaml",
                {"disk": {"size": size}}, pool_size=BENCH_POOL_SIZE,
            )  # fmt: skip
            results[f"first_apply_{size}_s"] = timed(lambda s=spec: hakvm("apply", str(s)))
            if size == "1GiB":
                results["noop_apply_s"] = timed(lambda s=spec: hakvm("apply", str(s)))
    results["ratio_noop_to_first"] = results["noop_apply_s"] / results["first_apply_1GiB_s"]
    results["ratio_8GiB_to_1GiB"] = results["first_apply_8GiB_s"] / results["first_apply_1GiB_s"]
    return results


def deployed_spec(directory: pathlib.Path) -> pathlib.Path:
    """The bench lab, deployed: reuse it if it is up and converged, else build it."""
    spec = directory / "lab.yaml"
    if (LAB_DIR / "lab.json").exists():
        specfile.lab_spec(REPO / "examples" / "lab.yaml", LAB_DIR, spec)
        if hakvm("status", str(spec), answers=range(256)).returncode == 0:
            return spec
    fresh_lab()
    specfile.lab_spec(REPO / "examples" / "lab.yaml", LAB_DIR, spec)
    hakvm("apply", str(spec))
    return spec


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


STATUS_PAIRS = 30


def bench_operate(reps: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        spec = deployed_spec(pathlib.Path(tmp))
        lab = Lab(LAB_DIR)
        port = lab.load().ssh_port_of("node01")
        # Plain OpenSSH, a new connection each time: what an admin's monitoring would run.
        remote = ssh.remote_command(["crm_mon", "--output-as=xml", "-1"])
        bare = ssh.ssh_argv(port, lab.ssh_key, lab.known_hosts, remote)
        status_s: list[float] = []
        crm_mon_s: list[float] = []
        # At least 30 pairs (about 7 s each): the ratio of two medians of 10 gave 1.28 and
        # 1.76 on two fresh labs, for status batches that differed by one `find` (2026-12-04).
        for _ in range(max(reps, STATUS_PAIRS)):  # alternated, so both see the same load
            crm_mon_s.append(timed(lambda: subprocess.run(bare, capture_output=True, check=True)))
            status_s.append(timed(lambda: hakvm("status", str(spec), answers=range(256))))
        results["status_s"] = spread(status_s)
        results["bare_crm_mon_ssh_s"] = spread(crm_mon_s)
        results["ratio_status_to_crm_mon"] = statistics.median(status_s) / statistics.median(
            crm_mon_s
        )
        downtimes: list[float] = []
        nets: list[float] = []
        listeners = {n: qemu_events(lab, n) for n in ("node01", "node02")}
        try:
            for _ in range(reps):
                move = json.loads(hakvm("migrate", "--json", str(spec), "vm-a").stdout)
                if move.get("downtime_ms") is None:
                    raise SystemExit(f"bench: migration reported no downtime: {move}")
                downtimes.append(float(move["downtime_ms"]))
                if move.get("downtime_net_ms") is not None:
                    nets.append(float(move["downtime_net_ms"]))
        finally:
            events = {n: stopped(listener) for n, listener in listeners.items()}
            if keep := os.environ.get("HAKVM_BENCH_KEEP_EVENTS"):  # raw lines, for tests
                for n, text in events.items():
                    (pathlib.Path(keep) / f"{n}.log").write_text(text)
        results["live_migration_downtime_ms"] = spread(downtimes)
        # libvirt's downtime_net: without the two hosts' clock difference (issue 19).
        results["live_migration_downtime_net_ms"] = spread(nets) if nets else None
        sent: list[float] = []
        resumed: list[float] = []
        for text in events.values():
            node_sent, node_resumed = switch_over_phases(text, "vm-a")
            sent += node_sent
            resumed += node_resumed
        results["live_migration_source_paused_to_sent_ms"] = spread(sent) if sent else None
        results["live_migration_target_received_to_resumed_ms"] = (
            spread(resumed) if resumed else None
        )
    return results


# What downtime_net adds up from, each part by one node's clock, from QEMU's own events on
# both nodes while the migrations run: on the source, the guest's pause (STOP) to the end of
# its stream (MIGRATION "completed": the last memory pass, the devices' state, the disks'
# flush); on the target, the end of the incoming stream to the guest's RESUME (libvirt's
# Finish, driven by the source's virsh over SSH). Each event carries QEMU's own time
# (`at SECONDS.MICROS`; with --timestamp virsh would print when it received the event,
# after libvirtd's relay). Read-only: monitor events, no command. The listener ends when its
# SSH session does (its shell reads stdin: EOF when the session closes).
QEMU_EVENTS = ["virsh", "-c", "qemu:///system", "qemu-monitor-event", "--loop"]
LISTEN = f"{shlex.join(QEMU_EVENTS)} & echo listening; read -r _; kill $!"
_QEMU_EVENT_RE = re.compile(
    r"^event (?P<kind>\w+) at (?P<at>\d+\.\d{6}) for domain '(?P<domain>[^']+)': (?P<data>.*)$"
)


def qemu_events(lab: Lab, node: str) -> subprocess.Popen[str]:
    """A listener for every domain's QEMU events on `node`, started (virsh runs) when this
    returns; `stopped` ends it."""
    remote = ssh.remote_command(["sh", "-c", LISTEN])
    argv = ssh.ssh_argv(lab.load().ssh_port_of(node), lab.ssh_key, lab.known_hosts, remote)
    listener = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert listener.stdout is not None
    if listener.stdout.readline().strip() != "listening":
        stopped(listener)
        raise SystemExit(f"bench: no QEMU event listener on {node}")
    return listener


def stopped(listener: subprocess.Popen[str]) -> str:
    """What a listener printed, once it is ended: its stdin closed ends the remote virsh,
    then the session; killed if that takes over 30 s."""
    try:
        out, _ = listener.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        listener.kill()
        out, _ = listener.communicate()
    return out


def switch_over_phases(text: str, domain: str) -> tuple[list[float], list[float]]:
    """(paused to sent, received to resumed), ms, from one node's `qemu-monitor-event`
    lines for `domain`: each STOP to its stream's MIGRATION "completed" (the node was the
    source), and each "completed" with no STOP before it to the RESUME after (the target).
    A failed or cancelled migration counts in neither, nor one of a guest paused before it
    began."""
    sent: list[float] = []
    resumed: list[float] = []
    stop: float | None = None
    received: float | None = None
    for line in text.splitlines():
        m = _QEMU_EVENT_RE.match(line.strip())
        if m is None or m["domain"] != domain:
            continue
        at = float(m["at"])
        status = json.loads(m["data"]).get("status") if m["kind"] == "MIGRATION" else None
        if m["kind"] == "STOP":
            stop, received = at, None
        elif status == "completed" and stop is not None:
            sent.append(round((at - stop) * 1000))
            stop = None
        elif status == "completed":
            received = at
        elif status in ("failed", "cancelled", "setup"):
            stop = received = None
        elif m["kind"] == "RESUME":
            if received is not None:
                resumed.append(round((at - received) * 1000))
            stop = received = None
    return sent, resumed


PARTIAL = REPO / "bench" / "recovery-partial.json"  # the runs so far, while recovery runs
ACTION_PARTIAL = REPO / "bench" / "fence-action-partial.json"  # the same for fence-action

# What the original recipe leaves, in spec terms: the agents' default monitor intervals
# (pcs copies them: VirtualDomain 10 s; LINBIT's 29/31 s for DRBD), Pacemaker's default
# load-threshold (80%) and node-action-limit (twice the cores), fence_ipmilan's default 60 s
# monitor, no fence delay (the recipe had no fencing at all). corosync's default token is
# 3000 ms, as in the lab spec. Timeouts (stonith-timeout included) stay as the TCG lab needs
# them: a timeout changes nothing until it is exceeded.
DEFAULT_TIMING: dict[str, Any] = {
    "monitor_interval_s": 10,
    "drbd_monitor_interval_s": 30,
    "load_threshold_pct": None,
    "node_action_limit": None,
    "fence_monitor_interval_s": 60,
    "fence_delay_s": 0,
}


def place_home(spec: pathlib.Path) -> None:
    """vm-a on node01, vm-b on node02: each node runs one VM, so a crash of either moves one
    (the same work whichever node dies)."""
    state = json.loads(hakvm("status", "--json", str(spec), answers=(0, 1)).stdout)
    where = {vm["name"]: vm["running_on"] for vm in state["vms"]}
    for vm, node in (("vm-a", "node01"), ("vm-b", "node02")):
        if where.get(vm) != [node]:
            hakvm("migrate", str(spec), vm, "--to", node)


def on_node(node: str, script: str) -> str:
    """A shell script on a bench lab node, its stdout."""
    lab = Lab(LAB_DIR)
    port = lab.load().ssh_port_of(node)
    remote = ssh.remote_command(["sh", "-c", script])
    argv = ssh.ssh_argv(port, lab.ssh_key, lab.known_hosts, remote)
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600).stdout


def start_exec_s(node: str, vm: str) -> float | None:
    """The VM's last start on `node` as Pacemaker recorded it: its own execution time
    (lrm_rsc_op exec-time), the VirtualDomain start alone."""
    xpath = (
        f"//node_state[@uname='{node}']//lrm_resource[@id='{vm}']"
        "/lrm_rsc_op[@operation='start']"
    )
    out = on_node(node, f"cibadmin --query --scope status --xpath \"{xpath}\" 2>/dev/null || true")
    found = re.findall(r'exec-time="(\d+)"', out)
    return int(found[-1]) / 1000 if found else None


def fencing_of(survivor: str, victim: str) -> dict[str, Any] | None:
    """The survivor fencer's own record of the victim's last fencing (pacemaker.log, its
    clock): the whole operation from the request to the result, and the delay inside it."""
    op = fencelog.last_fencing_of(on_node(survivor, shlex.join(fencelog.GREP) + " || true"), victim)
    if op is None:
        return None
    return {"took_s": op.took_s, "delay_s": op.delay_s, "result": op.result}


def fence_query_s(node: str, device: str) -> float:
    """One status of a fence device through the fencer (fence_ipmilan started, one ipmitool
    round trip), timed on the node's own clock: the fencing floor's unit."""
    out = on_node(node, f"a=$(date +%s.%N); stonith_admin --query {device} >/dev/null; "
                        "b=$(date +%s.%N); echo $a $b")  # fmt: skip
    began, ended = (float(x) for x in out.split())
    return ended - began


SETTINGS = ("default", "hakvm", "qdevice")
# fence-action: the quorum device's lab with fencing's two actions (`reboot`, the default, and
# `off`, which ends the fencing once a crashed node's power is off: docs/operating.md).
ACTIONS = ("qdevice", "qdevice-off")
VICTIMS = ("node01", "node02")


def _with_fencing(spec: pathlib.Path, out: pathlib.Path, edit: Callable[[dict[str, Any]], object]
                  ) -> pathlib.Path:  # fmt: skip
    """`spec` written to `out` with its `cluster.fencing` section edited by `edit`."""
    data = yaml.safe_load(spec.read_text())
    edit(data["cluster"]["fencing"])
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def recovery_specs(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """The recipe's defaults (with fencing, no delay), hakvm's lab spec (static fence delay
    on node01), hakvm with the lab's quorum device (no delay), and that with fencing's `off`
    action: apply switches between them (a CIB patch; to and from the device, one corosync
    reload: docs/qdevice.md)."""
    examples = REPO / "examples"
    hakvm_spec = deployed_spec(directory)  # first: the others read the lab it deploys
    default = specfile.lab_spec(examples / "lab.yaml", LAB_DIR, directory / "default.yaml",
                                timing=DEFAULT_TIMING)  # fmt: skip
    # fence_ipmilan's own power_wait default, 2 s
    _with_fencing(default, default, lambda fencing: fencing.pop("power_wait_s", None))
    qdevice = specfile.lab_spec(examples / "lab-qdevice.yaml", LAB_DIR, directory / "qdevice.yaml")
    qdevice_off = _with_fencing(qdevice, directory / "qdevice-off.yaml",
                                lambda fencing: fencing.update(action="off"))  # fmt: skip
    return {"default": default, "hakvm": hakvm_spec, "qdevice": qdevice,
            "qdevice-off": qdevice_off}  # fmt: skip


def _components(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of each recovery component (the survivor's own events: drill --json journal)."""
    out: dict[str, Any] = {}
    for key in ("detected_s", "fenced_s"):
        values = [r["journal"][key] for r in runs if r.get("journal") and r["journal"][key]]
        out[key] = spread(values) if values else None
    # The fencer's operation (its log; runs before 2026-12-03's third repetition lack it).
    fencing = [r["fencing"]["took_s"] for r in runs if (r.get("fencing") or {}).get("took_s")]
    out["fence_operation_s"] = spread(fencing) if fencing else None
    started = [t for r in runs if r.get("journal") for t in r["journal"]["started_s"].values()]
    out["started_s"] = spread(started) if started else None
    out["responsive_s"] = spread([r["recovery_s"] for r in runs])
    return out


def _session() -> dict[str, str]:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return {"started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": commit}  # fmt: skip


def _recovery_so_far(reps: int, resume: bool, partial: pathlib.Path) -> dict[str, Any]:
    """The runs an interrupted recovery benchmark of the same --reps left (`resume`), else
    none. Thirty drills outlast a working session: a resumed run goes on with the next crash
    of the same alternation, on a lab deployed again, and names each session it ran in."""
    if not resume or not partial.exists():
        return {"reps": reps, "sessions": [_session()], "runs": []}
    results: dict[str, Any] = json.loads(partial.read_text())
    if results.get("reps") != reps:
        raise SystemExit(f"bench: {partial} is a run of --reps {results.get('reps')}, "
                         f"not {reps}: resume it with that, or remove the file")  # fmt: skip
    results["sessions"].append(_session())
    return results


def bench_recovery(
    reps: int,
    resume: bool = False,
    settings: tuple[str, ...] = SETTINGS,
    partial: pathlib.Path | None = None,
) -> dict[str, Any]:
    """Node-crash recovery with each node crashed in turn, for each setting, alternated (all
    see the same machine), from the same placement; each recovery's components beside the
    floors they add up from. `partial`: where the runs so far are kept (PARTIAL)."""
    partial = partial or PARTIAL
    results = _recovery_so_far(reps, resume, partial)
    done = {(r["rep"], r["settings"], r["victim"]) for r in results["runs"]}
    with tempfile.TemporaryDirectory() as tmp:
        specs = recovery_specs(pathlib.Path(tmp))
        for rep in range(reps):
            for name in settings:
                todo = [v for v in VICTIMS if (rep, name, v) not in done]
                if not todo:
                    continue
                spec = specs[name]
                hakvm("apply", str(spec))  # once per setting: both crashes run on it
                for victim in todo:
                    place_home(spec)
                    survivor = "node02" if victim == "node01" else "node01"
                    query_s = fence_query_s(survivor, f"{victim}_fence")
                    drill = json.loads(hakvm(
                        "drill", "--json", str(spec), "--scenario", "node-crash",
                        "--victim", victim, "--lab-dir", str(LAB_DIR), "--bound", "900",
                        answers=(0, 1),
                    ).stdout)[0]  # fmt: skip
                    if not drill["passed"] or drill["recovery_s"] is None:
                        raise SystemExit(f"bench: {name} node-crash of {victim} failed: {drill}")
                    moved = "vm-a" if victim == "node01" else "vm-b"
                    results["runs"].append({
                        "rep": rep, "settings": name, "victim": victim, "fence_query_s": query_s,
                        "start_exec_s": start_exec_s(survivor, moved),
                        "fencing": fencing_of(survivor, victim), **drill,
                    })  # fmt: skip
                    # Thirty drills take hours: a later failure must not lose these.
                    partial.write_text(json.dumps(results, indent=2) + "\n")
                    print(f"bench: recovery rep {rep + 1}/{reps} {name}, {victim} crashed: "
                          f"{drill['recovery_s']:.1f} s", file=sys.stderr, flush=True)  # fmt: skip
        hakvm("apply", str(specs["hakvm"]))  # leave the lab as the spec says
    partial.unlink(missing_ok=True)
    return summarize(results, settings)


def drill_benches() -> dict[str, tuple[tuple[str, ...], pathlib.Path]]:
    """The benchmarks made of drills (`bench_recovery` runs each): their settings and where
    an unfinished run is kept. fence-action is the quorum device's lab under `reboot` and
    under `off`: what `off` saves after a crash (the agent's power-on and status polls)."""
    return {"recovery": (SETTINGS, PARTIAL), "fence-action": (ACTIONS, ACTION_PARTIAL)}


def summarize(results: dict[str, Any], settings: tuple[str, ...] = SETTINGS) -> dict[str, Any]:
    """The recovery figures from its runs: medians per setting over crashes of either node,
    per crashed node, each component, the floors and the ratios (`--summarize` prints them
    for an unfinished run's bench/recovery-partial.json)."""
    runs = results["runs"]
    fence_s = [r["fence_query_s"] for r in runs]
    medians: dict[str, float] = {}
    for name in settings:
        mine = [r for r in runs if r["settings"] == name]
        if not mine:  # an unfinished run (--summarize) may not have reached it
            continue
        results[f"recovery_{name}_s"] = spread([r["recovery_s"] for r in mine])
        medians[name] = results[f"recovery_{name}_s"]["median"]
        for victim in VICTIMS:
            crashed = [r["recovery_s"] for r in mine if r["victim"] == victim]
            results[f"recovery_{name}_{victim}_crashed_s"] = spread(crashed) if crashed else None
        results[f"components_{name}"] = _components(mine)
    timing = DEFAULT_TIMING | {"token_ms": 3000}  # the lab's token; consensus 1.2 x token
    starts = [r["start_exec_s"] for r in runs if r["start_exec_s"] is not None]
    floors = {
        "token_plus_consensus_s": timing["token_ms"] * 2.2 / 1000,
        "fence_device_query_s": spread(fence_s),
        "vm_start_exec_s": spread(starts) if starts else None,
    }
    results["floors"] = floors
    if len(medians) < len(settings):
        return results
    if settings == ACTIONS:
        results["ratio_off_to_reboot"] = medians["qdevice-off"] / medians["qdevice"]
        return results
    if starts:
        floor = (floors["token_plus_consensus_s"] + statistics.median(fence_s)
                 + statistics.median(starts))  # fmt: skip
        results["ratio_qdevice_to_floors"] = medians["qdevice"] / floor
    results["ratio_qdevice_to_default"] = medians["qdevice"] / medians["default"]
    results["ratio_hakvm_to_default"] = medians["hakvm"] / medians["default"]
    return results


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def drill_table(runs: list[dict[str, Any]], settings: tuple[str, ...] = SETTINGS) -> str:
    """Each recovery drill's components, a row per setting and crashed node, the drills in
    the order they ran: seconds from the fault; recovery is the VM responsive (the drill's
    poll), the rest the survivor's own record (its alerts' journal; the fencer's log for
    the agent's share, from "wants to fence" to the result, the static delay inside it)."""
    lines = ["| setting | crashed | recovery | lost | fence requested | fence agent (delay) "
             "| fenced | started | VM start exec-time |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in settings:
        for victim in VICTIMS:
            mine = [r for r in runs if (r["settings"], r["victim"]) == (name, victim)]
            if not mine:
                continue
            cells: dict[str, list[str]] = {key: [] for key in
                                           ("recovery", "lost", "asked", "agent", "fenced",
                                            "started", "exec")}  # fmt: skip
            for run in mine:
                journal, fencing = run.get("journal") or {}, run.get("fencing") or {}
                fenced, took = journal.get("fenced_s"), fencing.get("took_s")
                moved = "vm-a" if victim == "node01" else "vm-b"
                delay = fencing.get("delay_s") or 0.0
                cells["recovery"].append(_figure(run["recovery_s"]))
                cells["lost"].append(_figure(journal.get("detected_s")))
                asked = fenced - took if fenced is not None and took is not None else None
                cells["asked"].append(_figure(asked))
                agent = _figure(took) + (f" ({delay:.0f})" if took and delay else "")
                cells["agent"].append(agent)
                cells["fenced"].append(_figure(fenced))
                cells["started"].append(_figure((journal.get("started_s") or {}).get(moved)))
                cells["exec"].append(_figure(run.get("start_exec_s")))
            row = " | ".join(", ".join(values) for values in cells.values())
            lines.append(f"| {name} | {victim} | {row} |")
    return "\n".join(lines) + "\n"


# The benchmarks that take only a repetition count; then the drill benchmarks.
BENCHMARKS: dict[str, Callable[[int], dict[str, Any]]] = {
    "deploy": bench_deploy,
    "operate": bench_operate,
}
NAMES = [*BENCHMARKS, *drill_benches()]


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict) and "median" in value:
        return (
            f"median {value['median']:.2f} (min {value['min']:.2f}, max {value['max']:.2f}, "
            f"n={value['n']})"
        )
    return str(value)


def markdown(run: dict[str, Any]) -> str:
    lines = [
        f"Machine: {run['machine']}.",
        "",
        "| benchmark | measured | figure | value |",
        "|---|---|---|---|",
    ]
    for name, bench in run["results"].items():
        for key, value in bench["figures"].items():
            if key in ("runs", "sessions"):
                continue  # timelines and where they ran: bench/results.json
            lines.append(f"| {name} | {bench['date']} | {key} | {_shown(value)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(NAMES), help="comma-separated names")
    parser.add_argument("--reps", type=int, default=5, help="repetitions where repeated")
    parser.add_argument("--resume", action="store_true",
                        help="recovery, fence-action: go on from bench/*-partial.json")  # fmt: skip
    parser.add_argument("--summarize", action="store_true",
                        help="print the figures of bench/*-partial.json so far; "
                             "run nothing")  # fmt: skip
    args = parser.parse_args()
    drills = drill_benches()
    if args.summarize:
        for settings, partial in drills.values():
            if partial.exists():
                figures = summarize(json.loads(partial.read_text()), settings)
                shown = {k: v for k, v in figures.items() if k not in ("runs", "sessions")}
                print(json.dumps(shown, indent=2))
                print(drill_table(figures["runs"], settings))
        return 0
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(NAMES)}")
    out = REPO / "bench" / "results.json"
    run: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"results": {}}
    run["machine"] = f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, TCG lab"
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        if name in drills:
            figures = bench_recovery(args.reps, args.resume, *drills[name])
        else:
            figures = BENCHMARKS[name](args.reps)
        run["results"][name] = {"date": started, "reps": args.reps, "figures": figures}
        out.write_text(json.dumps(run, indent=2) + "\n")  # after each: a later failure keeps it
    table = markdown(run)
    tables = ""
    for name, (settings, _) in drills.items():
        if runs := run["results"].get(name, {}).get("figures", {}).get("runs"):
            tables += f"\nEach {name} drill:\n\n{drill_table(runs, settings)}"
    (REPO / "bench" / "results.md").write_text(table + tables)
    update_table(table)
    print(table)
    return 0


TABLE_BEGIN = "<!-- bench:begin (bench/run.py writes this table) -->"
TABLE_END = "<!-- bench:end -->"
TABLE_DOC = REPO / "docs" / "benchmarks.md"  # the README links there (issue 15)


def update_table(table: str, doc: pathlib.Path = TABLE_DOC) -> None:
    """Put the table between the benchmark page's markers; SystemExit if they are gone (a
    silent no-op left the page's table stale from 2026-11-27 to 2026-12-02)."""
    text = doc.read_text()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise SystemExit(f"bench: {doc} lacks the {TABLE_BEGIN} / {TABLE_END} markers")
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    doc.write_text(f"{head}{TABLE_BEGIN}\n{table}{TABLE_END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
