"""Pure parts of the lab: ports, QEMU argv, known_hosts, process markers."""

from __future__ import annotations

import pathlib

import pytest

from hakvm.lab import nodes, procs, ssh
from hakvm.lab.image import image_key
from hakvm.lab.state import LINKS, Lab, LabConfig


@pytest.fixture
def lab(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    monkeypatch.setenv("HAKVM_LAB_RUN_BASE", str(tmp_path / "run"))
    return Lab(tmp_path / "lab")


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_link_ports_are_mirrored_between_nodes() -> None:
    config = LabConfig(link_port=40000)
    seen: set[int] = set()
    for link in LINKS:
        a_local, a_peer = config.link_ports(link, "node01")
        b_local, b_peer = config.link_ports(link, "node02")
        assert (a_local, a_peer) == (b_peer, b_local)
        seen |= {a_local, b_local}
    assert seen == set(range(40000, 40006))


def test_default_ports() -> None:
    config = LabConfig()
    assert [config.ssh_port_of(n) for n in ("node01", "node02")] == [2201, 2202]
    assert [config.bmc_port_of(n) for n in ("node01", "node02")] == [6230, 6231]


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"ssh_port": 80}, "SSH port"),
        ({"bmc_port": 2202}, "overlap"),
        ({"link_port": 65534}, "link port"),
        ({"memory_mib": 128}, "memory"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, int], text: str) -> None:
    with pytest.raises(ValueError, match=text):
        LabConfig(**kwargs).validate()  # type: ignore[arg-type]


def test_qemu_argv_nics_in_order_and_loopback_only(lab: Lab) -> None:
    config = LabConfig()
    argv = nodes.qemu_argv(lab.run, config, "node02")
    assert argv[0] == "qemu-system-x86_64"
    assert "-daemonize" in argv and "-runas" not in argv
    assert _opt(argv, "-accel")[0].startswith("tcg")
    assert "net.ifnames=0" in _opt(argv, "-append")[0]
    netdevs = _opt(argv, "-netdev")
    assert netdevs[0].startswith("user,id=mgmt,")
    assert "hostfwd=tcp:127.0.0.1:2202-:22" in netdevs[0]
    for netdev, link in zip(netdevs[1:], LINKS, strict=True):
        local, peer = config.link_ports(link, "node02")
        assert netdev == f"socket,id={link},udp=127.0.0.1:{peer},localaddr=127.0.0.1:{local}"
    nics = [d for d in _opt(argv, "-device") if d.startswith("virtio-net-pci")]
    slots = [int(d.split("addr=")[1], 16) for d in nics]
    assert slots == sorted(slots), "PCI slot order decides eth0..eth3"
    assert all("speed=1000,duplex=full" in d for d in nics[1:])
    # Every address the lab binds or targets on the host is loopback.
    joined = " ".join(argv)
    for token in joined.replace(",", " ").replace("=", " ").split():
        if token.count(".") == 3 and token[0].isdigit():
            host = token.split(":")[0].split("-")[0]
            assert host.startswith(("127.", "10.0.2.")), token


def test_known_hosts_line_drops_comment() -> None:
    line = nodes.known_hosts_line(2201, "ssh-ed25519 AAAAC3Nza root@node01")
    assert line == "[127.0.0.1]:2201 ssh-ed25519 AAAAC3Nza"


def test_debugfs_script_sets_mode_and_owner() -> None:
    script = nodes.debugfs_script([("/tmp/x/key", "/etc/ssh/key", 0o600)])
    assert script.splitlines() == [
        "rm /etc/ssh/key",
        "write /tmp/x/key /etc/ssh/key",
        "sif /etc/ssh/key mode 0o100600",
        "sif /etc/ssh/key uid 0",
        "sif /etc/ssh/key gid 0",
    ]


def test_ssh_argv_pins_host_keys() -> None:
    argv = ssh.ssh_argv(2201, pathlib.Path("/l/id"), pathlib.Path("/l/kh"), ["uname", "-a"])
    assert "StrictHostKeyChecking=yes" in argv
    assert "UserKnownHostsFile=/l/kh" in argv
    assert argv[-4:] == ["root@127.0.0.1", "--", "uname", "-a"]
    assert ssh.remote_command(["echo", "a b"]) == ["echo 'a b'"]


def test_classify_finds_lab_processes_only(lab: Lab) -> None:
    argv = nodes.qemu_argv(lab.run, LabConfig(), "node01")
    assert procs.classify(argv, lab.run.dir) == ("qemu", "node01")
    assert procs.classify(argv, lab.run.dir.parent / "other") is None
    bmcd = ["/usr/bin/python3", "-m", procs.BMCD_MODULE, str(lab.run.dir), "node02", "6231", "u"]
    assert procs.classify(bmcd, lab.run.dir) == ("bmcd", "node02")
    repod = ["/usr/bin/python3", "-m", "http.server", "--directory", str(lab.run.repo_dir), "1"]
    assert procs.classify(repod, lab.run.dir) == ("repod", "repo")
    # The lab tool itself mentions the dir but is no lab process.
    assert procs.classify(["hakvm", "lab", "--lab-dir", str(lab.dir), "down"], lab.run.dir) is None


def test_runtime_dir_is_outside_the_state_dir_and_one_per_lab(
    lab: Lab, tmp_path: pathlib.Path
) -> None:
    # The unprivileged lab user never needs the state dir (a checkout in a 0700 home).
    assert not lab.run.dir.is_relative_to(lab.dir)
    assert lab.run.dir.parent == tmp_path / "run"
    assert Lab(tmp_path / "other").run.dir != lab.run.dir
    assert Lab(tmp_path / "lab").run.dir == lab.run.dir
    argv = " ".join(nodes.qemu_argv(lab.run, LabConfig(), "node01"))
    assert str(lab.dir) not in argv


def test_as_lab_user_drops_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    argv = procs.as_lab_user(["qemu-system-x86_64"], procs.LabUser("hakvm-lab", 999, 998))
    assert "--reuid=999" in argv and "--no-new-privs" in argv
    assert argv[-2:] == ["--", "qemu-system-x86_64"]


def test_image_key_depends_on_packages() -> None:
    assert image_key(("a", "b")) == image_key(("b", "a"))
    assert image_key(("a",)) != image_key(("a", "c"))
    assert image_key(("a",), builder="1") != image_key(("a",), builder="2")
