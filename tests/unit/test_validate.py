"""Malformed specs: each gets its specific one-line error naming the field, and exit 2."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hakvm.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Spec = dict[str, Any]


def base_spec() -> Spec:
    return yaml.safe_load((EXAMPLES / "lab.yaml").read_text())  # type: ignore[no-any-return]


def _set(path: str, value: Any) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = spec
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value

    return mutate


def _delete(path: str) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = spec
        for part in parts[:-1]:
            target = target[part]
        del target[parts[-1]]

    return mutate


def _both_nodes(sub: str, value: Any) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        _set(f"nodes.0.{sub}", copy.deepcopy(value))(spec)
        _set(f"nodes.1.{sub}", copy.deepcopy(value))(spec)

    return mutate


def _third_node(spec: Spec) -> None:
    extra = copy.deepcopy(spec["nodes"][1])
    extra["name"] = "node03"
    spec["nodes"].append(extra)


def _dup_vm(spec: Spec) -> None:
    spec["vms"].append(copy.deepcopy(spec["vms"][0]))


def _rename_node(spec: Spec) -> None:
    spec["nodes"][1]["name"] = "node01"


def _same_mac(spec: Spec) -> None:
    spec["vms"][0]["networks"][0]["mac"] = "52:54:00:00:00:01"
    spec["vms"][1]["networks"][0]["mac"] = "52:54:00:00:00:01"


def _overlap_heartbeat(spec: Spec) -> None:
    spec["heartbeat"].append({"network": "10.88.0.0/16"})


# (id, mutation, field path in the message, text the message must contain)
CASES: list[tuple[str, Callable[[Spec], None], str, str]] = [
    ("unknown-top-key", _set("vm", []), "vm", "unknown key 'vm'; did you mean 'vms'?"),
    ("typo-vm-key", _set("vms.0.memroy", "1GiB"), "vms[0].memroy", "did you mean 'memory'?"),
    (
        "typo-bond-key",
        _set("nodes.0.interfaces.bonds.bond0.miimom", 80),
        "nodes[0].interfaces.bonds.bond0.miimom",
        "did you mean 'miimon'?",
    ),
    ("missing-cluster", _delete("cluster"), "cluster", "required field is missing"),
    ("missing-heartbeat", _delete("heartbeat"), "heartbeat", "required field is missing"),
    ("three-nodes", _third_node, "nodes", "exactly two nodes, this spec has 3"),
    ("one-node", _delete("nodes.1"), "nodes", "exactly two nodes, this spec has 1"),
    (
        "bond-mode",
        _set("nodes.0.interfaces.bonds.bond0.mode", "802.3adx"),
        "nodes[0].interfaces.bonds.bond0.mode",
        "'802.3adx' is not allowed; use one of",
    ),
    (
        "lacp-rate",
        _set("nodes.0.interfaces.bonds.bond0.lacp_rate", "medium"),
        "nodes[0].interfaces.bonds.bond0.lacp_rate",
        "'medium' is not allowed",
    ),
    (
        "hash-policy",
        _set("nodes.1.interfaces.bonds.bond0.xmit_hash_policy", "layer9"),
        "nodes[1].interfaces.bonds.bond0.xmit_hash_policy",
        "'layer9' is not allowed",
    ),
    (
        "bad-address",
        _set("nodes.0.interfaces.ethernets.eth3.addresses", ["10.88.1.300/24"]),
        "nodes[0].interfaces.ethernets.eth3.addresses[0]",
        "not an IPv4 address with prefix",
    ),
    (
        "hb-host-bits",
        _set("heartbeat.0.network", "10.88.1.1/24"),
        "heartbeat[0].network",
        "is not a network address",
    ),
    (
        "hb-node-missing",
        _set("nodes.1.interfaces.ethernets.eth3.addresses", ["10.77.1.2/24"]),
        "heartbeat[0].network",
        "node02 has no address in 10.88.1.0/24",
    ),
    ("dup-node-name", _rename_node, "nodes[1].name", "'node01' is already node 0"),
    ("dup-vm-name", _dup_vm, "vms[2].name", "VM names must be unique"),
    (
        "dup-address",
        _set("nodes.1.interfaces.ethernets.eth3.addresses", ["10.88.1.1/24"]),
        "nodes[1].interfaces",
        "address 10.88.1.1 is also used by node01",
    ),
    ("dup-mac", _same_mac, "vms[1].networks[0].mac", "MAC 52:54:00:00:00:01 is also used"),
    (
        "bond-member-twice",
        _set("nodes.0.interfaces.bonds.bond1", {"members": ["eth2", "eth4"]}),
        "nodes[0].interfaces.bonds.bond1.members",
        "'eth2' is already a member of bond0",
    ),
    (
        "member-also-ethernet",
        _set("nodes.0.interfaces.ethernets.eth1", {}),
        "nodes[0].interfaces.bonds.bond0.members",
        "'eth1' is also configured under ethernets",
    ),
    ("disk-too-big", _set("vms.0.disk.size", "40GiB"), "nodes[0].storage.size", "VM disks need"),
    (
        "memory-overcommit",
        _set("vms.0.memory", "1GiB"),
        "nodes[0].memory",
        "after a failover node01 must hold all VMs",
    ),
    (
        "unknown-preferred-node",
        _set("vms.1.preferred_node", "node09"),
        "vms[1].preferred_node",
        "'node09' is not a node; use one of node01, node02",
    ),
    (
        "unknown-survivor",
        _set("cluster.fencing.preferred_survivor", "node3"),
        "cluster.fencing.preferred_survivor",
        "'node3' is not a node",
    ),
    ("no-bmc", _delete("nodes.1.bmc"), "nodes[1].bmc", "fencing is required"),
    ("same-bmc", _set("nodes.1.bmc.port", 6230), "nodes[1].bmc", "a node would fence itself"),
    (
        "destroy-not-confirmed",
        _set("nodes.0.storage.create_from.destroy_existing_data", False),
        "nodes[0].storage.create_from.destroy_existing_data",
        "/dev/vdb would be wiped",
    ),
    ("bad-size", _set("vms.0.disk.size", "lots"), "vms[0].disk.size", "'lots' is not a size"),
    ("zero-vcpus", _set("vms.0.vcpus", 0), "vms[0].vcpus", "0 is too small; use at least 1"),
    ("vm-name-form", _set("vms.0.name", "Web_01"), "vms[0].name", "'Web_01' has the wrong form"),
    (
        "missing-bridge",
        _set("vms.0.networks.0.bridge", "br9"),
        "vms[0].networks[0].bridge",
        "bridge 'br9' is not defined on node01",
    ),
    ("eol-os", _set("cluster.os", "centos8"), "cluster.os", "'centos8' is not allowed"),
    (
        "token-too-small",
        _set("cluster.timing.token_ms", 100),
        "cluster.timing.token_ms",
        "100 is too small",
    ),
    (
        "consensus-not-above-join",
        _set("cluster.timing.consensus_ms", 50),
        "cluster.timing.consensus_ms",
        "not above corosync's join timeout (50 ms)",
    ),
    (
        "qcow2-too-small",
        _set("vms.0.disk", {"size": "256MiB", "mode": "qcow2-on-xfs"}),
        "vms[0].disk.size",
        "qcow2-on-xfs needs at least 512MiB",
    ),
    (
        "cdrom-no-image",
        _set("vms.0.boot", {"source": "cdrom"}),
        "vms[0].boot",
        "source cdrom needs cdrom_image",
    ),
    ("hb-overlap", _overlap_heartbeat, "heartbeat[2].network", "overlaps heartbeat[0]"),
    (
        "drbd-in-migration-range",
        _set("cluster.ports", {"drbd_base": 49152}),
        "cluster.ports.drbd_base",
        "falls in the migration range",
    ),
    ("tiny-memory", _set("vms.0.memory", 16), "vms[0].memory", "memory below 16MiB"),
    ("ssh-port", _set("nodes.0.ssh.port", 70000), "nodes[0].ssh.port", "70000 is too large"),
    (
        "negative-stickiness",
        _set("cluster.stickiness", -1),
        "cluster.stickiness",
        "-1 is too small",
    ),
    (
        "mtu-too-small",
        _set("nodes.0.interfaces.bonds.bond0.mtu", 100),
        "nodes[0].interfaces.bonds.bond0.mtu",
        "100 is too small",
    ),
    ("vms-not-list", _set("vms", {"a": 1}), "vms", "expected a list"),
    # A review's inputs of 2026-12-04: each crashed, or passed and could not work on a node.
    ("size-huge", _set("vms.0.disk.size", "9" * 310 + "GiB"), "vms[0].disk.size",
     "larger than any disk"),
    ("size-int-huge", _set("vms.0.memory", 2**70), "vms[0].memory", "larger than any disk"),
    ("size-full-width", _set("vms.0.disk.size", "\uff11GiB"), "vms[0].disk.size",
     "is not a size"),
    ("disk-zero", _set("vms.0.disk.size", 0), "vms[0].disk.size", "0 is too small; use more"),
    ("storage-zero", _set("nodes.0.storage.size", "0.5B"), "nodes[0].storage.size",
     "too small"),
    ("key-unknown-user", _set("nodes.0.ssh.key_file", "~no-such-user-hakvm/key"),
     "nodes[0].ssh.key_file", "no such user's home directory"),
    ("known-hosts-unknown-user", _set("nodes.1.ssh.known_hosts", "~no-such-user-hakvm/kh"),
     "nodes[1].ssh.known_hosts", "no such user's home directory"),
    ("key-empty", _set("nodes.0.ssh.key_file", ""), "nodes[0].ssh.key_file", "empty"),
    ("cdrom-relative", _set("vms.0.boot", {"source": "cdrom", "cdrom_image": "x.iso"}),
     "vms[0].boot", "absolute path"),
    ("corosync-past-65535", _set("cluster.ports", {"corosync": 65535}),
     "cluster.ports.corosync", "would need UDP port 65536"),
    ("drbd-on-sshd", _set("cluster.ports", {"drbd_base": 21}), "cluster.ports.drbd_base",
     "would take port 22"),
    ("bool-as-int", _set("vms.0.vcpus", "two"), "vms[0].vcpus", "'two' is not a whole number"),
    # YAML's true where a number belongs: pydantic's lax mode read it as 1 (a 1 ms token),
    # and as 0.0.0.1/32 in a list of addresses.
    ("true-as-number", _set("cluster.timing.token_ms", True), "cluster.timing.token_ms",
     "is a yes/no (YAML reads an unquoted yes, no, on, off, true or false so) where none "
     "belongs: quote the word if you meant it"),
    ("true-as-vcpus", _set("vms.0.vcpus", True), "vms[0].vcpus", "is a yes/no"),
    ("false-as-size", _set("vms.0.memory", False), "vms[0].memory", "is a yes/no"),
    ("true-as-optional-number", _set("cluster.timing.consensus_ms", True),
     "cluster.timing.consensus_ms", "is a yes/no"),
    ("true-among-addresses",
     _set("nodes.0.interfaces.ethernets.eth3.addresses", ["10.88.1.1/24", True]),
     "nodes[0].interfaces.ethernets.eth3.addresses", "holds a yes/no"),
    ("unquoted-on-as-a-name", _set("cluster.name", True), "cluster.name",
     "quote the word if you meant it"),
    ("device-dot-dot", _set("nodes.0.storage.create_from",
     {"device": "/dev/../etc/passwd", "destroy_existing_data": True}),
     "nodes[0].storage.create_from.device", "'/dev/../etc/passwd' holds an empty, '.' or '..'"),
]


def qdevice_spec() -> Spec:
    return yaml.safe_load((EXAMPLES / "lab-qdevice.yaml").read_text())  # type: ignore[no-any-return]


def _qdevice_ssh(host: str, port: int) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        del spec["quorum_device"]["local"]
        spec["quorum_device"]["ssh"] = {"host": host, "port": port, "key_file": "k"}

    return mutate


def _heuristic(*argv: str) -> Callable[[Spec], None]:
    return _set("quorum_device.heuristics", {"commands": [{"name": "gw", "argv": list(argv)}]})


QDEVICE_CASES: list[tuple[str, Callable[[Spec], None], str, str]] = [
    # `tls: on` unquoted: YAML 1.1 reads true; the word is one the field takes.
    ("qd-tls-unquoted-on", _set("quorum_device.tls", True), "quorum_device.tls",
     "is a yes/no (YAML reads an unquoted yes, no, on, off, true or false so)"),
    ("qd-host-is-a-node", _set("quorum_device.host", "10.88.1.2"), "quorum_device.host",
     "10.88.1.2 is node02's address: the qnetd host is a third machine, never a cluster node"),
    ("qd-host-is-a-node-name", _set("quorum_device.host", "node01"), "quorum_device.host",
     "node01 is node01's address"),
    ("qd-host-loopback", _set("quorum_device.host", "127.0.0.1"), "quorum_device.host",
     "not a host the nodes can reach as a third machine"),
    ("qd-host-localhost", _set("quorum_device.host", "localhost"), "quorum_device.host",
     "'localhost' is each node itself"),
    ("qd-host-garbage", _set("quorum_device.host", "qnetd host; rm -rf /"), "quorum_device.host",
     "is neither an IP address nor a DNS name"),
    ("qd-host-bad-ipv4", _set("quorum_device.host", "10.0.2.300"), "quorum_device.host",
     "is neither an IP address nor a DNS name"),
    ("qd-ssh-is-a-node", _qdevice_ssh("127.0.0.1", 2202), "quorum_device.ssh",
     "127.0.0.1:2202 is node02's SSH target: the qnetd host is a third machine"),
    ("qd-two-signers", _set("quorum_device.ssh", {"host": "q", "key_file": "k"}),
     "quorum_device", "give exactly one of ssh"),
    ("qd-no-signer", _delete("quorum_device.local"), "quorum_device", "give exactly one of ssh"),
    ("qd-algorithm", _set("quorum_device.algorithm", "2nodelms"), "quorum_device.algorithm",
     "'2nodelms' is not allowed; use one of ffsplit or lms"),
    ("qd-tls-off", _set("quorum_device.tls", "off"), "quorum_device.tls",
     "'off' is not allowed; use one of on or required"),
    ("qd-tie-breaker", _set("quorum_device.tie_breaker", "node03"), "quorum_device.tie_breaker",
     "'node03' is not a node; use lowest, highest or node01, node02"),
    ("qd-tie-breaker-form", _set("quorum_device.tie_breaker", "Lowest!"),
     "quorum_device.tie_breaker", "use lowest, highest or a node name"),
    ("qd-port", _set("quorum_device.port", 0), "quorum_device.port", "0 is too small"),
    ("qd-no-quorum-freeze", _set("cluster.no_quorum_policy", "freeze"), "cluster.no_quorum_policy",
     "'freeze' with a quorum device: the half that loses quorum must stop its VMs"),
    ("qd-heuristic-relative", _heuristic("ping", "10.88.0.254"),
     "quorum_device.heuristics.commands[0].argv", "'ping' is not an absolute path"),
    ("qd-heuristic-shell", _heuristic("/bin/sh", "-c", "ping gw; reboot"),
     "quorum_device.heuristics.commands[0].argv", "no spaces, quotes or shell syntax"),
    ("qd-heuristic-quote", _heuristic("/usr/bin/ping", '"gw"'),
     "quorum_device.heuristics.commands[0].argv", "no spaces, quotes or shell syntax"),
    ("qd-heuristic-name", _set("quorum_device.heuristics", {"commands": [
        {"name": "Gate Way", "argv": ["/usr/bin/true"]}]}),
     "quorum_device.heuristics.commands[0].name", "has the wrong form"),
    ("qd-heuristic-none", _set("quorum_device.heuristics", {"mode": "on", "commands": []}),
     "quorum_device.heuristics.commands", "has 0 items"),
    ("qd-heuristic-twice", _set("quorum_device.heuristics", {"commands": [
        {"name": "gw", "argv": ["/usr/bin/true"]}, {"name": "gw", "argv": ["/usr/bin/true"]}]}),
     "quorum_device.heuristics.commands", "command name 'gw' is used twice"),
]  # fmt: skip


LINE_RE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<field>[^:]+): (?P<msg>.+)$")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


# Each case on examples/lab.yaml; the quorum device's on examples/lab-qdevice.yaml.
ALL_CASES = [(*c, base_spec) for c in CASES] + [(*c, qdevice_spec) for c in QDEVICE_CASES]


@pytest.mark.parametrize(
    ("case", "mutate", "field", "text", "base"), ALL_CASES, ids=[c[0] for c in ALL_CASES]
)
def test_malformed_spec_names_field(
    case: str,
    mutate: Callable[[Spec], None],
    field: str,
    text: str,
    base: Callable[[], Spec],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = base()
    mutate(spec)
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, _ = run_cli(["validate", str(path)], capsys)
    assert code == 2, out
    errors = [m for m in map(LINE_RE.match, out.splitlines()) if m and "warning:" not in m[0]]
    matching = [m for m in errors if m["field"] == field and text in m["msg"]]
    assert matching, f"no error line for {field!r} containing {text!r} in:\n{out}"
    # The line number points into the file, at (or inside) the field's key.
    lines = path.read_text().splitlines()
    number = int(matching[0]["line"])
    assert 1 <= number <= len(lines)
    assert "Traceback" not in out


def test_lab_qdevice_example_is_the_lab_plus_a_quorum_device() -> None:
    """examples/lab-qdevice.yaml is examples/lab.yaml with a quorum device and without the
    fence delay: nothing else may drift apart."""
    lab, qdevice = base_spec(), qdevice_spec()
    del qdevice["quorum_device"]
    del lab["cluster"]["timing"]["fence_delay_s"]
    fencing = lab["cluster"]["fencing"]
    del fencing["race_protection"], fencing["preferred_survivor"]
    assert qdevice == lab


def test_fence_delay_settings_are_warned_ignored_with_a_quorum_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = qdevice_spec()
    spec["cluster"]["fencing"] = {"race_protection": "static-delay"}
    spec["cluster"]["timing"]["fence_delay_s"] = 45
    path = tmp_path / "qd.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, _ = run_cli(["validate", str(path)], capsys)
    assert code == 0, out
    for field in ("cluster.fencing.race_protection", "cluster.timing.fence_delay_s"):
        assert f"warning: {field}: " in out and "ignored with a quorum device" in out, out
    code, out, _ = run_cli(["validate", str(EXAMPLES / "lab-qdevice.yaml")], capsys)
    assert code == 0 and "ignored" not in out, out


def test_lab_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", str(EXAMPLES / "lab.yaml")], capsys)
    assert code == 0, out
    assert "valid (2 VMs" in out


def test_consensus_below_the_token_is_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """corosync.conf(5): for two nodes a consensus above the join timeout but below the
    token is safe (and corosync 3 accepts it: tests/render/test_corosync.py)."""
    spec = base_spec()
    spec["cluster"]["timing"].update({"token_ms": 3000, "consensus_ms": 1500})
    path = tmp_path / "consensus.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, _ = run_cli(["validate", str(path)], capsys)
    assert code == 0, out
    assert "consensus_ms" not in out


def test_seed_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", str(EXAMPLES / "seed.yaml")], capsys)
    assert code == 0, out


def test_overcommit_override_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = base_spec()
    spec["vms"][0]["memory"] = "1GiB"
    spec["allow_memory_overcommit"] = True
    path = tmp_path / "over.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, _ = run_cli(["validate", str(path)], capsys)
    assert code == 0
    assert "warning: nodes[0].memory: after a failover node01 must hold all VMs" in out


def test_every_problem_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = base_spec()
    spec["vms"][0]["vcpus"] = 0
    spec["vms"][1]["memroy"] = "1GiB"
    spec["cluster"]["os"] = "solaris"
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, _ = run_cli(["validate", str(path)], capsys)
    assert code == 2
    fields = {m["field"] for m in map(LINE_RE.match, out.splitlines()) if m}
    assert {"vms[0].vcpus", "vms[1].memroy", "cluster.os"} <= fields


def test_line_number_points_at_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (EXAMPLES / "lab.yaml").read_text().replace("mode: 802.3ad,", "mode: 803.3ad,", 1)
    path = tmp_path / "line.yaml"
    path.write_text(text)
    code, out, _ = run_cli(["validate", str(path)], capsys)
    assert code == 2
    match = LINE_RE.match(out.splitlines()[0])
    assert match is not None
    assert "803.3ad" in text.splitlines()[int(match["line"]) - 1]


RAW_CASES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "the file is empty"),
    ("whitespace", b"  \n\n", "the file is empty"),
    ("binary", b"\x7fELF\x02\x01\x00\x00garbage", "the file is binary"),
    ("latin1", "cluster: {name: caf\xe9}\n".encode("latin-1"), "not UTF-8 text"),
    ("not-yaml", b"cluster: [unclosed\n  nodes: {\n", "not valid YAML"),
    ("tabs", b"cluster:\n\tname: x\n", "not valid YAML"),
    ("top-list", b"- a\n- b\n", "the top level must be a mapping"),
    ("scalar", b"just text\n", "the top level must be a mapping"),
    ("dup-key", b"cluster: {name: a}\ncluster: {name: b}\n", "duplicate key 'cluster'"),
    ("huge", b"# " + b"x" * (1024 * 1024 + 10) + b"\n", "larger than the 1048576"),
    (
        "alias-bomb",
        b"".join(
            f"{a}: &{a} [{', '.join(['*' + b] * 10)}]\n".encode()
            for a, b in zip("bcdefg", "abcdef", strict=True)
        ).replace(b"b: &b [*a", b"a: &a [x]\nb: &b [*a", 1),
        "too many YAML values",
    ),
]


@pytest.mark.parametrize(("case", "raw", "text"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_unreadable_input(
    case: str, raw: bytes, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(raw)
    code, out, err = run_cli(["validate", str(path)], capsys)
    assert code == 2
    assert len(out.strip().splitlines()) == 1, out
    assert out.startswith(str(path)) and text in out, out
    assert "Traceback" not in out + err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2
    assert "no such file" in out


def test_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    spec = base_spec()
    spec["vms"][0]["vcpus"] = 0
    path = tmp_path / "j.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, _ = run_cli(["validate", "--json", str(path)], capsys)
    assert code == 2
    data = json.loads(out)
    assert data["valid"] is False
    assert any(p["field"] == "vms[0].vcpus" for p in data["problems"])


def test_secret_file_permissions_warned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = base_spec()
    secret = tmp_path / "bmc.pw"
    secret.write_text("x\n")
    secret.chmod(0o644)
    spec["nodes"][0]["bmc"]["password_file"] = str(secret)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, _ = run_cli(["validate", str(path)], capsys)
    assert code == 0
    assert "nodes[0].bmc.password_file: BMC password file" in out
    assert "readable by group/others (mode 0644); run chmod 600" in out


def test_bad_cli_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["validate"], capsys)
    assert code == 2
    assert "Missing argument" in err
    code, _, err = run_cli(["frobnicate"], capsys)
    assert code == 2


def test_a_drbd_word_is_refused_as_a_node_or_vm_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """drbdadm reads `on no {` as a keyword, not a host (the property test found it)."""
    spec = base_spec()
    spec["nodes"][1]["name"] = "no"
    spec["vms"][0]["name"] = "on"
    path = tmp_path / "words.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, _ = run_cli(["validate", str(path)], capsys)
    assert code == 2, out
    assert "'no' is a word of DRBD's configuration language" in out, out
    assert "'on' is a word of DRBD's configuration language" in out, out


def test_too_many_vms_is_said_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = base_spec()
    vm = spec["vms"][0]
    spec["vms"] = [{**copy.deepcopy(vm), "name": f"v{i}", "preferred_node": None}
                   for i in range(300)]  # fmt: skip
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, _ = run_cli(["validate", str(path)], capsys)
    lines = [line for line in out.splitlines() if "DRBD minors" in line]
    assert code == 2 and len(lines) == 1, out
    assert "vms: vms:" not in lines[0] and "v256 and 43 more VM(s)" in lines[0]


SECONDS_ARGS = [["serve", "--every", "nan"], ["serve", "--every", "inf"],
                ["apply", "--wait", "nan"], ["drill", "--bound", "nan"],
                ["drill", "--bound", "-5"], ["status", "--watch", "inf"]]  # fmt: skip


@pytest.mark.parametrize("args", SECONDS_ARGS)
def test_seconds_options_refuse_what_is_not_a_duration(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli([*args, str(EXAMPLES / "lab.yaml")], capsys)
    assert code == (3 if args[0] == "status" else 2) and err.count("\n") == 1, err
    assert f"'{args[1]}'" in err and "Traceback" not in err


def test_render_refuses_an_empty_output_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["render", "-o", "", str(EXAMPLES / "lab.yaml")], capsys)
    assert code == 2 and "empty: name a directory" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("corosync", [21, 7790, 49160])
def test_knet_udp_ports_may_share_numbers_with_tcp_ones(
    corosync: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """knet is UDP; DRBD, the migration range and sshd are TCP (the firewall's two sets)."""
    spec = base_spec()
    spec["cluster"]["ports"] = {"corosync": corosync}
    path = tmp_path / "udp.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, _ = run_cli(["validate", str(path)], capsys)
    assert code == 0, out
