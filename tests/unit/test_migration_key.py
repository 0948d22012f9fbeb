"""The live-migration key opens only libvirt's tunnel on the peer (issue 16 item 9): its
authorized_keys line keeps `restrict` and `from=` and gets a forced command; that command,
run here by sh as sshd would run it, turns each request libvirt 9.0's ssh transport makes
into `virt-ssh-helper qemu:///system` and refuses anything else."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import asyncssh
import pytest

from hakvm.render import migration
from hakvm.render.base import RenderContext, Secrets
from hakvm.spec.validate import validate_file

REPO = Path(__file__).resolve().parents[2]
PUBLIC = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()

# What libvirt's client asks the peer to run (virNetClientSSHHelperCommand, libvirt 9.0,
# `qemu+ssh://node02-migration/system`), after sshd's own shell has removed one quoting level.
NC = ("if 'nc' -q 2>&1 | grep \"requires an argument\" >/dev/null 2>&1; then ARG=-q0;"
      "else ARG=;fi;'nc' $ARG -U /var/run/libvirt/libvirt-sock")  # fmt: skip
LIBVIRT_ASKS = {
    "auto": "sh -c 'which virt-ssh-helper 1>/dev/null 2>&1; if test $? = 0; then "
    f"    virt-ssh-helper 'qemu:///system'; else    {NC}; fi'",
    "netcat": f"sh -c '{NC}'",
    "native": "sh -c 'virt-ssh-helper 'qemu:///system''",
}


def _line(node: str = "node01") -> str:
    report = validate_file(REPO / "examples" / "lab.yaml")
    assert report.spec is not None and report.derived is not None
    ctx = RenderContext(report.spec, report.derived, Secrets.redacted())
    block = migration.authorized_keys_block(ctx, node, PUBLIC)
    (line,) = [x for x in block.splitlines() if "hakvm-migration@" in x]
    return line


def test_the_peer_accepts_the_key_only_from_its_peer_and_only_for_the_tunnel() -> None:
    line = _line("node01")
    key = " ".join(PUBLIC.split()[:2])
    assert line == (
        f'restrict,from="10.88.2.2",command="{migration.FORCED_COMMAND}" {key} '
        "hakvm-migration@lab"
    )
    assert '"' not in migration.FORCED_COMMAND  # it sits in command="..." unescaped
    assert 'from="10.88.2.1"' in _line("node02")  # the replication VLAN (bond0.20)


def _run_forced(asked: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The forced command as sshd runs it (the user's shell, -c), with a stand-in
    virt-ssh-helper that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / "virt-ssh-helper"
    helper.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/helper-ran"\n')
    helper.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SSH_ORIGINAL_COMMAND": asked}
    return subprocess.run(
        ["sh", "-c", migration.FORCED_COMMAND], env=env, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("proxy", sorted(LIBVIRT_ASKS))
def test_libvirts_tunnel_request_becomes_the_helper(proxy: str, tmp_path: Path) -> None:
    done = _run_forced(LIBVIRT_ASKS[proxy], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "helper-ran").read_text() == "qemu:///system\n"


@pytest.mark.parametrize("asked", ["true", "", "sh", "cat /etc/shadow", "touch {pwned}"])
def test_any_other_command_is_refused(asked: str, tmp_path: Path) -> None:
    done = _run_forced(asked.format(pwned=tmp_path / "pwned"), tmp_path)
    assert done.returncode == 1
    assert "opens only the libvirt tunnel" in done.stderr
    assert not (tmp_path / "helper-ran").exists() and not (tmp_path / "pwned").exists()


def test_a_command_naming_the_helper_still_runs_only_the_helper(tmp_path: Path) -> None:
    """The request is matched, never run: what runs is the helper on the system URI."""
    done = _run_forced(f"touch {tmp_path / 'pwned'}; virt-ssh-helper qemu:///session", tmp_path)
    assert done.returncode == 0
    assert (tmp_path / "helper-ran").read_text() == "qemu:///system\n"
    assert not (tmp_path / "pwned").exists()
