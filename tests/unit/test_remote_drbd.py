"""The DRBD questions the node adapter asks (remote/drbd.py), against the shared fake node."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess

import pytest

from hakvm.remote import drbd
from hakvm.remote.connection import RemoteError
from hakvm.remote.facts import in_batch_shell
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


def _devices(dev: pathlib.Path, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess[str]:
    """The names script as the batch runs it (its subshell), by the real /bin/sh, on a
    made-up /dev."""
    command = ["/bin/sh", "-c", in_batch_shell(["sh", "-c", drbd.devices_script(str(dev))])]
    return subprocess.run(
        command, capture_output=True, text=True, env={"PATH": path}, check=False
    )


@pytest.mark.parametrize("layout", ["8.4", "9"])
def test_names_script_matches_each_udev_link_to_its_device_in_the_shell(
    tmp_path: pathlib.Path, layout: str
) -> None:
    dev = tmp_path / "a dev"  # a space: the directory is quoted, the globs are not
    (dev / "drbd" / "by-res").mkdir(parents=True)
    for minor in (0, 1, 10):
        (dev / f"drbd{minor}").touch()  # -ef compares inodes: any file does for a device
    by_res = dev / "drbd" / "by-res"
    if layout == "8.4":  # 65-drbd.rules: NAME -> ../../drbdN
        (by_res / "vm-a").symlink_to("../../drbd10")
        (by_res / "vm-b").symlink_to("../../drbd1")
        (by_res / "gone").symlink_to("../../drbd7")  # no such device: not a name
    else:  # NAME/VOLUME -> ../../../drbdN
        for name, volume, minor in (("vm-a", 0, 1), ("vm-a", 1, 10), ("vm-b", 0, 0)):
            (by_res / name).mkdir(exist_ok=True)
            (by_res / name / str(volume)).symlink_to(f"../../../drbd{minor}")
    result = _devices(dev)  # 0 only when a link matched: the fallback would fail (grep: 1)
    assert result.returncode == 0
    names = {10: "vm-a", 1: "vm-b"} if layout == "8.4" else {1: "vm-a", 0: "vm-b"}
    assert drbd.parse_device_names(result.stdout) == names


def test_names_script_without_live_links_asks_drbdadm_for_resource_and_minor_lines_only(
    tmp_path: pathlib.Path,
) -> None:
    dump = (DATA / "drbd-devices-lab.txt").read_text()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "drbdadm"  # the dump with a secret, as the real one prints it
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{dump}    shared-secret \"s3cret\";\nEOF\n")
    fake.chmod(0o755)
    dev = tmp_path / "dev"
    (dev / "drbd" / "by-res").mkdir(parents=True)
    (dev / "drbd" / "by-res" / "vm-a").symlink_to("../../drbd0")  # dangling: no device
    result = _devices(dev, f"{bin_dir}:/usr/bin:/bin")
    assert drbd.parse_device_names(result.stdout) == {0: "vm-a", 1: "vm-b"}
    assert "s3cret" not in result.stdout


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
