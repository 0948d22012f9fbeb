"""Fact parsing replayed from a real batch recorded on a deployed lab node (node01 running
vm-a, both DRBD resources dual-primary and UpToDate). Recorded with `batch_argv`, managed
paths limited to non-secret files."""

from __future__ import annotations

import io
import pathlib
import tarfile

import pytest

from hakvm.remote.facts import (
    NodeFacts,
    batch_argv,
    fact_commands,
    facts_from_batch,
    parse_batch,
    parse_files,
    parse_services,
)
from hakvm.remote.pacemaker import parse_crm_mon

DATA = pathlib.Path(__file__).parent / "data"
PATHS = ["/etc/hosts", "/etc/network/interfaces.d/hakvm", "/etc/hakvm/no-such-file"]


@pytest.fixture(scope="module")
def node01() -> NodeFacts:
    batch = parse_batch((DATA / "facts-node01.b64").read_text())
    return facts_from_batch(NodeFacts("node01"), batch, PATHS, {0: "vm-a", 1: "vm-b"})


def test_recorded_batch_gives_every_fact(node01: NodeFacts) -> None:
    assert node01.os_id == "debian"
    assert {"pacemaker", "corosync", "drbd-utils"} <= node01.packages
    assert node01.addresses["br0"] == ["10.88.0.1/24"]
    assert ("hakvm", "drbdpool") in node01.logical_volumes
    assert node01.logical_volumes[("hakvm", "drbdpool")].is_thin_pool
    assert node01.logical_volumes[("hakvm", "vm-a")].pool == "drbdpool"
    assert node01.services_active["pacemaker"] and node01.services_enabled["corosync"]
    assert node01.domains == {"vm-a": "running"}
    drbd = node01.drbd["vm-a"]
    assert (drbd.connection, drbd.disk, drbd.peer_disk) == ("Connected", "UpToDate", "UpToDate")
    assert node01.cib is not None and "<cib " in node01.cib
    assert node01.crm_mon is not None
    assert parse_crm_mon(node01.crm_mon).resources["vm-a"].active_on == ["node01"]


def test_recorded_files_keep_content_and_mode(node01: NodeFacts) -> None:
    hosts = node01.files["/etc/hosts"]
    assert hosts is not None and hosts.mode == 0o644
    assert b"# BEGIN hakvm" in hosts.content or b"node02" in hosts.content
    assert node01.files["/etc/hakvm/no-such-file"] is None


def test_failed_command_reads_as_empty() -> None:
    batch = parse_batch((DATA / "facts-node01.b64").read_text())
    # drbd-utils 9 cannot ask an 8.4 kernel for JSON: exit 20, /proc/drbd is used instead.
    assert batch["drbd_json"][0] != 0
    facts = facts_from_batch(NodeFacts("x"), {"crm_mon": (1, b"<xml/>")}, [], {})
    assert facts.crm_mon is None and facts.packages == set()


def test_qemu_capability_cache_fact() -> None:
    def cached(answer: tuple[int, bytes] | None) -> bool | None:
        batch = {} if answer is None else {"qemu_caps": answer}
        return facts_from_batch(NodeFacts("x"), batch, [], {}).qemu_caps_cached

    xml = b"/var/cache/libvirt/qemu/capabilities/3c76bc41d59c0c73.xml\n"
    assert cached((0, xml)) is True
    assert cached((0, b"")) is False  # libvirt installed, never probed
    assert cached((1, b"")) is False  # no cache directory: libvirt not even installed
    assert cached(None) is None  # recorded before hakvm asked


def test_batch_argv_quotes_each_command_once() -> None:
    argv = batch_argv([("a", ["echo", "it's; rm -rf /"])])
    assert argv[:2] == ["sh", "-c"]
    assert argv[-2:] == ["a", "echo 'it'\"'\"'s; rm -rf /'"]


def test_parse_files_mode_from_tar() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("/etc/corosync/authkey")
        info.mode = 0o400
        info.size = 3
        tar.addfile(info, io.BytesIO(b"key"))
    files = parse_files(buf.getvalue(), ["/etc/corosync/authkey", "/etc/absent"])
    authkey = files["/etc/corosync/authkey"]
    assert authkey is not None and (authkey.mode, authkey.content) == (0o400, b"key")
    assert files["/etc/absent"] is None


def test_parse_services_missing_unit_is_inactive_and_disabled() -> None:
    text = "Id=nosuch.service\nActiveState=inactive\nUnitFileState=\n\n" + (
        "Id=libvirtd.socket\nActiveState=active\nUnitFileState=enabled\n"
    )
    active, enabled = parse_services(text)
    assert active["nosuch"] is False and enabled["nosuch"] is False
    # libvirtd is socket-activated on Debian: a listening socket counts as running.
    assert active["libvirtd"] and enabled["libvirtd"]


def test_the_cib_on_disk_and_the_disks_are_facts_whatever_pacemaker_does() -> None:
    names = [name for name, _ in fact_commands([])]
    assert {"cib_disk", "lsblk", "pvs", "disk_links"} <= set(names)
    batch = {"cib": (1, b""), "cib_disk": (0, b"<cib/>\n")}  # Pacemaker stopped
    facts = facts_from_batch(NodeFacts("x"), batch, [], {})
    assert (facts.cib, facts.cib_on_disk) == (None, "<cib/>\n")
    (lsblk,) = [argv for name, argv in fact_commands([]) if name == "lsblk"]
    assert lsblk[:3] == ["lsblk", "--json", "-b"] and "MOUNTPOINTS" in lsblk[-1]
