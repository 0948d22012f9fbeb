"""corosync.conf renderer: content rules (fast) and `corosync -t` on the output (realtool)."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from hakvm.render import corosync
from tests.render.checkers.corosync import check_corosync_conf
from tests.render.checkers.netns import require
from tests.render.examples import example_data, render_context


def _three_links() -> dict[str, Any]:
    """lab plus a third heartbeat network on its own NIC, at the highest priority."""
    data = copy.deepcopy(example_data("lab"))
    data["heartbeat"].append({"network": "10.88.2.0/24", "priority": 5})
    for index, node in enumerate(data["nodes"], start=1):
        node["interfaces"]["ethernets"]["eth4"] = {"addresses": [f"10.88.2.{index}/24"]}
    return data


def _text(data: dict[str, Any]) -> str:
    return corosync.render_text(render_context(data))


def _directives(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_same_file_on_both_nodes() -> None:
    rendered = corosync.render(render_context(example_data("lab")))
    assert sorted(rendered) == ["node01", "node02"]
    files = [f for node in rendered.values() for f in node]
    assert {(f.path, f.mode) for f in files} == {("/etc/corosync/corosync.conf", 0o644)}
    assert files[0].content == files[1].content
    assert files[0].content.startswith("# Managed by hakvm")


def test_deterministic() -> None:
    assert _text(example_data("seed")) == _text(example_data("seed"))


def test_lab_content() -> None:
    lines = _directives(_text(example_data("lab")))
    for expected in (
        "cluster_name: lab",
        "transport: knet",
        "link_mode: passive",
        "crypto_cipher: aes256",
        "crypto_hash: sha256",
        "keyfile: /etc/corosync/authkey",
        "token: 3000",
        "provider: corosync_votequorum",
        "two_node: 1",
        "wait_for_all: 1",
        "to_syslog: yes",
        "to_logfile: no",
    ):
        assert expected in lines, expected
    assert not any(line.startswith(("consensus:", "logfile:", "secauth:")) for line in lines)


def test_nodelist_follows_node_order_and_links() -> None:
    text = _text(example_data("lab"))
    nodes = re.findall(
        r"name: (\S+)\n\s+nodeid: (\d+)\n\s+ring0_addr: (\S+)\n\s+ring1_addr: (\S+)", text
    )
    # link 0 is the back-to-back 10.88.1.0/24, link 1 the bond network 10.88.0.0/24
    assert nodes == [
        ("node01", "1", "10.88.1.1", "10.88.0.1"),
        ("node02", "2", "10.88.1.2", "10.88.0.2"),
    ]
    interfaces = re.findall(
        r"linknumber: (\d+)\n\s+knet_link_priority: (\d+)\n\s+mcastport: (\d+)", text
    )
    assert interfaces == [("0", "2", "5405"), ("1", "1", "5406")]


def test_consensus_and_port_from_spec() -> None:
    data = example_data("lab")
    data["cluster"]["timing"].update({"token_ms": 5000, "consensus_ms": 7000})
    data["cluster"]["ports"] = {"corosync": 6000}
    lines = _directives(_text(data))
    assert "token: 5000" in lines
    assert "consensus: 7000" in lines
    assert [line for line in lines if line.startswith("mcastport")] == [
        "mcastport: 6000",
        "mcastport: 6001",
    ]


def test_three_links() -> None:
    text = _text(_three_links())
    assert re.findall(r"linknumber: (\d+)", text) == ["0", "1", "2"]
    assert re.findall(r"knet_link_priority: (\d+)", text) == ["2", "1", "5"]
    assert re.findall(r"ring2_addr: (\S+)", text) == ["10.88.2.1", "10.88.2.2"]
    # The comment names the link knet actually prefers: the highest priority.
    assert re.findall(r"# Link (\d+): .*preferred", text) == ["2"]


def test_single_link_has_no_preferred_marker() -> None:
    data = example_data("lab")
    data["heartbeat"] = data["heartbeat"][:1]
    text = _text(data)
    assert "ring1_addr" not in text
    assert "preferred" not in text


def test_braces_are_what_the_parser_wants() -> None:
    # corosync's parser: "name {" opens a section on one line, "}" closes it alone.
    for line in _directives(_text(_three_links())):
        if "{" in line:
            assert re.fullmatch(r"[a-z_]+ \{", line), line
        if "}" in line:
            assert line == "}", line


@pytest.mark.realtool
@pytest.mark.parametrize("example", ["lab", "seed"])
@pytest.mark.parametrize("node", ["node01", "node02"])
def test_corosync_accepts(example: str, node: str) -> None:
    require("corosync", "unshare")
    check_corosync_conf(_text(example_data(example)), node)


@pytest.mark.realtool
def test_corosync_accepts_three_links_and_consensus() -> None:
    require("corosync", "unshare")
    data = _three_links()
    data["cluster"]["timing"].update({"consensus_ms": 4000})
    check_corosync_conf(_text(data), "node02")


@pytest.mark.realtool
@pytest.mark.parametrize("consensus", [1500, 2999, 60])
def test_corosync_accepts_consensus_below_the_token(consensus: int) -> None:
    """corosync.conf(5): "For two node clusters, a consensus larger than the join timeout
    but less than token is safe"; corosync 3 refuses only a consensus below the join timeout
    (50 ms), which the next test shows."""
    require("corosync", "unshare")
    data = example_data("lab")
    data["cluster"]["timing"].update({"token_ms": 3000, "consensus_ms": consensus})
    text = _text(data)
    assert f"consensus: {consensus}" in _directives(text)
    check_corosync_conf(text, "node01")


@pytest.mark.realtool
@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("crypto_cipher: aes256", "crypto_cipher: aes1024"),  # not a cipher
        ("two_node: 1\n", "two_node: 1\n}\n"),  # a stray closing brace
        ("link_mode: passive", "link_mode: sideways"),
        ("crypto_hash: sha256", "crypto_hash: none"),  # encryption without a hash
        ("nodeid: 2", "nodeid: 1"),  # two nodes, one id
        ("token: 3000", "token: 3000\n    consensus: 40"),  # below the join timeout (50 ms)
    ],
)
def test_checker_rejects_broken_config(old: str, new: str) -> None:
    require("corosync", "unshare")
    text = _text(example_data("lab"))
    assert old in text
    with pytest.raises(AssertionError, match="corosync -t rejected") as failure:
        check_corosync_conf(text.replace(old, new, 1), "node01")
    assert "error" in str(failure.value)  # corosync's reason is shown, not just an exit code


# --- a quorum device ---------------------------------------------------------------------------


def _qdevice(**device: Any) -> dict[str, Any]:
    data = example_data("lab-qdevice")
    data["quorum_device"].update(device)
    return data


def _quorum_section(text: str) -> list[str]:
    section = re.search(r"^quorum \{\n(.*?)^\}", text, flags=re.M | re.S)
    assert section is not None
    return _directives(section.group(1))


def test_qdevice_replaces_two_node_and_keeps_wait_for_all() -> None:
    lines = _quorum_section(_text(example_data("lab-qdevice")))
    # corosync refuses to start with two_node and a device both set (votequorum.c); without
    # two_node nothing implies wait_for_all, so it is written explicitly.
    assert not any(line.startswith("two_node") for line in lines)
    assert lines == [
        "provider: corosync_votequorum",
        "wait_for_all: 1",
        "device {",
        "model: net",
        "votes: 1",
        "net {",
        "host: 10.0.2.2",
        "port: 5403",
        "algorithm: ffsplit",
        "tie_breaker: lowest",
        "tls: required",
        "}",
        "}",
    ]
    assert "two_node: 1" in _quorum_section(_text(example_data("lab")))


def test_qdevice_tie_breaker_by_node_name_is_its_nodeid_and_heuristics() -> None:
    data = _qdevice(
        algorithm="lms",
        tie_breaker="node02",
        tls="on",
        heuristics={
            "mode": "on",
            "commands": [
                {"name": "gateway", "argv": ["/usr/bin/ping", "-q", "-c", "1", "10.88.0.254"]},
                {"name": "uplink", "argv": ["/usr/bin/test", "-e", "/sys/class/net/br0"]},
            ],
        },
    )
    lines = _quorum_section(_text(data))
    assert "tie_breaker: 2" in lines and "algorithm: lms" in lines and "tls: on" in lines
    heuristics = lines[lines.index("heuristics {") :]
    assert heuristics == [
        "heuristics {",
        "mode: on",
        "exec_gateway: /usr/bin/ping -q -c 1 10.88.0.254",
        "exec_uplink: /usr/bin/test -e /sys/class/net/br0",
        "}",
        "}",
    ]


@pytest.mark.realtool
@pytest.mark.parametrize("node", ["node01", "node02"])
def test_corosync_accepts_the_device_block(node: str) -> None:
    require("corosync", "unshare")
    check_corosync_conf(_text(example_data("lab-qdevice")), node)


@pytest.mark.realtool
def test_corosync_accepts_heuristics_and_lms() -> None:
    require("corosync", "unshare")
    data = _qdevice(
        algorithm="lms",
        tie_breaker="highest",
        heuristics={"commands": [{"name": "gw", "argv": ["/usr/bin/ping", "-c", "1", "gw"]}]},
    )
    check_corosync_conf(_text(data), "node01")
