"""Real-tool check of a rendered corosync.conf: `corosync -t` (parse and validate, then exit).

corosync -t needs the configured keyfile to exist and one nodelist address to be local. The
check runs in a throw-away network namespace holding the local node's addresses, with a
scratch directory bind-mounted over /etc/corosync in a private mount namespace, so the
rendered bytes are tested unchanged (keyfile path included) and the host is never touched.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from tests.render.checkers.netns import netns

COROSYNC = "corosync"
CONF_DIR = "/etc/corosync"


def node_addresses(text: str, node: str | None = None) -> list[str]:
    """The ring addresses of `node` (default: the first node of the nodelist)."""
    blocks = re.findall(r"^\s*node\s*\{(.*?)^\s*\}", text, flags=re.M | re.S)
    for block in blocks:
        name = re.search(r"^\s*name:\s*(\S+)", block, flags=re.M)
        if node is None or (name is not None and name.group(1) == node):
            return re.findall(r"^\s*ring\d+_addr:\s*(\S+)", block, flags=re.M)
    raise AssertionError(f"no nodelist entry for {node or 'any node'} in the corosync.conf")


def _run(text: str, local: list[str]) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="hakvm-corosync-") as tmp:
        conf_dir = Path(tmp)
        (conf_dir / "corosync.conf").write_text(text)
        key = conf_dir / "authkey"
        key.write_bytes(bytes(range(256)))  # a 256-byte key; its value does not matter here
        key.chmod(0o400)
        script = f'mount --bind "$1" {CONF_DIR} && exec {COROSYNC} -t -c {CONF_DIR}/corosync.conf'
        with netns(local) as ns:
            return subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                    "sh",
                    str(conf_dir),
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )


def _with_stderr_logging(text: str) -> str:
    if re.search(r"^\s*to_stderr:", text, flags=re.M):
        return re.sub(r"^(\s*)to_stderr:.*$", r"\1to_stderr: yes", text, flags=re.M)
    return re.sub(r"^logging\s*\{$", "logging {\n    to_stderr: yes", text, flags=re.M)


def check_corosync_conf(text: str, node: str | None = None) -> None:
    """Raise AssertionError (with corosync's messages) unless `corosync -t` accepts `text`.

    `node` is the node the check pretends to be (its ring addresses are made local); default
    the first node of the nodelist. The verdict is on the unchanged text; corosync -t logs
    semantic errors only where the config's logging section says (syslog for ours), so on a
    failure the check is re-run with `to_stderr: yes` just to show the reason.
    """
    local = node_addresses(text, node)
    result = _run(text, local)
    if result.returncode == 0 and not result.stderr.strip():
        return
    detail = result.stderr + result.stdout
    if not detail.strip():
        rerun = _run(_with_stderr_logging(text), local)
        detail = rerun.stderr + rerun.stdout or "(no message)"
    raise AssertionError(f"corosync -t rejected the config: exit {result.returncode}\n{detail}")
