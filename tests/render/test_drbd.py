"""DRBD renderer: content rules (fast) and `drbdadm dump all` on the output (realtool)."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import pytest

from hakvm.render import drbd
from hakvm.render.base import REDACTED, RenderContext, Rendered, Secrets
from hakvm.spec.derive import derive
from hakvm.spec.models import ClusterSpec
from tests.render.checkers.drbd import DRBDADM, DRBDADM_84, check_drbd_config, check_drbd_files
from tests.render.checkers.netns import require
from tests.render.examples import EXAMPLES, example_data


def _ctx(
    data: dict[str, Any],
    secrets: Secrets | None = None,
    minors: dict[str, int] | None = None,
) -> RenderContext:
    spec = ClusterSpec.model_validate(data)
    return RenderContext(spec, derive(spec, minors), secrets or Secrets.redacted())


def _files(rendered: Rendered, node: str = "node01") -> dict[str, str]:
    return {os.path.basename(f.path): f.content for f in rendered[node]}


def _directives(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _heartbeat_rule() -> dict[str, Any]:
    """lab without its replication network: DRBD picks a heartbeat link."""
    data = copy.deepcopy(example_data("lab"))
    del data["replication"]
    for node in data["nodes"]:
        del node["interfaces"]["vlans"]
    return data


def _three_links() -> dict[str, Any]:
    """lab plus a third heartbeat network on its own NIC, at the highest priority."""
    data = _heartbeat_rule()
    data["heartbeat"].append({"network": "10.88.4.0/24", "priority": 5})
    for index, node in enumerate(data["nodes"], start=1):
        node["interfaces"]["ethernets"]["eth4"] = {"addresses": [f"10.88.4.{index}/24"]}
    return data


def _no_bond() -> dict[str, Any]:
    """Two plain ethernet links at the same priority: no bond to prefer."""
    data = _heartbeat_rule()
    data["heartbeat"] = [
        {"network": "10.88.1.0/24", "priority": 1},
        {"network": "10.88.3.0/24", "priority": 1},
    ]
    for index, node in enumerate(data["nodes"], start=1):
        node["interfaces"] = {
            "ethernets": {
                "eth3": {"addresses": [f"10.88.1.{index}/24"]},
                "eth4": {"addresses": [f"10.88.3.{index}/24"]},
            }
        }
    return data


def test_files_modes_and_both_nodes() -> None:
    rendered = drbd.render(_ctx(example_data("lab")))
    assert sorted(rendered) == ["node01", "node02"]
    assert rendered["node01"] == rendered["node02"]
    assert [(f.path, f.mode) for f in rendered["node01"]] == [
        ("/etc/drbd.d/global_common.conf", 0o644),
        ("/etc/drbd.d/vm-a.res", 0o600),
        ("/etc/drbd.d/vm-b.res", 0o600),
    ]
    assert all(f.content.startswith("# Managed by hakvm") for f in rendered["node01"])


def test_deterministic() -> None:
    assert drbd.render(_ctx(example_data("seed"))) == drbd.render(_ctx(example_data("seed")))


def test_drbd_version_follows_os() -> None:
    assert drbd.drbd_version(_ctx(example_data("lab")).spec) == "8.4"
    assert drbd.drbd_version(_ctx(example_data("seed")).spec) == "9"


def test_block_mode_allows_two_primaries() -> None:
    res = _directives(_files(drbd.render(_ctx(example_data("lab"))))["vm-a.res"])
    assert "allow-two-primaries yes;" in res


def test_qcow2_on_xfs_never_allows_two_primaries() -> None:
    files = _files(drbd.render(_ctx(example_data("seed"))))
    for name in ("vm1.res", "vm2.res", "vm3.res", "vm4.res"):
        assert not any("allow-two-primaries" in line for line in _directives(files[name]))


def test_mixed_modes_per_vm() -> None:
    data = example_data("lab")
    data["vms"][1]["disk"]["mode"] = "qcow2-on-xfs"
    files = _files(drbd.render(_ctx(data)))
    assert "allow-two-primaries yes;" in _directives(files["vm-a.res"])
    assert not any("allow-two-primaries" in line for line in _directives(files["vm-b.res"]))


def test_redacted_secret_for_hakvm_render() -> None:
    for text in _files(drbd.render(_ctx(example_data("lab")))).values():
        secrets = re.findall(r'shared-secret "([^"]*)";', text)
        assert secrets in ([], [REDACTED])


def test_real_secret_per_resource() -> None:
    secrets = Secrets(drbd_master="master-of-the-lab")
    files = _files(drbd.render(_ctx(example_data("lab"), secrets)))
    for vm in ("vm-a", "vm-b"):
        assert f'shared-secret "{secrets.drbd_secret(vm)}";' in _directives(files[f"{vm}.res"])
    assert secrets.drbd_secret("vm-a") != secrets.drbd_secret("vm-b")
    assert REDACTED not in "".join(files.values())


def test_common_policy_in_every_resource() -> None:
    for example in ("lab", "seed"):
        for name, text in _files(drbd.render(_ctx(example_data(example)))).items():
            if name == "global_common.conf":
                continue
            lines = _directives(text)
            for expected in (
                "protocol C;",
                "cram-hmac-alg sha256;",
                "after-sb-0pri discard-zero-changes;",
                "after-sb-1pri discard-secondary;",
                "after-sb-2pri disconnect;",
                "rr-conflict disconnect;",
                "on-io-error detach;",
                "fencing resource-and-stonith;",
                "meta-disk internal;",
                "c-plan-ahead 20;",
            ):
                assert expected in lines, (example, name, expected)


def test_lab_resource_replicates_over_its_own_vlan() -> None:
    ctx = _ctx(example_data("lab"))
    assert str(drbd.replication_link(ctx).network) == "10.88.2.0/24"
    assert str(drbd.replication_link(_ctx(_heartbeat_rule())).network) == "10.88.0.0/24"
    text = _files(drbd.render(ctx))["vm-b.res"]
    assert "the replication network of its own" in text
    blocks = re.findall(r"on (\S+) \{([^}]*)\}", text)
    assert [name for name, _ in blocks] == ["node01", "node02"]
    for (_, body), address in zip(blocks, ("10.88.2.1", "10.88.2.2"), strict=True):
        lines = _directives(body)
        assert "device /dev/drbd1;" in lines
        assert "disk /dev/hakvm/vm-b;" in lines
        assert f"address {address}:7790;" in lines


def test_grammar_8_4() -> None:
    text = _files(drbd.render(_ctx(example_data("lab"))))["vm-a.res"]
    disk = re.search(r"disk \{([^}]*)\}", text)
    assert disk is not None and "fencing resource-and-stonith;" in disk.group(1)
    lines = _directives(text)
    assert 'fence-peer "/usr/lib/drbd/crm-fence-peer.sh";' in lines
    # One handler per event in 8.4: unfencing and clearing the resync flag share it.
    assert (
        'after-resync-target "/usr/lib/drbd/crm-unfence-peer.sh; /usr/sbin/attrd_updater '
        '--name hakvm-resyncing-vm-a --delete || true";'
    ) in lines
    assert (
        'before-resync-target "/usr/sbin/attrd_updater --name hakvm-resyncing-vm-a '
        '--update 1 || true";'
    ) in lines
    assert not any(line.startswith(("node-id", "unfence-peer", "auto-promote")) for line in lines)


def test_grammar_9() -> None:
    text = _files(drbd.render(_ctx(example_data("seed"))))["vm3.res"]
    net = re.search(r"net \{([^}]*)\}", text)
    assert net is not None and "fencing resource-and-stonith;" in net.group(1)
    lines = _directives(text)
    assert 'fence-peer "/usr/lib/drbd/crm-fence-peer.9.sh";' in lines
    assert 'unfence-peer "/usr/lib/drbd/crm-unfence-peer.9.sh";' in lines
    flag = "/usr/sbin/attrd_updater --name hakvm-resyncing-vm3"
    assert f'before-resync-target "{flag} --update 1 || true";' in lines
    assert f'after-resync-target "{flag} --delete || true";' in lines
    assert "auto-promote no;" in lines
    assert [line for line in lines if line.startswith("node-id")] == ["node-id 0;", "node-id 1;"]
    assert "disk /dev/vg_drbd/vm3;" in lines


def test_minor_10() -> None:
    files = _files(drbd.render(_ctx(example_data("lab"), minors={"vm-b": 10})))
    lines = _directives(files["vm-b.res"])
    assert lines.count("device /dev/drbd10;") == 2
    assert "address 10.88.2.1:7799;" in lines
    assert "device /dev/drbd0;" in _directives(files["vm-a.res"])


def test_three_links_still_replicate_over_the_bond() -> None:
    ctx = _ctx(_three_links())
    assert str(drbd.replication_link(ctx).network) == "10.88.0.0/24"


def test_without_a_bond_the_link_corosync_uses_last() -> None:
    # Equal priorities: knet prefers the lowest link number, so DRBD takes the highest.
    ctx = _ctx(_no_bond())
    assert drbd.replication_link(ctx).link == 1
    text = _files(drbd.render(ctx))["vm-a.res"]
    assert "address 10.88.3.1:7789;" in _directives(text)
    assert "no heartbeat network is on a bond" in text
    data = _no_bond()
    data["heartbeat"][1]["priority"] = 3
    assert drbd.replication_link(_ctx(data)).link == 0


def test_bond_without_bridge_counts() -> None:
    data = _no_bond()
    for index, node in enumerate(data["nodes"], start=1):
        node["interfaces"]["bonds"] = {
            "bond0": {"members": ["eth1", "eth2"], "addresses": [f"10.88.1.{index}/24"]}
        }
        del node["interfaces"]["ethernets"]["eth3"]
    assert drbd.replication_link(_ctx(data)).link == 0


def test_no_vms_renders_only_global_common() -> None:
    data = example_data("lab")
    data["vms"] = []
    files = _files(drbd.render(_ctx(data)))
    assert list(files) == ["global_common.conf"]


def _realtool(version: str) -> None:
    require(DRBDADM, DRBDADM_84 if version == "8.4" else DRBDADM)


@pytest.mark.realtool
@pytest.mark.parametrize(("example", "version"), [("lab", "8.4"), ("seed", "9")])
@pytest.mark.parametrize("node", ["node01", "node02"])
def test_drbdadm_accepts(example: str, version: str, node: str) -> None:
    _realtool(version)
    ctx = _ctx(example_data(example), Secrets(drbd_master="x"))
    dump = check_drbd_files(drbd.render(ctx)[node], hostname=node, version=version)
    assert dump.count("\nresource ") == len(ctx.spec.vms)


@pytest.mark.realtool
@pytest.mark.parametrize("version", ["8.4", "9"])
def test_drbdadm_accepts_minor_10_and_three_links(version: str) -> None:
    _realtool(version)
    data = _three_links()
    data["cluster"]["os"] = "debian12" if version == "8.4" else "rhel9"
    ctx = _ctx(data, minors={"vm-a": 10})
    dump = check_drbd_config(_files(drbd.render(ctx)), hostname="node01", version=version)
    assert "/dev/drbd10" in dump
    assert "10.88.0.1:7799" in dump


@pytest.mark.realtool
def test_drbdadm_accepts_redacted_render() -> None:
    _realtool("8.4")
    check_drbd_config(
        _files(drbd.render(_ctx(example_data("lab")))), hostname="node02", version="8.4"
    )


@pytest.mark.realtool
@pytest.mark.parametrize(("example", "version"), [("lab", "9"), ("seed", "8.4")])
def test_checker_rejects_the_other_generations_grammar(example: str, version: str) -> None:
    _realtool(version)
    files = _files(drbd.render(_ctx(example_data(example))))
    with pytest.raises(AssertionError, match="Parse error"):
        check_drbd_config(files, hostname="node01", version=version)


@pytest.mark.realtool
def test_checker_rejects_port_clash() -> None:
    _realtool("8.4")
    files = _files(drbd.render(_ctx(example_data("lab"))))
    files["vm-b.res"] = files["vm-b.res"].replace(":7790;", ":7789;")
    with pytest.raises(AssertionError, match="conflicting use of IP"):
        check_drbd_config(files, hostname="node01", version="8.4")


@pytest.mark.realtool
def test_checker_rejects_minor_clash() -> None:
    _realtool("9")
    files = _files(drbd.render(_ctx(example_data("seed"))))
    files["vm2.res"] = files["vm2.res"].replace("/dev/drbd1;", "/dev/drbd0;")
    with pytest.raises(AssertionError, match="conflicting use of device-minor"):
        check_drbd_config(files, hostname="node01", version="9")


@pytest.mark.realtool
def test_checker_rejects_unbalanced_braces() -> None:
    _realtool("8.4")
    files = _files(drbd.render(_ctx(example_data("lab"))))
    files["vm-a.res"] = files["vm-a.res"].rstrip().removesuffix("}")
    with pytest.raises(AssertionError, match=r"unbalanced braces in vm-a\.res"):
        check_drbd_config(files, hostname="node01", version="8.4")


@pytest.mark.realtool
@pytest.mark.parametrize(
    ("version", "old", "new"),
    [
        ("8.4", "protocol C;", "protocol C"),  # missing semicolon
        ("9", "protocol C;", "protocol C"),
        ("8.4", "on-io-error detach;", "on-io-error detach;\n        no-such-option yes;"),
        ("9", "on-io-error detach;", "on-io-error detach;\n        no-such-option yes;"),
        # Only drbdadm 9 checks option values (drbdadm-84 leaves that to drbdsetup, which
        # needs the kernel module); test_drbdadm_accepts_minor_10_and_three_links renders
        # the same options in both grammars, so drbdadm 9 vets the values for 8.4 too.
        ("9", "rr-conflict disconnect;", "rr-conflict maybe;"),
    ],
)
def test_checker_rejects_bad_options(version: str, old: str, new: str) -> None:
    _realtool(version)
    data = example_data("lab")
    data["cluster"]["os"] = "debian12" if version == "8.4" else "rhel9"
    files = _files(drbd.render(_ctx(data)))
    assert old in files["vm-a.res"]
    files["vm-a.res"] = files["vm-a.res"].replace(old, new, 1)
    with pytest.raises(AssertionError, match="rejected"):
        check_drbd_config(files, hostname="node01", version=version)


def test_hakvm_render_writes_redacted_secrets(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hakvm.cli import cli

    result = CliRunner().invoke(cli, ["render", str(EXAMPLES / "lab.yaml"), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for node in ("node01", "node02"):
        res = tmp_path / node / "etc/drbd.d/vm-a.res"
        assert f'shared-secret "{REDACTED}";' in _directives(res.read_text())
        assert res.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / node / "etc/drbd.d/global_common.conf").is_file()
        assert (tmp_path / node / "etc/corosync/corosync.conf").is_file()


@pytest.mark.realtool
def test_the_replacement_join_makes_the_minor_before_it_attaches() -> None:
    """The commands join_as_sync_target sends, dry-run by the real drbdadm on the lab's files
    (8.4): `drbdadm attach` alone makes no resource or minor, so the join must first."""
    from tests.unit.test_replace import _commands, _join, _join_nodes, proc

    _realtool("8.4")
    nodes = _join_nodes(
        [proc("PausedSyncT", "Secondary/Primary", "Inconsistent/UpToDate")],
        [proc("PausedSyncS", "Primary/Secondary", "UpToDate/Inconsistent")],
    )
    _join(nodes)
    files = _files(drbd.render(_ctx(example_data("lab"))), "node02")
    sent = [a[1:] for a in _commands(nodes["node02"]) if a[0] == "drbdadm"]
    dry = "".join(
        check_drbd_config(files, hostname="node02", version="8.4", command=["-d", *args])
        for args in sent
        if "create-md" not in args  # drbdmeta would look for the LV
    )
    steps = [line.split()[1] for line in dry.splitlines() if line.startswith("drbdsetup-84")]
    assert steps.index("new-minor") < steps.index("attach"), dry
