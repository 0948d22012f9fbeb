"""Real-tool check of rendered DRBD configuration: `drbdadm dump all`.

The parser is chosen as on a node: drbd-utils 9 hands an 8.4 kernel to its `drbdadm-84`
personality (8.4 grammar) and parses DRBD 9 configs itself. The kernel generation is set
with drbdadm's `DRBD_DRIVER_VERSION_OVERRIDE` (so the host's own module, or none, does not
matter). drbdadm checks that the host it runs on is one of the `on` sections and owns that
section's address: the hostname is faked with drbdadm's `__DRBD_NODE__` override and the
address is put on `lo` of a throw-away network namespace.

Limit: drbdadm-84 checks keywords, structure and clashes (minors, address:port), but leaves
option *values* to drbdsetup, which needs the kernel module; drbdadm 9 checks values too.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from hakvm.render.base import RenderedFile
from tests.render.checkers.netns import netns

DRBDADM = "drbdadm"
DRBDADM_84 = "/usr/lib/drbd/drbdadm-84"  # what drbdadm runs for an 8.4 kernel
# DRBD generation -> the kernel module version drbdadm is told it drives (8.4.11: Debian 12).
KERNEL_VERSION = {"8.4": "8.4.11", "9": "9.2.0"}

# stderr lines drbdadm prints on every run here, which are not findings about the config.
_NOISE = (
    re.compile(r"^\s*$"),
    re.compile(r"^\s*found __DRBD_NODE__ in environment$"),
    re.compile(r"^\s*PRETENDING that I am >>.*<<$"),
    re.compile(r"^sh: \d+: modinfo: not found$"),  # no kmod on a test host: harmless
    re.compile(r"^modinfo: ERROR: Module drbd not found\.$"),
)


def local_addresses(texts: Iterable[str], hostname: str) -> list[str]:
    """The addresses of `hostname`'s `on` sections, across all the resources."""
    found = []
    pattern = rf"\bon\s+{re.escape(hostname)}\s*\{{([^}}]*)\}}"
    for text in texts:
        for block in re.findall(pattern, text):
            found += re.findall(r"\baddress\s+(?:ipv4\s+)?([0-9.]+):\d+", block)
    return found


def _brace_balance(text: str) -> int:
    """Open minus closed braces, outside comments and quoted strings."""
    depth = 0
    for line in text.splitlines():
        code = re.sub(r'"[^"]*"', '""', line).split("#", 1)[0]
        depth += code.count("{") - code.count("}")
    return depth


def check_drbd_config(
    files: Mapping[str, str],
    *,
    hostname: str,
    version: str,
    command: Sequence[str] = ("dump", "all"),
) -> str:
    """Raise AssertionError (with drbdadm's stderr) unless drbdadm accepts the files.
    (`command`: another drbdadm command, say a dry run `-d attach vm-a`; its stdout is returned.)

    `files` maps a file name under /etc/drbd.d (`global_common.conf`, `<vm>.res`) to its
    text; they are included the way the packaged /etc/drbd.conf does. Any stderr output that
    is not the known noise counts as a failure too (drbdadm warns on deprecated syntax), and
    so does a file whose braces do not balance (drbdadm closes open sections at the end of
    an included file without a word).
    Returns drbdadm's dump (the merged configuration, as drbdadm understood it).
    `version` is the DRBD kernel generation, "8.4" or "9" (`hakvm.render.drbd.drbd_version`).
    """
    if version not in KERNEL_VERSION:
        raise ValueError(f"DRBD version {version!r}: expected one of {sorted(KERNEL_VERSION)}")
    unbalanced = [name for name, text in files.items() if _brace_balance(text) != 0]
    if unbalanced:
        raise AssertionError(f"unbalanced braces in {', '.join(sorted(unbalanced))}")
    with tempfile.TemporaryDirectory(prefix="hakvm-drbd-") as tmp:
        root = Path(tmp)
        drbd_d = root / "drbd.d"
        drbd_d.mkdir()
        for name, text in files.items():
            (drbd_d / os.path.basename(name)).write_text(text)
        conf = root / "drbd.conf"
        includes = []
        if "global_common.conf" in {os.path.basename(n) for n in files}:
            includes.append(f'include "{drbd_d}/global_common.conf";')
        includes.append(f'include "{drbd_d}/*.res";')
        conf.write_text("\n".join(includes) + "\n")
        local = local_addresses(files.values(), hostname)
        with netns(local) as ns:
            result = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "env",
                    f"__DRBD_NODE__={hostname}",
                    f"DRBD_DRIVER_VERSION_OVERRIDE={KERNEL_VERSION[version]}",
                    DRBDADM,
                    "-c",
                    str(conf),
                    *command,
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
    findings = [
        line for line in result.stderr.splitlines() if not any(p.match(line) for p in _NOISE)
    ]
    if result.returncode != 0 or findings:
        raise AssertionError(
            f"drbdadm (DRBD {version}) dump all rejected the config on {hostname}: "
            f"exit {result.returncode}\n" + "\n".join(findings)
        )
    return result.stdout


def check_drbd_files(files: Sequence[RenderedFile], *, hostname: str, version: str) -> str:
    """`check_drbd_config` on one node's rendered files (those under /etc/drbd.d are used)."""
    texts = {
        os.path.basename(f.path): f.content for f in files if f.path.startswith("/etc/drbd.d/")
    }
    return check_drbd_config(texts, hostname=hostname, version=version)
