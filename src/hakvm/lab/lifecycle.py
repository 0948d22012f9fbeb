"""Bring the lab up and down, and report its state."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any

from hakvm.lab import bmcs, image, nodes, preflight, procs, qnetd, repo, snapshots, ssh
from hakvm.lab.state import (
    LINKS,
    LOOPBACK,
    NODES,
    Lab,
    LabConfig,
    LabStateError,
    Runtime,
    ensure_root_dir,
    run_base,
    write_atomic,
)

Report = Callable[[str], None]


@dataclasses.dataclass
class UpResult:
    seconds: float
    image_seconds: float
    prepare_seconds: float
    boot_seconds: dict[str, float]


def up(
    lab: Lab,
    config: LabConfig,
    report: Report,
    image_progress: Callable[[str, float], None] | None = None,
    ssh_timeout: float = 600.0,
) -> UpResult:
    started = time.monotonic()
    config.validate()
    preflight.require_root()
    lab.claim()
    ensure_not_running(lab)
    preflight.check_all(config, lab.run.dir, image.cache_root(), build=image.cached_image() is None)
    img = image.build_image(image_progress)
    image_seconds = time.monotonic() - started
    config = dataclasses.replace(config, image_key=img.directory.name, run_dir=str(lab.run.dir))
    user = procs.ensure_lab_user()

    report("preparing node disks and identities")
    t = time.monotonic()
    ensure_root_dir(run_base())
    ensure_root_dir(lab.run.dir)
    write_atomic(lab.run.owner_file, f"{lab.dir}\n")
    lab.save(config)
    lab.save_cut_links(set())
    stage_code(lab.run)
    client_pub = _client_key(lab)
    bmcs.write_credentials(lab, config)
    qnetd.prepare(lab, user)  # a fresh CA for the fresh nodes
    nodes.install_boot_files(lab.run, img.kernel, img.initrd)
    with concurrent.futures.ThreadPoolExecutor(len(NODES)) as pool:
        futures = {
            node: pool.submit(
                nodes.prepare_node,
                lab.run,
                config,
                node,
                image_root=img.root,
                client_pub=client_pub,
                owner=user,
            )
            for node in NODES
        }
        host_keys = {node: f.result() for node, f in futures.items()}
    write_atomic(
        lab.known_hosts,
        "".join(nodes.known_hosts_line(config.ssh_port_of(n), host_keys[n]) + "\n" for n in NODES),
    )
    prepare_seconds = time.monotonic() - t

    try:
        boot = _start_and_wait(lab, config, user, report, ssh_timeout)
    except BaseException:
        down(lab)  # a failed `lab up` leaves nothing running; re-running it starts afresh
        raise
    return UpResult(
        seconds=round(time.monotonic() - started, 1),
        image_seconds=round(image_seconds, 1),
        prepare_seconds=round(prepare_seconds, 1),
        boot_seconds=boot,
    )


def _start_and_wait(
    lab: Lab, config: LabConfig, user: procs.LabUser, report: Report, ssh_timeout: float
) -> dict[str, float]:
    """Start QEMU, the BMCs, the repository and qnetd; check the BMCs; wait for SSH."""
    report("starting QEMU and BMCs")
    boot_started = time.monotonic()
    for node in NODES:
        nodes.start_node(lab.run, node, user)
        bmcs.start_bmc(lab, node, user)
    repo.build_repo(lab, image.cache_root() / "debs")
    repo.start_repo(lab, config.repo_port, user)
    qnetd.start(lab, user)
    for node in NODES:
        bmcs.check_answers(lab, node)

    report("waiting for SSH on both nodes")
    boot: dict[str, float] = {}
    with concurrent.futures.ThreadPoolExecutor(len(NODES)) as pool:
        waits = {
            node: pool.submit(
                ssh.wait_for_ssh,
                config.ssh_port_of(node),
                lab.ssh_key,
                lab.known_hosts,
                ssh_timeout,
                alive=_alive(lab, node),
            )
            for node in NODES
        }
        errors = []
        for node, fut in waits.items():
            try:
                fut.result()
                boot[node] = round(time.monotonic() - boot_started, 1)
            except TimeoutError as exc:
                log = nodes.node_paths(lab.run, node).serial_log
                errors.append(f"{node}: {exc} (serial log {log})")
    if errors:
        raise LabStateError("; ".join(errors))
    return boot


def stage_code(run: Runtime) -> None:
    """A root-owned copy of this package for the lab user's daemons (bmcd): they run on
    Debian's python3 and never import from the checkout, which the lab user may not reach."""
    source = pathlib.Path(__file__).resolve().parent
    target = run.code_dir / "hakvm" / "lab"
    staging = run.dir / ".code-new"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "hakvm" / "lab").mkdir(mode=0o755, parents=True)
    (staging / "hakvm" / "__init__.py").write_text("")
    for module in sorted(source.glob("*.py")):
        shutil.copyfile(module, staging / "hakvm" / "lab" / module.name)
    for path in staging.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    staging.chmod(0o755)
    shutil.rmtree(run.code_dir, ignore_errors=True)
    staging.rename(run.code_dir)
    if not (target / "bmcd.py").is_file():
        raise LabStateError(f"staging the lab's daemons into {run.code_dir} failed")


def ensure_not_running(lab: Lab) -> None:
    running = procs.find_lab_processes(lab)
    if running:
        raise LabStateError(
            f"lab in {lab.dir} is already running ({len(running)} processes); "
            "run `hakvm lab down` first"
        )


def _alive(lab: Lab, node: str) -> Callable[[], bool]:
    return lambda: nodes.qemu_pid(lab.run, node) is not None


def _client_key(lab: Lab) -> str:
    """The lab's client key (kept across `lab up`s); returns the public key line."""
    pub = lab.ssh_key.with_name(lab.ssh_key.name + ".pub")
    if lab.ssh_key.is_file() and pub.is_file():
        lab.ssh_key.chmod(0o600)
        return pub.read_text().strip()
    return nodes.generate_keypair(lab.ssh_key, "hakvm-lab")


@dataclasses.dataclass
class Reimaged:
    node: str
    fingerprint: str  # the node's new SSH host key
    dropped: list[str]  # snapshots forgotten: they held the node's old disks
    seconds: float


def reimage(lab: Lab, node: str) -> Reimaged:
    """A dead node's disks swapped and its OS reinstalled: fresh disks from the lab's node
    image, a new identity (SSH host key, machine-id), an empty DRBD disk, nothing of the
    cluster. The node must be off; its BMC is held stopped meanwhile (a fence's power-on
    would boot it halfway) and started again if it ran. The lab's known_hosts changes for
    this node only; the lab's snapshots, which hold its old disks, are forgotten."""
    started = time.monotonic()
    preflight.require_root()
    config = require_up(lab)
    if nodes.qemu_pid(lab.run, node) is not None:
        raise LabStateError(f"{node} is on: power it off first (hakvm lab kill {node})")
    img = image.cached_image(config.image_key or None)
    if img is None:
        raise LabStateError(f"the lab's node image is not in {image.cache_root()}: hakvm lab image")
    user = procs.ensure_lab_user()
    held = bmcs.stop_bmc(lab, node)
    try:
        if nodes.qemu_pid(lab.run, node) is not None:
            raise LabStateError(f"{node} was powered on meanwhile (its BMC): kill it, retry")
        dropped = snapshots.forget_all(lab)
        host_pub = nodes.prepare_node(
            lab.run, config, node, image_root=img.root, client_pub=_client_key(lab), owner=user
        )
        port = config.ssh_port_of(node)
        mine = f"[{LOOPBACK}]:{port} "
        kept = [line for line in lab.known_hosts.read_text().splitlines()
                if line.strip() and not line.startswith(mine)]  # fmt: skip
        lines = [*kept, nodes.known_hosts_line(port, host_pub)]
        write_atomic(lab.known_hosts, "".join(line + "\n" for line in lines))
    finally:
        if held:
            bmcs.start_bmc(lab, node, user)
    seconds = round(time.monotonic() - started, 1)
    return Reimaged(node, nodes.fingerprint(host_pub), dropped, seconds)


def down(lab: Lab) -> list[procs.LabProcess]:
    """Kill every process of the lab (BMCs first, so nothing powers a node back on)."""
    killed: list[procs.LabProcess] = []
    for _ in range(3):  # a BMC may have been mid power-on: sweep until nothing is left
        found = procs.find_lab_processes(lab)
        if not found:
            break
        for proc in sorted(found, key=lambda p: p.kind != "bmcd"):
            procs.kill_hard(proc.pid)
            killed.append(proc)
    if lab.exists():
        for node in NODES:
            if nodes.node_paths(lab.run, node).dir.is_dir():
                nodes.set_wanted_power(lab.run, node, "off")
                bmcs.set_wanted(lab, node, "stopped")
        qnetd.set_wanted(lab, "stopped")
    return killed


def destroy(lab: Lab) -> list[procs.LabProcess]:
    """`lab down`, then remove the runtime dir (node disks) and the lab's state dir."""
    if lab.dir.is_dir() and any(lab.dir.iterdir()) and not lab.exists():
        raise LabStateError(f"{lab.dir} holds no lab (no lab.json): not removing anything")
    killed = down(lab)
    if lab.run.dir.parent == run_base() and lab.run.dir.is_dir():
        shutil.rmtree(lab.run.dir)
    if lab.exists():
        shutil.rmtree(lab.dir)
    return killed


def require_up(lab: Lab) -> LabConfig:
    config = lab.load()
    for node in NODES:
        if not nodes.node_paths(lab.run, node).argv_file.is_file():
            raise LabStateError(f"lab in {lab.dir} has no {node} (run `hakvm lab up`)")
    return config


def status(lab: Lab) -> dict[str, Any]:
    """Machine-readable state: per node power/QEMU/BMC, per link up/cut."""
    config = require_up(lab)
    cut = lab.cut_links()
    out_nodes: dict[str, Any] = {}
    for node in NODES:
        paths = nodes.node_paths(lab.run, node)
        pid = nodes.qemu_pid(lab.run, node)
        want = nodes.wanted_power(lab.run, node)
        # A QEMU that is gone although it should run has crashed (or was killed by
        # something else than the lab and its BMC): report it as dead, not off.
        power = "on" if pid is not None else "dead" if want == "on" else "off"
        bpid = bmcs.bmcd_pid(lab, node)
        if bpid is not None:
            bmc = "running"
        else:
            bmc = "dead" if bmcs.wanted(lab, node) == "running" else "stopped"
        out_nodes[node] = {
            "power": power,
            "frozen": pid is not None and nodes.is_frozen(lab.run, node),
            "qemu_pid": pid,
            "bmc": bmc,
            "bmc_pid": bpid,
            "ssh": f"127.0.0.1:{config.ssh_port_of(node)}",
            "bmc_address": f"127.0.0.1:{config.bmc_port_of(node)}/udp",
            "console": str(paths.console),
            "serial_log": str(paths.serial_log),
            "bmc_log": str(lab.log_file("bmcd", node)),
        }
    healthy = all(n["power"] != "dead" and n["bmc"] != "dead" for n in out_nodes.values())
    repo_pid = repo.repod_pid(lab)
    qnetd_state = qnetd.status(lab, config.qnetd_port)
    healthy = healthy and repo_pid is not None and qnetd_state["state"] != "dead"
    return {
        "lab_dir": str(lab.dir),
        "run_dir": str(lab.run.dir),
        "healthy": healthy,
        "repository": {
            "pid": repo_pid,
            "state": "running" if repo_pid is not None else "dead",
            "address": f"127.0.0.1:{config.repo_port}/tcp",
        },
        "qnetd": qnetd_state,
        "nodes": out_nodes,
        "links": {link: ("cut" if link in cut else "up") for link in LINKS},
        "ssh_key": str(lab.ssh_key),
        "known_hosts": str(lab.known_hosts),
    }


def memory_kib(lab: Lab) -> dict[str, int]:
    """Resident memory of each lab process (for reports and benchmarks)."""
    out: dict[str, int] = {}
    for proc in procs.find_lab_processes(lab):
        try:
            for line in pathlib.Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[f"{proc.node}/{proc.kind}"] = int(line.split()[1])
        except OSError:
            continue
    return out
