"""libvirt domain XML per VM, and the udev rule that pins the DRBD device nodes' baseline.

The domain file lands in /etc/hakvm/domains/<vm>.xml on both nodes and is NOT defined in
libvirt: Pacemaker's VirtualDomain agent owns the VM and starts it with `virsh create`
(a transient domain), so no node can start a VM behind the cluster's back (libvirt's own
autostart, `virsh start` after a reboot) while the peer runs it.

QEMU never runs as root. Both distributions' libvirt defaults already do the right thing:
QEMU runs as the unprivileged `libvirt-qemu` (Debian) / `qemu` (RHEL) user with
`dynamic_ownership = 1`, so hakvm does not manage qemu.conf (Debian 12's libvirt reads no
qemu.conf.d, and overwriting the package's conffile would fight every upgrade); `hakvm doctor`
should check that nobody set `user = "root"` there. Device access works in two layers:

* primary, libvirt `dynamic_ownership` (+ AppArmor/SELinux sVirt labels): when a domain
  starts or an incoming migration is prepared, libvirt chowns that VM's /dev/drbdN (or its
  qcow2 file) to the QEMU user, so each QEMU process can open only its own disk;
* baseline, the udev rule below: DRBD emits change uevents on role changes and udev
  re-applies rules then, so the device node is always reset to root:disk 0660. We never give
  the QEMU user a standing udev OWNER/GROUP on drbd*: that would let every VM's QEMU open
  every other VM's disk. QEMU keeps the descriptor it opened at start, so a udev reset while
  the VM runs does not disturb it.

`remember_owner` stays at its default: block devices' ownership xattrs live in each node's
own devtmpfs (nothing is shared between the nodes), and for qcow2 files on the failover XFS
libvirt discards stale records whose host boot time does not match (after a fence).
"""

from __future__ import annotations

import uuid

from lxml import etree

from hakvm.render.base import RenderContext, Rendered, RenderedFile
from hakvm.spec.derive import VmDerived
from hakvm.spec.models import DiskMode, Hypervisor, Vm

DOMAIN_DIR = "/etc/hakvm/domains"
VM_DATA_DIR = "/var/lib/hakvm"
UDEV_RULE_PATH = "/etc/udev/rules.d/90-hakvm-drbd.rules"
RENDERER = "libvirt"
# A fixed namespace so a VM's SMBIOS UUID is stable across renders, starts and migrations
# (guests that license or identify themselves by it see the same machine everywhere).
_UUID_NS = uuid.UUID("6f1c1b2e-6a55-4a8e-9a55-1b1e0f0c4b7d")


def domain_path(vm_name: str) -> str:
    return f"{DOMAIN_DIR}/{vm_name}.xml"


def qcow2_dir(vm_name: str) -> str:
    """Mount point of the VM's XFS (qcow2-on-xfs mode), managed by a Filesystem resource."""
    return f"{VM_DATA_DIR}/{vm_name}"


def qcow2_path(vm_name: str) -> str:
    return f"{qcow2_dir(vm_name)}/{vm_name}.qcow2"


def domain_uuid(cluster_name: str, vm_name: str) -> str:
    return str(uuid.uuid5(_UUID_NS, f"{cluster_name}/{vm_name}"))


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _disk(devices: etree._Element, vm: Vm, derived: VmDerived) -> None:
    if vm.disk.mode is DiskMode.BLOCK:
        disk = _sub(devices, "disk", type="block", device="disk")
        # cache=none (O_DIRECT) is what makes live migration safe: no guest write sits in the
        # source host's page cache when the destination takes over. io=native needs it.
        # discard=unmap passes TRIM through DRBD to the thin LV, so freed blocks are returned.
        _sub(disk, "driver", name="qemu", type="raw", cache="none", io="native", discard="unmap")
        _sub(disk, "source", dev=derived.device)
    else:
        # XFS on /dev/drbdN mounted at /var/lib/hakvm/<vm> by the Filesystem resource; XFS is
        # not a cluster filesystem, so this mode fails over by stop/start only.
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="qcow2", cache="none", io="native", discard="unmap")
        _sub(disk, "source", file=qcow2_path(vm.name))
    _sub(disk, "target", dev="vda", bus="virtio")


def domain_xml(ctx: RenderContext, vm: Vm) -> str:  # noqa: PLR0915 - one statement per element, in the domain XML's order
    spec = ctx.spec
    derived = ctx.derived.vms[vm.name]
    hardware = spec.cluster.hypervisor is Hypervisor.KVM

    root = etree.Element("domain", type=spec.cluster.hypervisor.value)
    _sub(root, "name", vm.name)
    _sub(root, "uuid", domain_uuid(spec.cluster.name, vm.name))
    kib = str(vm.memory // 1024)
    _sub(root, "memory", kib, unit="KiB")
    _sub(root, "currentMemory", kib, unit="KiB")
    _sub(root, "vcpu", str(vm.vcpus), placement="static")

    os_el = _sub(root, "os")
    # A fixed machine family on both nodes; libvirt expands it to a versioned type at start
    # and carries that to the destination on migration.
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    boot = {"disk": "hd", "cdrom": "cdrom", "network": "network"}[vm.boot.source]
    _sub(os_el, "boot", dev=boot)

    features = _sub(root, "features")
    _sub(features, "acpi")  # VirtualDomain stops a VM with an ACPI shutdown first
    _sub(features, "apic")
    if hardware:
        # host-model: migratable (libvirt computes a CPU both identical-model nodes offer),
        # unlike host-passthrough. TCG (the lab) keeps QEMU's default emulated CPU.
        _sub(root, "cpu", mode="host-model")
    _sub(root, "clock", offset="utc")

    # Pacemaker decides about restarts: a guest poweroff or crash ends the domain, the
    # monitor sees it and the cluster recovers it (restart, or move after migration-threshold).
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")

    devices = _sub(root, "devices")
    _disk(devices, vm, derived)
    if vm.boot.source == "cdrom" and vm.boot.cdrom_image is not None:
        cd = _sub(devices, "disk", type="file", device="cdrom")
        _sub(cd, "driver", name="qemu", type="raw")
        _sub(cd, "source", file=str(vm.boot.cdrom_image))
        _sub(cd, "target", dev="sda", bus="sata")  # q35 has no IDE
        _sub(cd, "readonly")
    for net, mac in zip(vm.networks, derived.macs, strict=True):
        iface = _sub(devices, "interface", type="bridge")
        _sub(iface, "mac", address=mac)
        _sub(iface, "source", bridge=net.bridge)
        _sub(iface, "model", type=net.model)
        if net.clean_traffic:
            # libvirt's nwfilter (ebtables/iptables rules per tap): the guest sends only from
            # its own MAC and from the first IPv4 address it uses (learned: libvirt's
            # CTRL_IP_LEARNING=any, again after each start or migration), IPv4 and ARP
            # only; no spoofed source, no 802.1Q frames into the host's VLANs.
            _sub(iface, "filterref", filter="clean-traffic")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if hardware:
        # Loopback only: reach it through an SSH tunnel, never from the network.
        graphics = _sub(devices, "graphics", type="vnc", port="-1", autoport="yes")
        graphics.set("listen", "127.0.0.1")
        _sub(graphics, "listen", type="address", address="127.0.0.1")
        video = _sub(devices, "video")
        _sub(video, "model", type="virtio")
    else:
        # The lab's nested TCG guests: serial console only, no USB, no balloon.
        _sub(devices, "controller", type="usb", model="none")
        _sub(devices, "memballoon", model="none")

    header = etree.Comment(
        f" Managed by hakvm (cluster {spec.cluster.name}): changes are overwritten. "
        "Started by Pacemaker (VirtualDomain, virsh create); never define it in libvirt. "
    )
    root.addprevious(header)
    text: str = etree.tostring(root.getroottree(), pretty_print=True, encoding="unicode")
    return text


def udev_rule() -> str:
    return (
        "# Managed by hakvm: changes are overwritten.\n"
        "# Baseline for DRBD device nodes, re-applied on every uevent (DRBD sends one per role\n"
        "# change): root:disk 0660, like any disk. libvirt (dynamic_ownership) hands a device\n"
        "# to the QEMU user only while its VM runs; the QEMU user must never get a standing\n"
        "# group or owner here, or every VM could open every other VM's disk.\n"
        'SUBSYSTEM=="block", KERNEL=="drbd[0-9]*", OWNER="root", GROUP="disk", MODE="0660"\n'
    )


def render(ctx: RenderContext) -> Rendered:
    files = [
        RenderedFile(path=domain_path(vm.name), content=domain_xml(ctx, vm), renderer=RENDERER)
        for vm in ctx.spec.vms
    ]
    files.append(RenderedFile(path=UDEV_RULE_PATH, content=udev_rule(), renderer=RENDERER))
    return {node.name: list(files) for node in ctx.spec.nodes}
