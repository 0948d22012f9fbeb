"""`hakvm lab snapshot save|restore|list|delete NAME`: the whole lab at one instant.

Both nodes are paused together (QMP ``stop``), each saves its memory and disks into its own
qcow2 files (QEMU's internal snapshots, ``savevm``), and both resume. Saved at the same
paused instant, the two nodes agree on everything between them (corosync membership, DRBD
connections and generation ids), so a restore gives back a running cluster in the state it
was saved in, without a boot: both are paused, ``loadvm`` on each, the saved link state
re-applied, both resumed together. A node that is off (after ``lab down``) is started paused
first. A restored guest's clock resumes at the moment of the save; it is set to the host's
time over SSH right after (the nodes have no time source of their own).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import pathlib
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

from hakvm.lab import bmcs, nodes, procs, qnetd, repo, ssh
from hakvm.lab.qmp import QmpClient
from hakvm.lab.state import LINKS, NODES, Lab, LabStateError, write_atomic

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
# savevm/loadvm write/read the nodes' whole memory: measured 5-25 s each on the lab host.
SNAPSHOT_TIMEOUT_S = 600.0


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(
            f"snapshot name {name!r}: 1-40 characters of letters, digits, '_', '.', '-'"
        )
    return name


def _index_path(lab: Lab) -> pathlib.Path:
    return lab.dir / "snapshots.json"


def listing(lab: Lab) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_index_path(lab).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def _save_index(lab: Lab, index: dict[str, dict[str, Any]]) -> None:
    write_atomic(_index_path(lab), json.dumps(index, indent=2, sort_keys=True) + "\n", mode=0o600)


def _qmp(lab: Lab, node: str) -> QmpClient:
    return QmpClient(nodes.node_paths(lab.run, node).qmp, timeout=SNAPSHOT_TIMEOUT_S)


def _hmp(lab: Lab, node: str, command: str) -> None:
    """An HMP command (savevm/loadvm/delvm have no synchronous QMP form in QEMU 7.2);
    HMP reports its errors in the text it returns."""
    out = _qmp(lab, node).command("human-monitor-command", **{"command-line": command})
    text = str(out or "").strip()
    if text:
        raise LabStateError(f"{node}: {command}: {text.splitlines()[-1]}")


def _both(action: Callable[[str], None]) -> None:
    with concurrent.futures.ThreadPoolExecutor(len(NODES)) as pool:
        for future in [pool.submit(action, node) for node in NODES]:
            future.result()


def _running(lab: Lab) -> dict[str, bool]:
    return {node: nodes.qemu_pid(lab.run, node) is not None for node in NODES}


def save(lab: Lab, name: str) -> dict[str, Any]:
    check_name(name)
    lab.load()
    off = [node for node, on in _running(lab).items() if not on]
    if off:
        raise LabStateError(f"{', '.join(off)} is off: a snapshot needs both nodes running")
    started = time.monotonic()
    paused: list[str] = []
    try:
        for node in NODES:  # one after the other within milliseconds: the same instant
            _qmp(lab, node).command("stop")
            paused.append(node)
        _both(lambda node: _hmp(lab, node, f"savevm {name}"))
    finally:
        for node in paused:
            _qmp(lab, node).command("cont")
    entry = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cut_links": sorted(lab.cut_links()),
        "seconds": round(time.monotonic() - started, 1),
    }
    index = listing(lab)
    index[name] = entry
    _save_index(lab, index)
    return entry


def restore(lab: Lab, name: str, ssh_timeout: float = 120.0) -> dict[str, Any]:
    check_name(name)
    config = lab.load()
    index = listing(lab)
    if name not in index:
        known = ", ".join(sorted(index)) or "none"
        raise LabStateError(f"no lab snapshot {name!r} (snapshots: {known})")
    started = time.monotonic()
    user = procs.ensure_lab_user()
    for node, on in _running(lab).items():
        if on:
            _qmp(lab, node).command("stop")
        else:
            nodes.start_node(lab.run, node, user, paused=True)
    _both(lambda node: _hmp(lab, node, f"loadvm {name}"))
    cut = {str(link) for link in index[name].get("cut_links", []) if link in LINKS}
    lab.save_cut_links(cut)
    for node in NODES:
        for link in LINKS:
            nodes.set_link(lab.run, node, link, up=link not in cut)
    for node in NODES:
        _qmp(lab, node).command("cont")
    loaded = round(time.monotonic() - started, 1)
    for node in NODES:  # after `lab down`: the BMCs, the repository and qnetd come back too
        bmcs.start_bmc(lab, node, user)
    repo.start_repo(lab, config.repo_port, user)
    if qnetd.prepared(lab):  # after `lab qnetd-stop` too: a snapshot was saved with it up
        qnetd.start(lab, user)
    # The guests' clocks resumed at the save: give them the host's time again.
    for node in NODES:
        port = config.ssh_port_of(node)
        ssh.wait_for_ssh(port, lab.ssh_key, lab.known_hosts, ssh_timeout)
        _set_clock(lab, node, port, time.monotonic() + ssh_timeout)
    return {"loaded_seconds": loaded, "seconds": round(time.monotonic() - started, 1)}


def delete(lab: Lab, name: str) -> None:
    check_name(name)
    lab.load()
    index = listing(lab)
    if name not in index:
        raise LabStateError(f"no lab snapshot {name!r}")
    for node, on in _running(lab).items():
        paths = nodes.node_paths(lab.run, node)
        if on:
            _hmp(lab, node, f"delvm {name}")
        else:
            for disk in (paths.root, paths.drbd):
                subprocess.run(
                    procs.as_lab_user(["qemu-img", "snapshot", "-d", name, str(disk)],
                                      procs.ensure_lab_user()),
                    capture_output=True, check=False,
                )  # fmt: skip
    del index[name]
    _save_index(lab, index)


def forget_all(lab: Lab) -> list[str]:
    """Forget every snapshot (a node's disks were replaced: none can be restored whole any
    more); what they saved of the other node stays in its disk files until `lab destroy`."""
    names = sorted(listing(lab))
    if names:
        _save_index(lab, {})
    return names


def _set_clock(lab: Lab, node: str, port: int, deadline: float) -> None:
    """The host's time on the node, tried until `deadline`: a node just resumed answered SSH
    once and then timed out in the banner exchange of the next login (CI run of
    2026-12-01, both guests catching up at once)."""
    while True:
        argv = ssh.ssh_argv(
            port, lab.ssh_key, lab.known_hosts,
            ssh.remote_command(["date", "-u", "-s", f"@{time.time():.3f}"]),
        )  # fmt: skip
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            result = subprocess.CompletedProcess(argv, 255, "", "ssh timed out after 60s")
        if result.returncode == 0:
            return
        if time.monotonic() >= deadline:
            why = result.stderr.strip() or f"exit {result.returncode}"
            raise LabStateError(f"{node}: setting the clock after restore failed: {why}")
        time.sleep(3)
