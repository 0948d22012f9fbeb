"""The metrics collector, run every `interval_s` by hakvm-metrics.timer: it asks this node's
own tools, all at once and each within the run's deadline, and replaces
/var/lib/prometheus/node-exporter/hakvm.prom atomically (a temp file in the same directory,
fsync, rename; mode 0644 for node_exporter's `prometheus` user).

A source that fails (crm_mon refused, a command timed out) leaves its own series out and
sets `hakvm_collector_success` to 0; everything else is still written.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import hacluster, hakvm_metrics, health, layout
from .config import AgentConfig
from .config import load as load_config
from .exposition import Family, render
from .hakvm_metrics import Seen
from .parsers import (
    parse_bonding,
    parse_cfgtool,
    parse_constraints,
    parse_crm_mon,
    parse_drbdsetup_json,
    parse_proc_drbd,
    parse_quorumtool,
    proc_drbd_version,
)

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
# crm_mon -X --inactive: the legacy XML ha_cluster_exporter reads; --fence-history=2 adds
# the successful fencings to its default (failed and pending ones).
COMMANDS: dict[str, list[str]] = {
    "crm_mon": ["crm_mon", "-X", "--inactive", "--fence-history=2"],
    "cibadmin": ["cibadmin", "--query", "--local", "--scope", "constraints"],
    "quorumtool": ["corosync-quorumtool", "-p"],  # exits 2 when not quorate: output counts
    "cfgtool": ["corosync-cfgtool", "-s"],
}
OUTPUT_COUNTS_ANYWAY = {"quorumtool", "cfgtool"}  # non-zero exits with a usable answer

Answer = tuple[int, str] | None  # (exit code, stdout); None: could not run or timed out
Runner = Callable[[dict[str, list[str]], float], dict[str, Answer]]
Reader = Callable[[str], str | None]


def run_commands(commands: dict[str, list[str]], timeout: float) -> dict[str, Answer]:
    """Every command at once, each killed at `timeout`."""

    def one(argv: list[str]) -> Answer:
        try:
            done = subprocess.run(argv, capture_output=True, timeout=timeout, env=ENV,
                                  stdin=subprocess.DEVNULL, check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.returncode, done.stdout.decode("utf-8", "replace")

    with ThreadPoolExecutor(max_workers=max(1, len(commands))) as pool:
        futures = {name: pool.submit(one, argv) for name, argv in commands.items()}
        return {name: future.result() for name, future in futures.items()}


def read_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(4 * 1024 * 1024)
    except OSError:
        return None


def bmc_command(cfg: AgentConfig) -> list[str]:
    """An IPMI `chassis power status` of the peer's BMC: the password from the file the
    fencing phase installed for the peer's fence device (ipmitool -f), never in argv."""
    bmc = cfg.peer_bmc
    assert bmc is not None
    return ["ipmitool", "-I", "lanplus" if bmc.lanplus else "lan", "-H", bmc.address,
            "-p", str(bmc.port), "-U", bmc.user, "-f", bmc.password_file, "-N", "3", "-R", "1",
            "chassis", "power", "status"]  # fmt: skip


def _cached_bmc(cfg: AgentConfig, cache: dict[str, Any], now: float) -> bool | None:
    """The last BMC answer while it is younger than bmc_check_interval_s, else None."""
    if cfg.peer_bmc is None:
        return None
    last = cache.get("bmc", {})
    if last.get("node") == cfg.peer_bmc.node and now - last.get("checked", 0) < (
        cfg.bmc_check_interval_s
    ):
        return bool(last.get("reachable"))
    return None


def _parse(seen: Seen, name: str, parse: Callable[[], Any]) -> Any:
    try:
        value = parse()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        sys.stderr.write(f"hakvm-metrics: {name}: {exc}\n")
        seen.sources[name] = False
        return None
    seen.sources[name] = True
    return value


def _text(answers: dict[str, Answer], name: str) -> str:
    answer = answers.get(name)
    if answer is None:
        raise ValueError("did not answer in time")
    rc, out = answer
    if rc != 0 and not (name in OUTPUT_COUNTS_ANYWAY and out.strip()):
        raise ValueError(f"exit {rc}")
    return out


def _drbd(cfg: AgentConfig, seen: Seen, answers: dict[str, Answer], proc: str | None) -> None:
    if proc is not None and proc_drbd_version(proc).startswith("8."):
        names = {vm.drbd_minor: vm.drbd_resource for vm in cfg.vms}
        sizes: dict[int, int] = {}
        for minor in names:
            sectors = read_file(f"/sys/block/drbd{minor}/size")
            if sectors and sectors.strip().isdigit():
                sizes[minor] = int(sectors) * 512
        peer = cfg.drbd_node_id(cfg.peers[0]) if cfg.peers else 0
        seen.drbd = _parse(seen, "drbd", lambda: parse_proc_drbd(proc, names, sizes, peer))
    elif "drbdsetup" in answers:
        seen.drbd = _parse(seen, "drbd",
                           lambda: parse_drbdsetup_json(_text(answers, "drbdsetup")))  # fmt: skip
    else:
        seen.sources["drbd"] = False


def gather(
    cfg: AgentConfig,
    cache: dict[str, Any],
    now: float,
    deadline_s: float,
    *,
    run: Runner = run_commands,
    read: Reader = read_file,
) -> Seen:
    seen = Seen()
    commands = dict(COMMANDS)
    proc = read("/proc/drbd")
    if proc is None or not proc_drbd_version(proc).startswith("8."):
        commands["drbdsetup"] = ["drbdsetup", "status", "--json"]
    seen.bmc = _cached_bmc(cfg, cache, now)
    if cfg.peer_bmc is not None and seen.bmc is None:
        commands["bmc"] = bmc_command(cfg)
    answers = run(commands, deadline_s)
    seen.mon = _parse(seen, "crm_mon", lambda: parse_crm_mon(_text(answers, "crm_mon")))
    seen.constraints = _parse(seen, "cibadmin",
                              lambda: parse_constraints(_text(answers, "cibadmin")))
    seen.quorum = _parse(seen, "quorumtool",
                         lambda: parse_quorumtool(_text(answers, "quorumtool")))
    cfgtool = _parse(seen, "cfgtool", lambda: parse_cfgtool(_text(answers, "cfgtool")))
    if cfgtool is not None:
        seen.local_id, seen.links = cfgtool
    _drbd(cfg, seen, answers, proc)
    seen.split_brain = hacluster.split_brain_files()
    for bond in cfg.bonds:
        text = read(f"/proc/net/bonding/{bond}")
        seen.sources[f"bond_{bond}"] = text is not None
        if text is not None:
            seen.bonds[bond] = parse_bonding(text)
    if "bmc" in commands:
        answer = answers.get("bmc")
        seen.bmc = answer is not None and answer[0] == 0 and "Chassis Power is" in answer[1]
        cache["bmc"] = {"node": cfg.peer_bmc.node if cfg.peer_bmc else "", "checked": now,
                        "reachable": seen.bmc}  # fmt: skip
    seen.drills = read_drills(layout.DRILLS_DIR, read)
    return seen


_SCENARIO_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def read_drills(directory: str, read: Reader = read_file) -> list[dict[str, Any]]:
    """The last result of each scenario `hakvm drill` left on this node (hakvm/drill/run.py
    writes them: {"format": 1, "scenario", "passed", "recovery_s", "finished"})."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    results = []
    for name in names:
        text = read(os.path.join(directory, name)) if name.endswith(".json") else None
        try:
            data = json.loads(text) if text else None
        except ValueError:
            continue
        if isinstance(data, dict) and _SCENARIO_RE.match(str(data.get("scenario", ""))):
            results.append(data)
    return results


def families(cfg: AgentConfig, seen: Seen, started: float, now: float) -> list[Family]:
    """Every family of this run, the collector's own last."""
    verdict = health.assess(
        cfg, seen.mon, seen.links or [], seen.bonds, seen.drbd or [], quorum=seen.quorum
    )
    out = [hakvm_metrics.info(cfg), *hakvm_metrics.health(verdict)]
    if seen.mon is not None:
        out += hacluster.pacemaker(seen.mon)
    if seen.constraints is not None:
        out.append(hacluster.locations(seen.constraints))
    if seen.quorum is not None:
        out += hacluster.quorum(seen.quorum)
    if seen.links is not None:
        out += hacluster.rings(seen.links, seen.quorum, seen.local_id)
        out.append(hakvm_metrics.links(cfg, seen.links))
    out += hacluster.drbd(seen.drbd or [], seen.split_brain)
    out += hakvm_metrics.drbd(seen.drbd or [])
    if seen.mon is not None:
        out += hakvm_metrics.vms(cfg, seen.mon)
        out.append(hakvm_metrics.fencing(seen.mon))
    out.append(hakvm_metrics.bonds(cfg, seen.bonds))
    out.append(hakvm_metrics.qdevice(cfg, seen.quorum))
    out.append(hakvm_metrics.bmc(cfg, seen.bmc))
    out += hakvm_metrics.drills(seen.drills)
    return out + hakvm_metrics.collector(seen, time.monotonic() - started, now)


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Temp file in the same directory (a name node_exporter ignores), fsync, rename."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".hakvm.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_cache() -> dict[str, Any]:
    text = read_file(layout.CACHE_PATH)
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def main(argv: Sequence[str] = ()) -> int:
    """One run. `--output PATH` writes elsewhere (a check by hand). 0 when the file was
    written, 1 when it could not be."""
    started, now = time.monotonic(), time.time()
    output = argv[1] if len(argv) > 1 and argv[0] == "--output" else layout.TEXTFILE_PATH
    try:
        cfg = load_config(layout.CONFIG_PATH)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"hakvm-metrics: {layout.CONFIG_PATH}: {exc}\n")
        seen = Seen(sources={"config": False})
        text = render(hakvm_metrics.collector(seen, time.monotonic() - started, now))
    else:
        cache = _load_cache()
        seen = gather(cfg, cache, now, max(3.0, cfg.interval_s * 0.6))
        text = render(families(cfg, seen, started, now))
        try:
            write_atomically(layout.CACHE_PATH, json.dumps(cache), 0o600)
        except OSError as exc:
            sys.stderr.write(f"hakvm-metrics: {layout.CACHE_PATH}: {exc}\n")
    try:
        write_atomically(output, text)
    except OSError as exc:
        sys.stderr.write(f"hakvm-metrics: {output}: {exc}\n")
        return 1
    return 0
