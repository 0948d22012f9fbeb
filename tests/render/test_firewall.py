"""Firewall renderer: nftables table + unit (debian12), firewalld zone (rhel9).

Fast tests check that exactly the cluster ports are opened, only to the peer, and that they
are the ports corosync.conf and the DRBD resources really use. Realtool tests run nft,
systemd-analyze and firewalld's zone reader, and (as root) send real packets through the
loaded table between two network namespaces.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from hakvm.render import corosync, drbd, firewall
from hakvm.render.base import RenderContext
from hakvm.spec.derive import derive
from tests.render.checkers.firewall import (
    check_firewalld_zone,
    check_nftables,
    check_systemd_unit,
)
from tests.render.checkers.netns import require
from tests.render.examples import example_data, render_context


def _ctx(example: str, **cluster: Any) -> RenderContext:
    return render_context(example_data(example, **cluster))


def _file(ctx: RenderContext, node: str, path: str) -> str:
    return next(f.content for f in firewall.render(ctx)[node] if f.path == path)


# --- content rules (fast) ------------------------------------------------------------------


def test_file_sets() -> None:
    lab = firewall.render(_ctx("lab"))
    assert [f.path for f in lab["node01"]] == sorted([firewall.NFT_PATH, firewall.NFT_UNIT_PATH])
    seed = firewall.render(_ctx("seed"))
    assert [f.path for f in seed["node02"]] == [firewall.FIREWALLD_ZONE_PATH]
    for files in (*lab.values(), *seed.values()):
        for f in files:
            assert f.mode == 0o644
            assert "Managed by hakvm" in f.content


def test_ports_match_corosync_and_drbd() -> None:
    for example in ("lab", "seed"):
        ctx = _ctx(example)
        ports = firewall.cluster_ports(ctx)
        conf = corosync.render_text(ctx)
        mcast = [int(p) for p in re.findall(r"mcastport:\s*(\d+)", conf)]
        assert [port for _, port in ports.corosync_udp] == mcast
        drbd_ports = sorted(
            int(m)
            for vm in ctx.spec.vms
            for m in re.findall(r"address [\d.]+:(\d+);", drbd.render_resource(ctx, vm.name))
        )
        # Each resource names the port once per node.
        assert sorted({p for p in drbd_ports}) == [port for _, port in ports.drbd_tcp]
        assert ports.migration_tcp == (49152, 49215)


def test_nft_only_peer_addresses() -> None:
    ctx = _ctx("lab")
    for node, peer, own in (("node01", "node02", ".1"), ("node02", "node01", ".2")):
        text = _file(ctx, node, firewall.NFT_PATH)
        peers = re.search(r"set peers \{.*?elements = \{(.*?)\}", text, re.S)
        assert peers is not None
        found = re.findall(r"(\d+\.\d+\.\d+\.\d+)", peers.group(1))
        other = "2" if own == ".1" else "1"
        assert found == [f"10.88.1.{other}", f"10.88.0.{other}", f"10.88.2.{other}"], peer
        # DRBD and migration: from the peer's replication address only (bond0.20).
        for what in ("DRBD replication", "libvirt live migration"):
            assert re.search(
                rf"ip saddr 10\.88\.2\.{other} tcp dport \S+ accept comment \"{what}\"", text
            )
        assert "ip saddr @peers tcp dport @drbd_tcp" not in text
        assert "flush ruleset" not in text.replace("`flush ruleset`", "")


def test_firewalld_zone_sources_are_the_peer() -> None:
    ctx = _ctx("seed")
    text = _file(ctx, "node01", firewall.FIREWALLD_ZONE_PATH)
    sources = ["10.0.20.2", "10.0.10.254", "10.0.40.2"]  # links 0, 1, replication
    assert re.findall(r'<source address="([^"]+)"/>', text) == sources
    text2 = _file(ctx, "node02", firewall.FIREWALLD_ZONE_PATH)
    assert re.findall(r'<source address="([^"]+)"/>', text2) == [
        "10.0.20.1",
        "10.0.10.253",
        "10.0.40.1",
    ]


def test_no_vms_renders_an_empty_drbd_set() -> None:
    ctx = _ctx("lab")
    spec = ctx.spec.model_copy(update={"vms": []})
    empty = RenderContext(spec, derive(spec), ctx.secrets)
    text = _file(empty, "node01", firewall.NFT_PATH)
    assert "set drbd_tcp {\n\t\ttype inet_service\n\t}" in text


def test_deterministic() -> None:
    for example in ("lab", "seed"):
        assert firewall.render(_ctx(example)) == firewall.render(_ctx(example))


# --- real tools ------------------------------------------------------------------------------


@pytest.mark.realtool
@pytest.mark.parametrize("node", ["node01", "node02"])
def test_nft_accepts_lab(node: str) -> None:
    listed = check_nftables(_file(_ctx("lab"), node, firewall.NFT_PATH))
    if listed:  # loaded for real (root): the kernel holds what we meant
        assert "hook input priority filter - 10; policy accept;" in listed
        assert "5405" in listed and "7790" in listed and "49152-49215" in listed


@pytest.mark.realtool
def test_nft_accepts_rhel_topology_and_no_vms() -> None:
    ctx = _ctx("seed", os="debian12")
    check_nftables(_file(ctx, "node01", firewall.NFT_PATH))
    spec = ctx.spec.model_copy(update={"vms": []})
    check_nftables(
        _file(RenderContext(spec, derive(spec), ctx.secrets), "node01", firewall.NFT_PATH)
    )


@pytest.mark.realtool
def test_nft_rejects_broken_ruleset() -> None:
    text = _file(_ctx("lab"), "node01", firewall.NFT_PATH)
    with pytest.raises(AssertionError, match="nft -c rejected"):
        check_nftables(text.replace("policy accept", "policy acept"))
    with pytest.raises(AssertionError, match="nft -c rejected"):
        check_nftables(text.replace("10.88.1.2", "10.88.1.300"))


@pytest.mark.realtool
def test_systemd_unit_verifies() -> None:
    unit = _file(_ctx("lab"), "node01", firewall.NFT_UNIT_PATH)
    check_systemd_unit(unit)
    with pytest.raises(AssertionError, match="systemd-analyze"):
        check_systemd_unit(unit.replace("Type=oneshot", "Type=oneshoot"))


@pytest.mark.realtool
@pytest.mark.parametrize("node", ["node01", "node02"])
def test_firewalld_accepts_seed(node: str) -> None:
    ctx = _ctx("seed")
    config = check_firewalld_zone(_file(ctx, node, firewall.FIREWALLD_ZONE_PATH))
    assert config["services"] == ["ssh"]
    assert config["ports"] == [
        ["5405", "udp"],
        ["5406", "udp"],
        ["7789", "tcp"],
        ["7790", "tcp"],
        ["7791", "tcp"],
        ["7792", "tcp"],
        ["49152-49215", "tcp"],
    ]
    assert len(config["sources"]) == 3  # type: ignore[arg-type]


@pytest.mark.realtool
def test_firewalld_rejects_broken_zone() -> None:
    text = _file(_ctx("seed"), "node01", firewall.FIREWALLD_ZONE_PATH)
    with pytest.raises(AssertionError, match="INVALID_ADDR"):
        check_firewalld_zone(text.replace("10.0.20.2", "10.0.20.256"))
    with pytest.raises(AssertionError, match="INVALID_PORT"):
        check_firewalld_zone(text.replace('port="5406"', 'port="65536"'))
    with pytest.raises(AssertionError, match="ignores"):
        check_firewalld_zone(text.replace("<source ", "<sorce ", 1))


# --- packets through the loaded table (root) -------------------------------------------------

_PROBE = r"""
import socket, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket()
s.settimeout(0.4)
s.bind((src, 0))
try:
    s.connect((dst, port))
    print("open")
except ConnectionRefusedError:
    print("refused")   # reached the host: nothing listens, but not filtered
except OSError:
    print("dropped")
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def _two_hosts() -> Iterator[tuple[str, str]]:
    """Namespaces `node` (10.88.1.1, 10.88.2.1) and `wire` (the peer 10.88.1.2 and its
    replication address 10.88.2.2, plus a stranger 10.88.1.9) joined by a veth pair."""
    import os

    tag = f"hk{os.getpid() % 100000}"
    node, wire = f"{tag}-node", f"{tag}-wire"
    _ip("netns", "add", node)
    try:
        _ip("netns", "add", wire)
        try:
            _ip(
                "link",
                "add",
                f"{tag}a",
                "netns",
                node,
                "type",
                "veth",
                "peer",
                "name",
                f"{tag}b",
                "netns",
                wire,
            )
            _ip("-n", node, "addr", "add", "10.88.1.1/24", "dev", f"{tag}a")
            _ip("-n", node, "addr", "add", "10.88.2.1/24", "dev", f"{tag}a")
            _ip("-n", wire, "addr", "add", "10.88.1.2/24", "dev", f"{tag}b")
            _ip("-n", wire, "addr", "add", "10.88.2.2/24", "dev", f"{tag}b")
            _ip("-n", wire, "addr", "add", "10.88.1.9/24", "dev", f"{tag}b")
            for ns, dev in ((node, f"{tag}a"), (wire, f"{tag}b")):
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
            yield node, wire
        finally:
            subprocess.run(["ip", "netns", "delete", wire], check=False, capture_output=True)
    finally:
        subprocess.run(["ip", "netns", "delete", node], check=False, capture_output=True)


@pytest.mark.realtool
def test_table_drops_strangers_but_not_the_peer() -> None:
    require("nft")
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    text = _file(_ctx("lab"), "node01", firewall.NFT_PATH)
    with _two_hosts() as (node, wire):
        loaded = subprocess.run(
            ["ip", "netns", "exec", node, "nft", "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert loaded.returncode == 0, loaded.stderr

        def probe(src: str, port: int) -> str:
            out = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    wire,
                    sys.executable,
                    "-c",
                    _PROBE,
                    src,
                    "10.88.1.1",
                    str(port),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            return out.stdout.strip()

        # Nothing listens in `node`: "refused" means the SYN got through the table.
        for port in (7789, 7790, 49152, 49215, 22):
            assert probe("10.88.2.2", port) == "refused", port  # the peer's replication
        assert probe("10.88.1.2", 22) == "refused"  # the peer's heartbeat link address
        for port in (7789, 7790, 49152, 49215):
            assert probe("10.88.1.9", port) == "dropped", port  # a stranger
            # the peer's other address (a guest on br0 could claim it): not for DRBD
            assert probe("10.88.1.2", port) == "dropped", port
        assert probe("10.88.1.9", 22) == "refused"  # management SSH is never closed
        assert probe("10.88.1.9", 7791) == "refused"  # not a cluster port: not ours to drop
