"""Real-tool checks of the rendered firewall.

- nftables (debian12): `nft -c -f FILE` (parse and check against the kernel without
  committing); as root, the file is also really loaded, twice (the re-load idiom must work
  on a live table), into a throw-away network namespace, and listed back.
- the systemd unit that loads it: `systemd-analyze verify` (its warnings are errors here).
- firewalld (rhel9): firewalld's own zone reader (`firewall.core.io.zone.zone_reader`, the
  python3-firewall package, run by the system python) parses the zone and checks its
  config; elements firewalld would ignore are caught by comparing what it parsed with the
  XML.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from lxml import etree

from tests.render.checkers.netns import netns

NFT = "nft"
SYSTEMD_ANALYZE = "systemd-analyze"
SYSTEM_PYTHON = "/usr/bin/python3"


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install {package})")


def check_nftables(text: str, table: str = "hakvm") -> str:
    """Raise AssertionError (with nft's stderr) unless nft accepts `text`.

    Returns `nft list table inet <table>` after a real load (as root), else "".
    """
    _require(NFT, "nftables")
    with tempfile.TemporaryDirectory(prefix="hakvm-nft-") as tmp:
        path = Path(tmp) / "hakvm.nft"
        path.write_text(text)
        checked = subprocess.run(
            [NFT, "-c", "-f", str(path)], capture_output=True, text=True, check=False
        )
        if checked.returncode != 0:
            raise AssertionError(f"nft -c rejected the ruleset:\n{checked.stderr}")
        if os.geteuid() != 0 or shutil.which("ip") is None:
            return ""
        with netns([]) as ns:
            for attempt in ("first load", "re-load"):
                loaded = subprocess.run(
                    ["ip", "netns", "exec", ns, NFT, "-f", str(path)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if loaded.returncode != 0:
                    raise AssertionError(f"nft -f failed on the {attempt}:\n{loaded.stderr}")
            listed = subprocess.run(
                ["ip", "netns", "exec", ns, NFT, "list", "table", "inet", table],
                capture_output=True,
                text=True,
                check=False,
            )
            if listed.returncode != 0:
                raise AssertionError(f"table inet {table} not loaded:\n{listed.stderr}")
            return listed.stdout


def check_systemd_unit(text: str, name: str = "hakvm-firewall.service") -> None:
    """Raise AssertionError unless `systemd-analyze verify` accepts the unit silently."""
    _require(SYSTEMD_ANALYZE, "systemd")
    with tempfile.TemporaryDirectory(prefix="hakvm-unit-") as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        proc = subprocess.run(
            [SYSTEMD_ANALYZE, "verify", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    # verify exits 0 on most problems (it only warns "..., ignoring"): any line about our
    # file is a problem.
    complaints = [line for line in proc.stderr.splitlines() if name in line]
    if proc.returncode != 0 or complaints:
        raise AssertionError(f"systemd-analyze verify {name}:\n{proc.stderr}")


_ZONE_SCRIPT = r"""
import json, sys
from firewall.core.io.zone import zone_reader
from firewall.errors import FirewallError
try:
    zone = zone_reader(sys.argv[1], sys.argv[2])
    config = zone.export_config_dict()
    zone.check_config_dict(config, {"policies": {}, "zones": {}})
except FirewallError as exc:
    sys.exit(f"firewalld rejects the zone: {exc}")
print(json.dumps(config))
"""

KNOWN_ZONE_ELEMENTS = {
    "short", "description", "interface", "source", "service", "port", "protocol",
    "icmp-block", "icmp-block-inversion", "masquerade", "forward", "forward-port",
    "source-port", "rule",
}  # fmt: skip


def check_firewalld_zone(text: str, zone: str = "hakvm") -> dict[str, object]:
    """Raise AssertionError unless firewalld's zone reader accepts `text` and ignores none of
    its elements. Returns firewalld's config dict of the zone (sources, services, ports...)."""
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import firewall.core.io.zone"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("firewalld's python library is missing (apt-get install python3-firewall)")
    try:
        root = etree.fromstring(text.encode())
    except etree.XMLSyntaxError as exc:
        raise AssertionError(f"zone XML is not well-formed: {exc}") from exc
    if root.tag != "zone":
        raise AssertionError(f"root element is <{root.tag}>, firewalld wants <zone>")
    unknown = sorted({str(e.tag) for e in root if isinstance(e.tag, str)} - KNOWN_ZONE_ELEMENTS)
    if unknown:
        raise AssertionError(f"elements firewalld ignores: {unknown}")
    with tempfile.TemporaryDirectory(prefix="hakvm-firewalld-") as tmp:
        (Path(tmp) / f"{zone}.xml").write_text(text)
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-c", _ZONE_SCRIPT, f"{zone}.xml", tmp],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise AssertionError(proc.stderr)
    config: dict[str, object] = json.loads(proc.stdout)
    for tag, key in (("source", "sources"), ("port", "ports"), ("service", "services")):
        expected = len(root.findall(tag))
        got = len(config.get(key, []))  # type: ignore[arg-type]
        if expected != got:
            raise AssertionError(f"firewalld kept {got} of the {expected} <{tag}> elements")
    return config
