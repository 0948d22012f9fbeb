"""Property tests: any valid spec renders files that the real tools accept.

Hypothesis draws valid specs (tests/render/strategies.py); each one must validate cleanly and
every rendered file goes to its real parser: corosync's own (`corosync -t` in a private
netns), `drbdadm -c FILE dump all`, `crm_verify --xml-file`, `virt-xml-validate`, `ifquery`
or libnm, `nft -c` (in a netns) or firewalld's zone reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from hakvm.render.base import CLUSTER, RenderContext, Secrets
from hakvm.render.tree import render_all
from hakvm.spec.validate import validate_file
from tests.render.checkers.cib import check_cib
from tests.render.checkers.corosync import check_corosync_conf
from tests.render.checkers.drbd import check_drbd_files
from tests.render.checkers.firewall import check_firewalld_zone, check_nftables
from tests.render.checkers.libvirt import check_domain_xml
from tests.render.checkers.netns import require
from tests.render.checkers.network import check_ifupdown, check_nm_profiles
from tests.render.strategies import cluster_specs

pytestmark = pytest.mark.realtool


def _validate(spec: dict[str, Any], tmp: Path) -> RenderContext:
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    report = validate_file(path)
    assert report.ok, "\n".join(report.lines())
    assert report.spec is not None and report.derived is not None
    return RenderContext(report.spec, report.derived, Secrets(drbd_master="0" * 64))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=cluster_specs())
def test_any_valid_spec_renders_files_the_real_tools_accept(
    spec: dict[str, Any], tmp_path: Path
) -> None:
    require("corosync", "drbdadm", "crm_verify", "virt-xml-validate", "nft", "ifquery")
    ctx = _validate(spec, tmp_path)
    rendered = render_all(ctx)
    debian = ctx.spec.cluster.os.value == "debian12"
    check_cib(next(f.content for f in rendered[CLUSTER] if f.path.endswith("cib.xml")))
    for node in ctx.spec.nodes:
        files = {f.path: f for f in rendered[node.name]}
        check_corosync_conf(files["/etc/corosync/corosync.conf"].content, node.name)
        check_drbd_files(list(files.values()), hostname=node.name, version="8.4" if debian else "9")
        for path, f in files.items():
            if path.startswith("/etc/hakvm/domains/"):
                check_domain_xml(f.content)
        if debian:
            check_ifupdown(files["/etc/network/interfaces.d/hakvm"].content)
            check_nftables(files["/etc/hakvm/nftables-hakvm.nft"].content)
        else:
            check_nm_profiles(
                {
                    Path(p).name: f.content
                    for p, f in files.items()
                    if p.startswith("/etc/NetworkManager/")
                }
            )
            check_firewalld_zone(files["/etc/firewalld/zones/hakvm.xml"].content)
