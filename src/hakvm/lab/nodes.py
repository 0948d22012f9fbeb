"""Lab nodes: QEMU command line, per-node disks and identity, power.

NIC order is fixed by PCI slot (and ``net.ifnames=0``): eth0 management (user-mode
network, SSH forwarded from 127.0.0.1), eth1 bond-a, eth2 bond-b, eth3 hb.

Node links are connectionless UDP socket netdevs on 127.0.0.1: unlike the
``listen=``/``connect=`` TCP form they need no reconnect, so a node whose QEMU is
killed and restarted (fencing, ``lab kill``) gets its links back by itself.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence

from hakvm.lab import procs, repo
from hakvm.lab.qmp import QmpClient, QmpError
from hakvm.lab.state import (
    GUEST_HOST_ADDRESS,
    LINKS,
    LOOPBACK,
    LabConfig,
    Runtime,
    read_private_text,
    write_atomic,
)

QEMU = "qemu-system-x86_64"
# clocksource=hpet: under TCG the guest's TSC follows the host's, so after `lab snapshot
# restore` CLOCK_MONOTONIC jumped by the time since the save (measured: 130 s after a 2 min
# wait), corosync lost its token and in-flight monitors "timed out"; the HPET counts QEMU's
# virtual clock, which a snapshot saves and restores (no jump, no new membership).
KERNEL_ARGS = "root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 quiet clocksource=hpet"
# PCI slots in probe order: they decide vda/vdb and eth0..eth3.
SLOT_ROOT, SLOT_DRBD, SLOT_RNG = 0x04, 0x05, 0x06
SLOT_MGMT = 0x08  # eth0; eth1..eth3 follow in LINKS order


class NodeError(Exception):
    """A node could not be prepared or started."""


@dataclasses.dataclass(frozen=True)
class NodePaths:
    dir: pathlib.Path

    @property
    def root_base(self) -> pathlib.Path:
        """The node's own copy of the image (its identity injected), read-only to QEMU."""
        return self.dir / "root.raw"

    @property
    def root(self) -> pathlib.Path:
        """qcow2 overlay on root_base: what the node writes, and where snapshots live."""
        return self.dir / "root.qcow2"

    @property
    def drbd(self) -> pathlib.Path:
        return self.dir / "drbd.qcow2"

    @property
    def qmp(self) -> pathlib.Path:
        return self.dir / "qmp.sock"

    @property
    def console(self) -> pathlib.Path:
        return self.dir / "console.sock"

    @property
    def serial_log(self) -> pathlib.Path:
        return self.dir / "serial.log"

    @property
    def pidfile(self) -> pathlib.Path:
        return self.dir / "qemu.pid"

    @property
    def argv_file(self) -> pathlib.Path:
        return self.dir / "qemu.argv.json"

    @property
    def power_file(self) -> pathlib.Path:
        """Wanted power state ("on"/"off"): tells a crashed QEMU from a powered-off one."""
        return self.dir / "power"


def node_paths(run: Runtime, node: str) -> NodePaths:
    return NodePaths(run.node_dir(node))


def mac(config: LabConfig, node: str, nic: int) -> str:
    """Stable locally administered MAC: 52:54:00:4c:<node>:<nic>."""
    return f"52:54:00:4c:{config.node_index(node) + 1:02x}:{nic:02x}"


def nic_id(link: str) -> str:
    return f"nic-{link}"


def qemu_argv(run: Runtime, config: LabConfig, node: str) -> list[str]:
    """The node's full QEMU command line (pure: no I/O)."""
    p = node_paths(run, node)
    ssh = config.ssh_port_of(node)
    argv = [
        QEMU,
        "-name",
        f"{node},process=hakvm-{node}",
        "-machine",
        "q35",
        # No KVM: nested KVM hangs on the target hosts; TCG with one thread per vCPU.
        "-accel",
        "tcg,thread=multi,tb-size=256",
        "-cpu",
        "max",
        "-smp",
        str(config.cpus),
        "-m",
        str(config.memory_mib),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-vga",
        "none",
        "-rtc",
        "base=utc",
        "-kernel",
        str(run.boot_dir / "vmlinuz"),
        "-initrd",
        str(run.boot_dir / "initrd.img"),
        "-append",
        KERNEL_ARGS,
        "-drive",
        f"file={p.root},if=none,id=root,format=qcow2,discard=unmap",
        "-device",
        f"virtio-blk-pci,drive=root,addr={SLOT_ROOT:#x}",
        "-drive",
        f"file={p.drbd},if=none,id=drbd,format=qcow2,discard=unmap",
        "-device",
        f"virtio-blk-pci,drive=drbd,addr={SLOT_DRBD:#x}",
        # Entropy: sshd and DRBD must not wait for a TCG guest to gather randomness.
        "-object",
        "rng-random,id=rng,filename=/dev/urandom",
        "-device",
        f"virtio-rng-pci,rng=rng,addr={SLOT_RNG:#x}",
        # Management: user-mode network, SSH forwarded from host loopback only. The
        # guest has no default route, so it reaches nothing but 10.0.2.2 = host loopback.
        "-netdev",
        # ipv6=off: slirp's router advertisements would give the guest an IPv6 default route.
        f"user,id=mgmt,ipv6=off,net=10.0.2.0/24,host={GUEST_HOST_ADDRESS},"
        f"hostfwd=tcp:{LOOPBACK}:{ssh}-:22",
        "-device",
        f"virtio-net-pci,netdev=mgmt,id=nic-mgmt,mac={mac(config, node, 0)},addr={SLOT_MGMT:#x}",
    ]
    for i, link in enumerate(LINKS, start=1):
        local, peer = config.link_ports(link, node)
        argv += [
            "-netdev",
            f"socket,id={link},udp={LOOPBACK}:{peer},localaddr={LOOPBACK}:{local}",
            # speed/duplex: without them the bond's 802.3ad never finds a partner.
            "-device",
            f"virtio-net-pci,netdev={link},id={nic_id(link)},mac={mac(config, node, i)},"
            f"speed=1000,duplex=full,addr={SLOT_MGMT + i:#x}",
        ]
    argv += [
        "-chardev",
        f"socket,id=console,path={p.console},server=on,wait=off,"
        f"logfile={p.serial_log},logappend=on",
        "-serial",
        "chardev:console",
        "-qmp",
        f"unix:{p.qmp},server=on,wait=off",
        "-pidfile",
        str(p.pidfile),
        "-daemonize",
    ]
    return argv


def fingerprint(public_key: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line, as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(base64.b64decode(public_key.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_line(port: int, public_key: str) -> str:
    """``[127.0.0.1]:PORT type base64`` (the comment is dropped)."""
    kind, blob = public_key.split()[:2]
    return f"[{LOOPBACK}]:{port} {kind} {blob}"


def hosts_file(node: str) -> str:
    return f"127.0.0.1\tlocalhost\n127.0.1.1\t{node}\n\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def debugfs_script(files: Sequence[tuple[str, str, int]]) -> str:
    """debugfs commands replacing ``(host_path, image_path, mode)`` files, owned by root."""
    lines: list[str] = []
    for host, image, mode in files:
        lines += [
            f"rm {image}",
            f"write {host} {image}",
            f"sif {image} mode {0o100000 | mode:#o}",
            f"sif {image} uid 0",
            f"sif {image} gid 0",
        ]
    return "\n".join(lines) + "\n"


def generate_keypair(path: pathlib.Path, comment: str) -> str:
    """New ed25519 key at path (0600, no passphrase); returns the public key line."""
    for f in (path, path.with_name(path.name + ".pub")):
        f.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def prepare_node(
    run: Runtime,
    config: LabConfig,
    node: str,
    *,
    image_root: pathlib.Path,
    client_pub: str,
    owner: procs.LabUser,
) -> str:
    """Fresh disks with this node's identity. Returns the node's SSH host public key."""
    p = node_paths(run, node)
    shutil.rmtree(p.dir, ignore_errors=True)
    p.dir.mkdir(mode=0o700, parents=True)
    # Sparse copy: only the image's used blocks are written (reflink when possible).
    subprocess.run(
        ["cp", "--sparse=always", "--reflink=auto", str(image_root), str(p.root_base)],
        check=True,
        capture_output=True,
    )
    with tempfile.TemporaryDirectory(prefix="hakvm-id-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        host_pub = generate_keypair(tmp / "ssh_host_ed25519_key", f"root@{node}")
        (tmp / "hostname").write_text(f"{node}\n")
        (tmp / "hosts").write_text(hosts_file(node))
        (tmp / "machine-id").write_text(uuid.uuid4().hex + "\n")
        (tmp / "authorized_keys").write_text(client_pub + "\n")
        (tmp / "sources.list").write_text(repo.sources_list(config.repo_port))
        script = debugfs_script(
            [
                (str(tmp / "hostname"), "/etc/hostname", 0o644),
                (str(tmp / "hosts"), "/etc/hosts", 0o644),
                (str(tmp / "machine-id"), "/etc/machine-id", 0o444),
                (str(tmp / "ssh_host_ed25519_key"), "/etc/ssh/ssh_host_ed25519_key", 0o600),
                (str(tmp / "ssh_host_ed25519_key.pub"), "/etc/ssh/ssh_host_ed25519_key.pub", 0o644),
                (str(tmp / "authorized_keys"), "/root/.ssh/authorized_keys", 0o600),
                (str(tmp / "sources.list"), "/etc/apt/sources.list", 0o644),
            ]
        )
        (tmp / "script").write_text(script)
        # debugfs edits the ext4 image in place: no mount, no loop device.
        result = subprocess.run(
            ["debugfs", "-w", "-f", str(tmp / "script"), str(p.root_base)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise NodeError(f"{node}: debugfs failed: {result.stderr.strip()[:300]}")
    check = subprocess.run(
        ["debugfs", "-R", "cat /etc/hostname", str(p.root_base)],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.stdout.strip() != node:
        raise NodeError(f"{node}: identity injection failed (hostname {check.stdout!r})")
    # Both disks qcow2 so that `lab snapshot` can save them with the machine's memory.
    for argv in (
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(p.root_base),
         str(p.root)],
        ["qemu-img", "create", "-q", "-f", "qcow2", str(p.drbd), f"{config.drbd_disk_gib}G"],
    ):  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True)
    argv = qemu_argv(run, config, node)
    write_atomic(p.argv_file, json.dumps(argv) + "\n")
    write_atomic(p.power_file, "off\n")
    if os.geteuid() == 0:
        for path in (p.dir, *p.dir.iterdir()):
            os.chown(path, owner.uid, owner.gid)
    return host_pub


def install_boot_files(run: Runtime, kernel: pathlib.Path, initrd: pathlib.Path) -> None:
    run.boot_dir.mkdir(mode=0o755, exist_ok=True)
    for src, name in ((kernel, "vmlinuz"), (initrd, "initrd.img")):
        dst = run.boot_dir / name
        shutil.copyfile(src, dst)
        dst.chmod(0o644)  # read by the unprivileged QEMU user


# --- power ----------------------------------------------------------------------------


def qemu_pid(run: Runtime, node: str) -> int | None:
    """The running QEMU's pid (from the pid file QEMU writes), or None."""
    pid = procs.read_pidfile(procs.qemu_pidfile(run.dir, node))
    return pid if procs.pid_matches(pid, run.dir, "qemu", node) else None


def set_wanted_power(run: Runtime, node: str, state: str) -> None:
    p = node_paths(run, node)
    owner = (p.dir.stat().st_uid, p.dir.stat().st_gid) if os.geteuid() == 0 else None
    write_atomic(p.power_file, state + "\n", owner=owner)


def wanted_power(run: Runtime, node: str) -> str:
    try:
        return read_private_text(node_paths(run, node).power_file, 16).strip() or "off"
    except OSError:
        return "off"


def start_node(
    run: Runtime, node: str, user: procs.LabUser | None = None, *, paused: bool = False
) -> int:
    """Power on: start QEMU (as the lab user) and re-apply cut links. Returns the pid.

    ``paused``: the CPUs wait for a QMP ``cont`` (a snapshot is loaded first)."""
    pid = qemu_pid(run, node)
    if pid is not None:
        return pid
    p = node_paths(run, node)
    argv = json.loads(read_private_text(p.argv_file))
    if not isinstance(argv, list):
        raise NodeError(f"{p.argv_file}: not an argv list")
    owner = user or procs.LabUser("", p.dir.stat().st_uid, p.dir.stat().st_gid)
    set_wanted_power(run, node, "on")
    # -daemonize: QEMU returns once the machine is set up (sockets listening, pidfile
    # written), so errors such as a busy port surface here rather than later.
    result = subprocess.run(
        procs.as_lab_user([str(a) for a in argv] + (["-S"] if paused else []), owner),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        raise NodeError(f"{node}: QEMU failed to start: {result.stderr.strip()[:500]}")
    pid = qemu_pid(run, node)
    if pid is None:
        raise NodeError(f"{node}: QEMU exited right after start (see {p.serial_log})")
    for link in run.cut_links():
        set_link(run, node, link, up=False)
    return pid


def kill_node(run: Runtime, node: str) -> float | None:
    """Power off: SIGKILL the QEMU process (a pulled plug). Returns the moment of the
    SIGKILL (Unix time; before the wait for the process to go), None if it was off."""
    set_wanted_power(run, node, "off")
    pid = qemu_pid(run, node)
    if pid is None:
        return None
    at = time.time()  # kill_hard's first step is the SIGKILL
    procs.kill_hard(pid)
    return at


def freeze_node(run: Runtime, node: str) -> bool:
    """A hang with the power on: the node's vCPUs stop (QMP ``stop``), so its kernel neither
    runs nor answers, and its BMC must power off a machine that is on. QMP rather than
    SIGSTOP: the monitor keeps answering, so link cuts, heals and snapshots still work, and
    the BMC's power-off (SIGKILL) works either way. False if the node is off."""
    if qemu_pid(run, node) is None:
        return False
    QmpClient(node_paths(run, node).qmp).command("stop")  # its reply comes once they stopped
    return True


def thaw_node(run: Runtime, node: str) -> bool:
    """Undo freeze_node (QMP ``cont``). False if the node is off (fencing replaced it)."""
    if qemu_pid(run, node) is None:
        return False
    QmpClient(node_paths(run, node).qmp).command("cont")
    return True


def is_frozen(run: Runtime, node: str) -> bool:
    """The node is on with its vCPUs stopped (frozen, or paused for a snapshot)."""
    if qemu_pid(run, node) is None:
        return False
    try:
        answer = QmpClient(node_paths(run, node).qmp).command("query-status")
    except QmpError:
        return False
    return isinstance(answer, dict) and answer.get("running") is False


def reset_node(run: Runtime, node: str) -> None:
    QmpClient(node_paths(run, node).qmp).command("system_reset")


def set_link(run: Runtime, node: str, link: str, up: bool) -> bool:
    """Carrier of node's NIC on link; False if the node is not running."""
    if qemu_pid(run, node) is None:
        return False
    try:
        # Through HMP: QmpClient.command's own first parameter is called ``name``, which
        # collides with set_link's ``name`` argument.
        QmpClient(node_paths(run, node).qmp).command(
            "human-monitor-command",
            **{"command-line": f"set_link {nic_id(link)} {'on' if up else 'off'}"},
        )
    except QmpError:
        if qemu_pid(run, node) is None:  # died meanwhile: the cut is re-applied on start
            return False
        raise
    return True


def wait_gone(run: Runtime, node: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if qemu_pid(run, node) is None:
            return True
        time.sleep(0.1)
    return False
