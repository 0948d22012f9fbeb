"""libvirt renderer: domain XML content rules (fast) and virt-xml-validate (realtool)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from lxml import etree

from hakvm.render import libvirt
from hakvm.render.base import RenderContext
from tests.render.checkers.libvirt import check_domain_xml
from tests.render.examples import example_data, render_context


def _cdrom_lab() -> dict[str, Any]:
    data = copy.deepcopy(example_data("lab"))
    data["vms"][0]["boot"] = {"source": "cdrom", "cdrom_image": "/srv/iso/install.iso"}
    data["vms"][1]["boot"] = {"source": "network"}
    data["vms"][1]["networks"].append({"bridge": "br1", "model": "e1000"})
    return data


def _domains(ctx: RenderContext) -> dict[str, etree._Element]:
    rendered = libvirt.render(ctx)
    files = rendered[ctx.spec.nodes[0].name]
    return {f.path: etree.fromstring(f.content.encode()) for f in files if f.path.endswith(".xml")}


def test_both_nodes_get_identical_files() -> None:
    rendered = libvirt.render(render_context(example_data("lab")))
    a, b = (rendered[n] for n in ("node01", "node02"))
    assert a == b
    assert {f.path for f in a} == {
        "/etc/hakvm/domains/vm-a.xml",
        "/etc/hakvm/domains/vm-b.xml",
        "/etc/udev/rules.d/90-hakvm-drbd.rules",
    }
    assert all(f.mode == 0o644 for f in a)


def test_deterministic() -> None:
    assert libvirt.render(render_context(example_data("seed"))) == libvirt.render(
        render_context(example_data("seed"))
    )


def test_block_mode_disk_and_lab_minimal() -> None:
    ctx = render_context(example_data("lab"))
    dom = _domains(ctx)["/etc/hakvm/domains/vm-a.xml"]
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "vm-a"
    assert dom.findtext("memory") == str(32 * 1024)
    assert dom.find("memory").get("unit") == "KiB"  # type: ignore[union-attr]
    assert dom.findtext("on_poweroff") == "destroy"
    assert dom.findtext("on_crash") == "destroy"
    assert dom.findtext("on_reboot") == "restart"
    disk = dom.find("devices/disk[@device='disk']")
    assert disk is not None and disk.get("type") == "block"
    driver = disk.find("driver")
    assert driver is not None
    assert (driver.get("type"), driver.get("cache"), driver.get("io")) == ("raw", "none", "native")
    minor = ctx.derived.vms["vm-a"].minor
    assert disk.find("source").get("dev") == f"/dev/drbd{minor}"  # type: ignore[union-attr]
    mac = dom.find("devices/interface/mac")
    assert mac is not None and mac.get("address") == ctx.derived.vms["vm-a"].macs[0]
    assert dom.find("devices/interface/source").get("bridge") == "br0"  # type: ignore[union-attr]
    assert dom.find("devices/graphics") is None  # lab: serial console only
    assert dom.find("devices/serial").get("type") == "pty"  # type: ignore[union-attr]
    assert dom.find("cpu") is None  # TCG: no host-model


def test_qcow2_mode_and_hardware_extras() -> None:
    dom = _domains(render_context(example_data("seed")))["/etc/hakvm/domains/vm1.xml"]
    assert dom.get("type") == "kvm"
    disk = dom.find("devices/disk[@device='disk']")
    assert disk is not None and disk.get("type") == "file"
    assert disk.find("source").get("file") == "/var/lib/hakvm/vm1/vm1.qcow2"  # type: ignore[union-attr]
    driver = disk.find("driver")
    assert driver is not None and (driver.get("type"), driver.get("cache")) == ("qcow2", "none")
    graphics = dom.find("devices/graphics")
    assert graphics is not None and graphics.get("listen") == "127.0.0.1"
    assert dom.find("cpu").get("mode") == "host-model"  # type: ignore[union-attr]


def test_boot_devices_and_cdrom_readonly() -> None:
    doms = _domains(render_context(_cdrom_lab()))
    a, b = doms["/etc/hakvm/domains/vm-a.xml"], doms["/etc/hakvm/domains/vm-b.xml"]
    assert a.find("os/boot").get("dev") == "cdrom"  # type: ignore[union-attr]
    cd = a.find("devices/disk[@device='cdrom']")
    assert cd is not None and cd.find("readonly") is not None
    assert cd.find("source").get("file") == "/srv/iso/install.iso"  # type: ignore[union-attr]
    assert b.find("os/boot").get("dev") == "network"  # type: ignore[union-attr]
    models = [m.get("type") for m in b.iterfind("devices/interface/model")]
    assert models == ["virtio", "e1000"]


def test_header_comment_and_uuid_stable() -> None:
    ctx = render_context(example_data("lab"))
    text = libvirt.domain_xml(ctx, ctx.spec.vms[0])
    assert text.startswith("<!-- Managed by hakvm")
    # VirtualDomain reads the name with sed, one element per line: keep it that way.
    assert "\n  <name>vm-a</name>\n" in text
    assert libvirt.domain_uuid("lab", "vm-a") != libvirt.domain_uuid("lab", "vm-b")


def test_udev_rule_pins_root_disk_baseline() -> None:
    rule = libvirt.udev_rule()
    assert 'KERNEL=="drbd[0-9]*"' in rule
    assert 'OWNER="root"' in rule and 'GROUP="disk"' in rule and 'MODE="0660"' in rule
    assert "libvirt-qemu" not in rule.split("\n")[-2]


@pytest.mark.realtool
@pytest.mark.parametrize("example", ["lab", "seed", "cdrom"])
def test_virt_xml_validate(example: str) -> None:
    data = _cdrom_lab() if example == "cdrom" else example_data(example)
    ctx = render_context(data)
    for vm in ctx.spec.vms:
        check_domain_xml(libvirt.domain_xml(ctx, vm))


@pytest.mark.realtool
def test_checker_rejects_broken_domain() -> None:
    ctx = render_context(example_data("lab"))
    text = libvirt.domain_xml(ctx, ctx.spec.vms[0])
    broken = text.replace("<on_crash>destroy</on_crash>", "<on_crash>explode</on_crash>")
    assert broken != text
    with pytest.raises(AssertionError, match="virt-xml-validate"):
        check_domain_xml(broken)
    with pytest.raises(AssertionError):
        check_domain_xml(text.replace('type="block"', 'type="blok"'))
