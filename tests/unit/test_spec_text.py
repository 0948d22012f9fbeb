"""Free text in the spec: no control characters in any field, one line per field naming it;
strict BMC user and address (what IPMI allows; an IP literal or a DNS host name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hakvm.spec.models import is_host_address
from hakvm.spec.validate import validate_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _validate(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, allow_unicode=True))
    return [p.format("spec.yaml") for p in validate_file(spec).errors]


def test_each_field_with_a_control_character_gets_its_own_line(tmp_path: Path) -> None:
    data = yaml.safe_load((EXAMPLES / "lab.yaml").read_text())
    data["nodes"][0]["ssh"]["host"] = "127.0.0.1\nProxyCommand x"
    data["nodes"][0]["ssh"]["key_file"] = "id\red25519"
    data["nodes"][1]["bmc"]["password_file"] = "pw\tfile"
    data["nodes"][1]["storage"]["create_from"]["device"] = "/dev/vdb\u2028"
    data["vms"][0]["boot"] = {"source": "cdrom", "cdrom_image": "/iso/a\u202egpj.iso"}
    errors = _validate(tmp_path, data)
    fields = [
        "nodes[0].ssh.host",
        "nodes[0].ssh.key_file",
        "nodes[1].bmc.password_file",
        "nodes[1].storage.create_from.device",
        "vms[0].boot.cdrom_image",
    ]
    assert len(errors) == len(fields), errors
    for field, line in zip(fields, errors, strict=True):
        assert f": {field}: holds the control character U+" in line, line
        assert "\n" not in line and "\r" not in line


def test_an_escaped_control_character_names_its_field(tmp_path: Path) -> None:
    text = (EXAMPLES / "lab.yaml").read_text().replace("user: hakvm,", 'user: "hak\\avm",', 1)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    (line,) = [p.format("spec.yaml") for p in validate_file(spec).errors]
    assert ": nodes[0].bmc.user: a control character (U+0007)" in line, line


@pytest.mark.parametrize("user", ["fence", "ADMIN", "hakvm", "op.er-1@x", "a" * 16, "_x+y"])
def test_bmc_users_ipmi_allows_are_accepted(tmp_path: Path, user: str) -> None:
    data = yaml.safe_load((EXAMPLES / "lab.yaml").read_text())
    data["nodes"][0]["bmc"]["user"] = user
    assert _validate(tmp_path, data) == []


@pytest.mark.parametrize(
    "user", ["a" * 17, "two words", "it's", 'say"', "$(id)", "a\\b", "-P", "", "fencé"]
)
def test_bmc_users_that_could_mean_something_else_are_refused(tmp_path: Path, user: str) -> None:
    data = yaml.safe_load((EXAMPLES / "lab.yaml").read_text())
    data["nodes"][0]["bmc"]["user"] = user
    errors = _validate(tmp_path, data)
    assert len(errors) == 1 and ": nodes[0].bmc.user: " in errors[0], errors


@pytest.mark.parametrize(
    "address", ["10.0.30.11", "fe80::1", "2001:db8::7", "bmc", "bmc-node01.example.net", "a.b."]
)
def test_bmc_addresses_ip_or_dns_name_are_accepted(address: str) -> None:
    assert is_host_address(address)


@pytest.mark.parametrize(
    "address",
    ["10.0.2.2 -o lanplus", "-H", "a..b", "10.0.30", "999.1.1.1", "bmc_1", "x" * 64 + ".net",
     "host;id", "", "[fe80::1]"],
)  # fmt: skip
def test_bmc_addresses_that_are_not_a_host_are_refused(tmp_path: Path, address: str) -> None:
    assert not is_host_address(address)
    data = yaml.safe_load((EXAMPLES / "lab.yaml").read_text())
    data["nodes"][1]["bmc"]["address"] = address
    errors = _validate(tmp_path, data)
    assert len(errors) == 1 and ": nodes[1].bmc.address: " in errors[0], errors
