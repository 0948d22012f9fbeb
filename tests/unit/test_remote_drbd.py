"""The DRBD questions the node adapter asks (remote/drbd.py), against the shared fake node."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess

import pytest

from hakvm.remote import drbd
from hakvm.remote.connection import RemoteError
from tests.unit.fakes import FakeNode


@pytest.mark.parametrize(("dstate", "ok"), [("Unconfigured", True), ("UpToDate", False)])
def test_drbd_down_accepts_only_a_resource_already_down(dstate: str, ok: bool) -> None:
    node = FakeNode("node01").on("drbdadm", out=dstate + "\n")
    node.on("drbdadm", "down", rc=10, err="State change failed: Device is held open")
    if ok:
        asyncio.run(drbd.down(node, "vm-a"))
    else:
        with pytest.raises(RemoteError, match="held open"):
            asyncio.run(drbd.down(node, "vm-a"))


DATA = pathlib.Path(__file__).parent / "data"


def test_resource_names_from_udev_links_as_recorded_and_from_the_dump_without_them() -> None:
    # Recorded on the lab (DRBD 8.4, drbd-utils 9): `find /dev/drbd/by-res ... -printf '%P %l'`.
    by_res = (DATA / "drbd-by-res-lab.txt").read_text()
    assert drbd.parse_device_names(by_res) == {0: "vm-a", 1: "vm-b"}
    # DRBD 9's links carry the volume: the first one names the resource.
    nine = "vm-a/1 ../../../drbd7\nvm-a/0 ../../../drbd3\nvm-b/0 ../../../drbd4\n"
    assert drbd.parse_device_names(nine) == {3: "vm-a", 4: "vm-b"}
    # No udev links: the drbdadm dump lines (the lab's rendered configuration) say the same.
    dump = (DATA / "drbd-devices-lab.txt").read_text()
    assert drbd.parse_device_names(dump) == drbd.parse_dump_minors(dump)
    assert drbd.parse_device_names(dump) == {0: "vm-a", 1: "vm-b"}


@pytest.mark.parametrize(("proc_drbd", "asks_drbdsetup"), [
    ("version: 8.4.11 (api:1/proto:86-101)\n", False),
    ("version: 9.2.4 (api:2/proto:86-122)\n", True),
    (None, True),  # no module loaded: drbdsetup says so
])  # fmt: skip
def test_drbd9_status_is_asked_only_off_84(
    tmp_path: pathlib.Path, proc_drbd: str | None, asks_drbdsetup: bool
) -> None:
    proc = tmp_path / "drbd"
    if proc_drbd is not None:
        proc.write_text(proc_drbd)
    (tmp_path / "drbdsetup").write_text("#!/bin/sh\necho asked \"$@\"\n")
    (tmp_path / "drbdsetup").chmod(0o755)
    script = drbd.DRBD9_JSON.replace("/proc/drbd", str(proc))
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    run = subprocess.run(["sh", "-c", script], check=True, capture_output=True, text=True, env=env)
    out = run.stdout
    assert out == ("asked status --json\n" if asks_drbdsetup else "")
