"""The carried resource-agents fix (render/agents.py): its files, and the shim sourced over
Debian 12's own ocf-shellfuncs (realtool: resource-agents installed, root for a private
mount namespace whose /run is its own: nothing of the host's is touched)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hakvm.render import agents
from hakvm.render.base import RenderContext, Secrets
from hakvm.spec.derive import derive
from hakvm.spec.models import ClusterSpec, OsFamily
from tests.render.examples import example_data


def _ctx(os_family: str = "debian12") -> RenderContext:
    data = example_data("lab")
    data["cluster"]["os"] = os_family
    spec = ClusterSpec.model_validate(data)
    return RenderContext(spec, derive(spec, None), Secrets.redacted())


def test_debian_nodes_get_the_shim_and_pacemakers_environment() -> None:
    rendered = agents.render(_ctx())
    for node in ("node01", "node02"):
        files = {f.path: f for f in rendered[node]}
        assert set(files) == {agents.SHIM, agents.PACEMAKER_DROP_IN}
        drop_in = files[agents.PACEMAKER_DROP_IN].content
        assert f"Environment=OCF_FUNCTIONS_DIR={agents.SHIM_DIR}\n" in drop_in
        assert files[agents.SHIM].mode == 0o644  # sourced, never run


def test_other_systems_get_nothing() -> None:
    assert OsFamily("rhel9") is OsFamily.RHEL9
    assert agents.render(_ctx("rhel9")) == {}


PACKAGED = Path(agents.PACKAGED_DIR) / "ocf-shellfuncs"
# Sources the shim the way VirtualDomain does (OCF_FUNCTIONS_DIR from Pacemaker's
# environment), then calls systemd_drop_in twice with the same line and once with another;
# `systemctl` is a function that counts reloads. /run is a private tmpfs.
SCRIPT = """
mount -t tmpfs none /run && mkdir -p /run/systemd/system
reloads=0
systemctl() { reloads=$((reloads + 1)); }
OCF_ROOT=/usr/lib/ocf; export OCF_ROOT
OCF_FUNCTIONS_DIR=$SHIM_DIR
. "$OCF_FUNCTIONS_DIR/ocf-shellfuncs"
echo "dir=$OCF_FUNCTIONS_DIR"
command -v ocf_log >/dev/null && echo "packaged functions: yes"
systemd_drop_in 99-VirtualDomain-libvirt After libvirtd.service
systemd_drop_in 99-VirtualDomain-libvirt After libvirtd.service
echo "reloads after the same line twice: $reloads"
systemd_drop_in 99-VirtualDomain-libvirt After other.service
echo "reloads after a new line: $reloads"
cat /run/systemd/system/resource-agents-deps.target.d/99-VirtualDomain-libvirt.conf
"""


@pytest.mark.realtool
def test_the_shim_over_the_packaged_library_reloads_only_for_a_new_line(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (a private mount namespace)")
    if not PACKAGED.exists():
        pytest.skip("resource-agents is not installed")
    shim_dir = tmp_path / "ocf"
    shim_dir.mkdir()
    (shim_dir / "ocf-shellfuncs").write_text(agents.SHIM_TEXT)
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", SCRIPT],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SHIM_DIR": str(shim_dir)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"dir={agents.PACKAGED_DIR}",  # set back: what an agent sources next is packaged
        "packaged functions: yes",
        "reloads after the same line twice: 1",  # the packaged 4.12 function: 2
        "reloads after a new line: 2",
        "[Unit]",
        "After=other.service",
    ]
