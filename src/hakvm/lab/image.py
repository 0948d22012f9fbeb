"""Build and cache the Debian 12 node image (`hakvm lab image`).

The image is a raw ext4 file made with ``mkfs.ext4 -d`` from a debootstrap tree, plus
the kernel and initrd extracted from its /boot (the nodes boot with -kernel/-initrd, so
the image needs no boot loader). It is generic: per-node identity (hostname,
machine-id, SSH host key, authorized key) is injected later into each node's copy.

Cache layout (``${XDG_CACHE_HOME:-~/.cache}/hakvm``)::

    images/<key>/root.raw vmlinuz initrd.img manifest.json build.log
    debs/*.deb      every package downloaded for the image (served to nodes later)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence

from hakvm.lab import mirror

# Bumped whenever the build recipe changes in a way that changes the image.
BUILDER_VERSION = "5"
SUITE = "bookworm"

PACKAGES: tuple[str, ...] = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "kmod",
    "iproute2",
    "ifupdown",
    "ifenslave",
    "bridge-utils",
    "nftables",
    "openssh-server",
    "corosync",
    "pacemaker",
    "pacemaker-cli-utils",
    "drbd-utils",
    "resource-agents",
    "fence-agents",
    "ipmitool",
    "xfsprogs",
    "psmisc",
    "lvm2",
    "thin-provisioning-tools",
    "python3",
    "libvirt-daemon-system",
    "qemu-system-x86",
    "qemu-utils",
    "ethtool",
    "iputils-ping",
    "procps",
    "less",
    # In the image although apply installs it when monitoring asks: installing it in every
    # lab apply cost 2 min 9 s of apt/dpkg under TCG per node (dpkg.log, 2026-12-01), the
    # largest part of a 280 s monitoring phase. The install path stays proven by the package
    # phase's e2e test (corosync-qdevice, below).
    "prometheus-node-exporter",
)

# Downloaded into the package cache (so the lab repository serves them) but not installed:
# what `hakvm apply` installs only when the spec asks for it (a quorum device's client).
REPO_ONLY_PACKAGES: tuple[str, ...] = ("corosync-qdevice",)

# Kernel modules the cluster needs; the build fails if the kernel lacks them.
REQUIRED_MODULES = ("drbd", "bonding")

INTERFACES = """\
# Written by hakvm lab: only the management NIC is configured, as after an OS install.
# No gateway on purpose: lab nodes have no route out of the lab.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet static
    address 10.0.2.15/24
"""

SSHD_CONFIG = """\
# hakvm lab: only the per-node ed25519 key injected at `lab up`, keys only.
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""

# Root autologin on the serial console: the console socket is reachable only by the
# lab's owner, and a broken node must be debuggable without SSH.
SERIAL_AUTOLOGIN = """\
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
"""

# A bare node, as after an OS install, runs no cluster stack: Debian enables corosync and
# pacemaker on install (with a one-node default corosync.conf that spins at real-time
# priority and costs a TCG node a quarter of its CPU); `hakvm apply` enables them once
# configured. libvirtd stays socket-activated (libvirtd.socket) instead of always running.
DISABLED_UNITS = ("corosync.service", "pacemaker.service", "libvirtd.service")

# The nodes' hardware is fixed (virtio disk, ext4 root), so the initrd carries only that:
# Debian's default (MODULES=most, ~40 MiB) costs a TCG node ~10 s just to unpack.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "ext4", "crc32c_generic")

# Timers that would only burn TCG cycles on a lab node.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "man-db.timer",
)


class ImageError(Exception):
    """The image could not be built."""


def cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "hakvm"


def image_key(packages: Sequence[str] = PACKAGES, builder: str = BUILDER_VERSION) -> str:
    """Cache key: changes when the package lists or the recipe changes."""
    blob = json.dumps(
        {
            "packages": sorted(packages),
            "repo_only": sorted(REPO_ONLY_PACKAGES),
            "builder": builder,
            "suite": SUITE,
        }
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class NodeImage:
    """A built image in the cache."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory

    @property
    def root(self) -> pathlib.Path:
        return self.directory / "root.raw"

    @property
    def kernel(self) -> pathlib.Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> pathlib.Path:
        return self.directory / "initrd.img"

    @property
    def manifest(self) -> pathlib.Path:
        return self.directory / "manifest.json"

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.root, self.kernel, self.initrd, self.manifest))


def cached_image(key: str | None = None) -> NodeImage | None:
    image = NodeImage(cache_root() / "images" / (key or image_key()))
    return image if image.complete() else None


Step = Callable[[str], None]


class _Builder:
    def __init__(self, work: pathlib.Path, debs: pathlib.Path, log: pathlib.Path) -> None:
        self.work = work
        self.rootfs = work / "rootfs"
        self.debs = debs
        self.log_path = log

    def run(self, argv: Sequence[str], on_line: Callable[[str], None] | None = None) -> None:
        """Run a command, appending its output to the build log."""
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C.UTF-8")
        with self.log_path.open("a") as log:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            proc = subprocess.Popen(
                list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if on_line is not None:
                    on_line(line.rstrip())
            rc = proc.wait()
        if rc != 0:
            raise ImageError(f"{argv[0]} failed (exit {rc}); see {self.log_path}")

    def chroot(self, argv: Sequence[str], on_line: Callable[[str], None] | None = None) -> None:
        # A private PID + mount namespace gives the chroot its own /proc that vanishes with
        # the command, so an interrupted build never leaves a mount behind.
        self.run(
            [
                "unshare",
                "--fork",
                "--pid",
                f"--mount-proc={self.rootfs}/proc",
                "chroot",
                str(self.rootfs),
                *argv,
            ],
            on_line,
        )

    def write(self, rel: str, text: str, mode: int = 0o644) -> None:
        path = self.rootfs / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)


def _link_debs(src: pathlib.Path, dst: pathlib.Path) -> int:
    """Hard-link (or copy) every .deb of src into dst; returns how many were new."""
    dst.mkdir(parents=True, exist_ok=True)
    new = 0
    for deb in src.glob("*.deb"):
        target = dst / deb.name
        if target.exists():
            continue
        try:
            os.link(deb, target)
        except OSError:
            shutil.copy2(deb, target)
        new += 1
    return new


def _image_size(rootfs: pathlib.Path) -> int:
    out = subprocess.run(
        ["du", "-sx", "--block-size=1", str(rootfs)], capture_output=True, text=True, check=True
    ).stdout
    used = int(out.split()[0])
    # Headroom for logs, libvirt images of tiny payload VMs and package installs.
    size = max(4 << 30, used * 2 + (1 << 30))
    return (size + (1 << 20) - 1) & ~((1 << 20) - 1)


def build_image(
    progress: Callable[[str, float], None] | None = None,
    force: bool = False,
) -> NodeImage:
    """Build (or return the cached) node image. ``progress(text, fraction)``."""
    key = image_key()
    root = cache_root()
    final = NodeImage(root / "images" / key)
    if final.complete() and not force:
        return final
    if os.geteuid() != 0:
        raise ImageError("building the node image needs root (debootstrap, chroot)")
    for tool in ("debootstrap", "mkfs.ext4", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise ImageError(f"{tool} not found (apt-get install debootstrap e2fsprogs)")
    sources = mirror.host_sources()
    mirror_uri = mirror.pick_mirror(sources, SUITE)

    report: Callable[[str, float], None] = progress or (lambda _t, _f: None)
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root / "images")
    work = root / "images" / f".build-{key}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    builder = _Builder(work, debs, work / "build.log")
    started = time.monotonic()
    try:
        report("debootstrap (minbase)", 0.02)
        with _counting(report, "debootstrap", 0.02, 0.25, expected=110) as on_line:
            builder.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--cache-dir={debs}",
                    SUITE,
                    str(builder.rootfs),
                    mirror_uri,
                ],
                on_line,
            )
        _link_debs(debs, builder.rootfs / "var/cache/apt/archives")
        builder.write("etc/apt/sources.list", mirror.chroot_sources_list(sources, SUITE))
        shutil.copy("/etc/resolv.conf", builder.rootfs / "etc/resolv.conf", follow_symlinks=True)
        # No daemon may start inside the build chroot.
        builder.write("usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
        # Keep downloaded packages: they are cached and served to the nodes later.
        builder.write(
            "etc/apt/apt.conf.d/99hakvm-keep", 'Binary::apt::APT::Keep-Downloaded-Packages "1";\n'
        )
        report("apt-get update", 0.26)
        builder.chroot(["apt-get", "update", "-q"])
        report("apt-get --fix-broken install", 0.28)
        builder.chroot(["apt-get", "-y", "-q", "--fix-broken", "install"])
        with _counting(report, "installing packages", 0.3, 0.85, expected=900) as on_line:
            builder.chroot(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES], on_line
            )
        report("downloading packages for the lab repository", 0.85)
        builder.chroot(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "--download-only",
             *REPO_ONLY_PACKAGES]
        )  # fmt: skip
        report("keeping .deb files", 0.86)
        _link_debs(builder.rootfs / "var/cache/apt/archives", debs)
        report("configuring", 0.87)
        kernel_version = _configure(builder)
        report("extracting kernel", 0.89)
        work_image = NodeImage(work / "image")
        work_image.directory.mkdir()
        shutil.copyfile(builder.rootfs / f"boot/vmlinuz-{kernel_version}", work_image.kernel)
        shutil.copyfile(builder.rootfs / f"boot/initrd.img-{kernel_version}", work_image.initrd)
        size = _image_size(builder.rootfs)
        report(f"mkfs.ext4 -d ({size >> 20} MiB sparse)", 0.9)
        with work_image.root.open("wb") as fh:
            fh.truncate(size)
        builder.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                "hakvm-root",
                "-d",
                str(builder.rootfs),
                str(work_image.root),
            ]
        )
        manifest = {
            "key": key,
            "builder": BUILDER_VERSION,
            "suite": SUITE,
            "packages": list(PACKAGES),
            "repo_only": list(REPO_ONLY_PACKAGES),
            "kernel": kernel_version,
            "size": size,
            "build_seconds": round(time.monotonic() - started, 1),
        }
        work_image.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.copy(builder.log_path, work_image.directory / "build.log")
        if final.directory.exists():
            shutil.rmtree(final.directory)
        work_image.directory.rename(final.directory)
        for stale in (root / "images").iterdir():  # images of older recipes: 1-4 GiB each
            if stale.is_dir() and stale.name != key and not stale.name.startswith("."):
                shutil.rmtree(stale, ignore_errors=True)
        report("done", 1.0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _remove_stale_builds(images: pathlib.Path) -> None:
    """Remove work dirs of builds whose process is gone (killed mid-build)."""
    if not images.is_dir():
        return
    for work in images.glob(".build-*-*"):
        pid = work.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pathlib.Path(f"/proc/{pid}").exists():
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _counting(
    report: Callable[[str, float], None], label: str, start: float, end: float, expected: int
) -> Iterator[Callable[[str], None]]:
    """Turn a stream of apt/debootstrap lines into approximate progress."""
    count = 0

    def on_line(line: str) -> None:
        nonlocal count
        if line.startswith(("Get:", "I: Retrieving", "Unpacking", "Setting up", "I: Extracting")):
            count += 1
            fraction = start + (end - start) * min(count / expected, 0.99)
            report(f"{label}: {line[:60]}", fraction)

    yield on_line


def _configure(builder: _Builder) -> str:
    """Node-generic configuration; returns the installed kernel version."""
    rootfs = builder.rootfs
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageError("no kernel installed in the image")
    version = kernels[-1]
    for module in REQUIRED_MODULES:
        if not list((rootfs / "lib/modules" / version).rglob(f"{module}.ko*")):
            raise ImageError(f"kernel {version} has no {module} module")
    builder.write("etc/network/interfaces", INTERFACES)
    builder.write("etc/fstab", "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
    builder.write("etc/modules-load.d/hakvm.conf", "bonding\n")
    builder.write("etc/ssh/sshd_config.d/hakvm.conf", SSHD_CONFIG)
    builder.write(
        "etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf", SERIAL_AUTOLOGIN
    )
    # Nodes have no route out: no nameserver, and no upstream apt sources.
    builder.write("etc/resolv.conf", "# hakvm lab: no DNS, the nodes have no route out\n")
    builder.write("etc/apt/sources.list", "# hakvm lab: packages come from the lab repository\n")
    (rootfs / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    (rootfs / "etc/apt/apt.conf.d/99hakvm-keep").unlink(missing_ok=True)
    # Identity is per node, injected at `lab up`.
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    builder.write("etc/machine-id", "")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    builder.write("etc/hostname", "localhost\n")
    ssh_dir = rootfs / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    ssh_dir.chmod(0o700)
    # libvirt's default NAT network would add 192.168.122.0/24 and a route out.
    for path in (rootfs / "etc/libvirt/qemu/networks/autostart").glob("*.xml"):
        path.unlink()
    builder.chroot(["systemctl", "disable", "--no-reload", *DISABLED_UNITS])
    builder.write("etc/initramfs-tools/conf.d/hakvm.conf", "MODULES=list\n")
    builder.write("etc/initramfs-tools/modules", "".join(m + "\n" for m in INITRD_MODULES))
    builder.chroot(["update-initramfs", "-u", "-k", version])
    for unit in MASKED_UNITS:
        link = rootfs / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    for lists in (rootfs / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()
    return version
