"""pcs / crmsh export scripts: coverage and secrecy (fast), and real pcs/crmsh runs offline
against an empty CIB whose result must configure exactly what cib.xml does (realtool)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
from lxml import etree

from hakvm.render import cib, export, libvirt
from hakvm.render.base import RenderContext
from tests.render.checkers.cib import (
    assert_same_configuration,
    check_cib,
    run_export_script,
)
from tests.render.examples import example_data, render_context


def _ids(ctx: RenderContext) -> set[str]:
    root = etree.fromstring(cib.cib_xml(ctx).encode())
    tags = ("primitive", "clone", "rsc_location", "rsc_colocation", "rsc_order")
    return {str(el.get("id")) for tag in tags for el in root.iter(tag)}


@pytest.mark.parametrize("example", ["lab", "seed"])
def test_scripts_mention_every_resource_and_constraint(example: str) -> None:
    ctx = render_context(example_data(example))
    ids = _ids(ctx)
    assert {vm.name for vm in ctx.spec.vms} <= ids
    for script in (export.pcs_script(ctx), export.crmsh_script(ctx)):
        missing = {i for i in ids if i not in script}
        assert not missing
        assert script.startswith("#!/bin/bash\n# Managed by hakvm")


def test_no_password_anywhere(tmp_path: Path) -> None:
    data = copy.deepcopy(example_data("lab"))
    secret = "Zq9-not-in-any-output-7Kx"
    for node in data["nodes"]:
        pw = tmp_path / f"{node['name']}.password"
        pw.write_text(secret + "\n")
        node["bmc"]["password_file"] = str(pw)
    ctx = render_context(data)
    texts = [export.pcs_script(ctx), export.crmsh_script(ctx), cib.cib_xml(ctx)]
    texts += [f.content for files in libvirt.render(ctx).values() for f in files]
    texts += [f.content for files in cib.render(ctx).values() for f in files]
    for text in texts:
        assert secret not in text
        assert "password=" not in text and "passwd=" not in text
    for script in texts[:2]:
        assert "host auth" not in script and "password_script=" in script


def test_export_render_files() -> None:
    rendered = export.render(render_context(example_data("lab")))
    files = rendered["cluster"]
    assert [(f.path, f.mode) for f in files] == [("pcs.sh", 0o755), ("crmsh.sh", 0o755)]
    assert rendered == export.render(render_context(example_data("lab")))


def test_same_configuration_detects_a_difference() -> None:
    text = cib.cib_xml(render_context(example_data("lab")))
    assert_same_configuration(text, text)
    with pytest.raises(AssertionError, match="vm-a_prefers_node01"):
        assert_same_configuration(text, text.replace('score="100"', 'score="300"', 1))


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (Debian package {tool}); run make deps")


@pytest.mark.realtool
@pytest.mark.parametrize("example", ["lab", "seed"])
def test_crmsh_script_builds_the_same_cib(example: str, tmp_path: Path) -> None:
    _need("crm")
    ctx = render_context(example_data(example))
    expected = cib.cib_xml(ctx)
    result = run_export_script(export.crmsh_script(ctx), expected, tmp_path, tool="crmsh")
    assert_same_configuration(expected, result)
    check_cib(result)


@pytest.mark.realtool
def test_pcs_script_builds_the_same_cib(tmp_path: Path) -> None:
    _need("pcs")
    ctx = render_context(example_data("lab"))
    expected = cib.cib_xml(ctx)
    result = run_export_script(export.pcs_script(ctx), expected, tmp_path, tool="pcs")
    assert_same_configuration(expected, result)
    check_cib(result)


@pytest.mark.realtool
def test_export_runners_reject_broken_scripts(tmp_path: Path) -> None:
    _need("crm")
    _need("pcs")
    ctx = render_context(example_data("lab"))
    expected = cib.cib_xml(ctx)
    crm = export.crmsh_script(ctx).replace("ocf:linbit:drbd", "ocf:linbit:no-such-agent")
    with pytest.raises(AssertionError, match="export script failed"):
        run_export_script(crm, expected, tmp_path, tool="crmsh")
    pcs = 'pcs -f "$CIB" resource create x ocf:linbit:no-such-agent --no-default-ops\n'
    with pytest.raises(AssertionError, match="export script failed"):
        run_export_script(pcs, expected, tmp_path, tool="pcs")
