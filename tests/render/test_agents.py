"""The carried resource-agents fix (render/agents.py): the diversion script on a scratch
dpkg database, and the override over this machine's own resource-agents 4.12, sourced the
way VirtualDomain and the ocf:pacemaker agents source it (realtool: root, for a private
mount namespace where the library directory and /run are copies: nothing of the host's is
touched)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hakvm.render import agents
from hakvm.render.base import RenderContext, Secrets
from hakvm.spec.derive import derive
from hakvm.spec.models import ClusterSpec
from tests.render.examples import example_data

HEARTBEAT = Path(agents.LIBRARY).parent


def _ctx(os_family: str = "debian12") -> RenderContext:
    data = example_data("lab")
    data["cluster"]["os"] = os_family
    spec = ClusterSpec.model_validate(data)
    return RenderContext(spec, derive(spec, None), Secrets.redacted())


def test_debian_nodes_get_the_override_and_other_systems_nothing() -> None:
    rendered = agents.render(_ctx())
    for node in ("node01", "node02"):
        (override,) = rendered[node]
        assert (override.path, override.mode) == (agents.LIBRARY, 0o644)
        assert f". {agents.PACKAGED}\n" in override.content
    assert agents.render(_ctx("rhel9")) == {}


def _require(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (a private mount namespace)")
    for tool in ("unshare", *tools):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not Path(agents.LIBRARY).is_file() or Path(agents.PACKAGED).exists():
        pytest.skip("resource-agents is not installed here (or already diverted)")


@pytest.mark.realtool
def test_the_diversion_keeps_the_packaged_library_and_is_done_once(tmp_path: Path) -> None:
    _require("dpkg-divert")
    admin, bin_dir, lib = tmp_path / "admin", tmp_path / "bin", tmp_path / "ocf-shellfuncs"
    admin.mkdir()
    (admin / "diversions").touch()
    bin_dir.mkdir()
    # dpkg-divert on a scratch database, never the host's.
    wrapper = bin_dir / "dpkg-divert"
    real = shutil.which("dpkg-divert")
    wrapper.write_text(f'#!/bin/sh\nexec {real} --admindir {admin} "$@"\n')
    wrapper.chmod(0o755)
    lib.write_text("packaged\n")
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def divert(check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["sh", "-c", agents.DIVERT_SCRIPT, "sh", str(lib)]
        return subprocess.run(argv, check=check, env=env, capture_output=True, text=True,
                              timeout=30)  # fmt: skip

    def dpkg_divert(*args: str) -> str:
        return subprocess.run([str(wrapper), *args], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip

    divert()
    assert Path(f"{lib}.distrib").read_text() == "packaged\n"
    assert lib.read_text() == "packaged\n"  # never moved away: agents always find a library
    lib.write_text("override\n")  # what apply writes next
    divert()  # an update of the override: the packaged copy stays the packaged one
    assert Path(f"{lib}.distrib").read_text() == "packaged\n"
    assert dpkg_divert("--list") == f"local diversion of {lib} to {lib}.distrib\n"
    # The diversion removed by hand, the override left in place: copying it would make the
    # override source itself (every shell agent failing). Refused, nothing changed.
    dpkg_divert("--local", "--no-rename", "--remove", str(lib))
    lib.write_text(agents.OVERRIDE_TEXT)
    refused = divert(check=False)
    assert refused.returncode == 1 and "override but not diverted" in refused.stderr
    assert Path(f"{lib}.distrib").read_text() == "packaged\n"
    # Diverted somewhere else (an admin's own diversion): refused too.
    lib.write_text("packaged\n")
    dpkg_divert("--local", "--no-rename", "--divert", f"{lib}.theirs", "--add", str(lib))
    refused = divert(check=False)
    assert refused.returncode == 1 and f"diverted to {lib}.theirs" in refused.stderr


# In a private mount namespace: the library directory replaced by a copy where the packaged
# library is ocf-shellfuncs.distrib and the override is ocf-shellfuncs (what the diversion
# leaves), /run a tmpfs; `systemctl` a function counting reloads.
SCRIPT = """
set -e
cp -a "$HEARTBEAT/." "$COPY/"
mv "$COPY/ocf-shellfuncs" "$COPY/ocf-shellfuncs.distrib"
cp "$OVERRIDE" "$COPY/ocf-shellfuncs"
mount --bind "$COPY" "$HEARTBEAT"
mount -t tmpfs none /run && mkdir -p /run/systemd/system
set +e
OCF_ROOT=/usr/lib/ocf; export OCF_ROOT
# An ocf:pacemaker agent (it sources resource.d/heartbeat/.ocf-shellfuncs) and VirtualDomain.
/usr/lib/ocf/resource.d/pacemaker/Dummy meta-data >/dev/null; echo "Dummy meta-data: $?"
/usr/lib/ocf/resource.d/heartbeat/VirtualDomain meta-data >/dev/null
echo "VirtualDomain meta-data: $?"
reloads=0
systemctl() { reloads=$((reloads + 1)); }
: ${OCF_FUNCTIONS_DIR=${OCF_ROOT}/lib/heartbeat}
. ${OCF_FUNCTIONS_DIR}/ocf-shellfuncs
command -v ocf_log >/dev/null && echo "packaged functions: yes"
systemd_drop_in 99-VirtualDomain-libvirt After libvirtd.service
systemd_drop_in 99-VirtualDomain-libvirt After libvirtd.service
echo "reloads after the same line twice: $reloads"
systemd_drop_in 99-VirtualDomain-libvirt After other.service
echo "reloads after a new line: $reloads"
"""


def _sourced(tmp_path: Path, override: str) -> list[str]:
    copy = tmp_path / "heartbeat"
    copy.mkdir()
    (tmp_path / "override").write_text(override)
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", SCRIPT],
        capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HEARTBEAT": str(HEARTBEAT),
             "COPY": str(copy), "OVERRIDE": str(tmp_path / "override")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.realtool
def test_the_override_over_the_packaged_library(tmp_path: Path) -> None:
    _require()
    if not Path("/usr/lib/ocf/resource.d/pacemaker/Dummy").exists():
        pytest.skip("pacemaker's own agents are not installed")
    assert _sourced(tmp_path, agents.OVERRIDE_TEXT) == [
        "Dummy meta-data: 0",  # OCF_FUNCTIONS_DIR untouched: ocf:pacemaker agents still work
        "VirtualDomain meta-data: 0",
        "packaged functions: yes",
        "reloads after the same line twice: 1",
        "reloads after a new line: 2",
    ]


@pytest.mark.realtool
def test_the_packaged_library_alone_reloads_every_time(tmp_path: Path) -> None:
    """What the override fixes, on the same setup (the test above can fail)."""
    _require()
    lines = _sourced(tmp_path, f". {agents.PACKAGED}\n")
    assert lines[-2:] == ["reloads after the same line twice: 2", "reloads after a new line: 3"]
