"""A cluster spec pointed at one lab: its SSH ports, client key, known_hosts and BMCs.

``examples/lab.yaml`` (and ``lab-qdevice.yaml``) target the default lab (``.hakvm/lab``,
ports 2201/2202, qnetd 5403); tests, benchmarks and the demo may run a lab elsewhere, so
they derive their spec with this.
"""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from hakvm.lab import qnetd
from hakvm.lab.state import Lab


def lab_spec(
    template: pathlib.Path,
    lab_dir: pathlib.Path,
    out: pathlib.Path,
    overrides: dict[str, Any] | None = None,
    timing: dict[str, Any] | None = None,
    *,
    pool_size: str | None = None,
) -> pathlib.Path:
    """Write ``template`` re-pointed at the running lab in ``lab_dir`` to ``out``.

    ``overrides`` maps a VM field to a new value for every VM (e.g. ``{"disk": {...}}``);
    ``timing`` sets ``cluster.timing`` fields (None removes one: the spec default applies);
    ``pool_size`` replaces every node's ``storage.size`` (the lab's storage disk is 20 GiB).
    """
    lab = Lab(lab_dir)
    config = lab.load()
    spec: dict[str, Any] = yaml.safe_load(template.read_text())
    for node in spec["nodes"]:
        name = node["name"]
        node["ssh"]["port"] = config.ssh_port_of(name)
        node["ssh"]["key_file"] = str(lab.ssh_key)
        node["ssh"]["known_hosts"] = str(lab.known_hosts)
        node["bmc"]["port"] = config.bmc_port_of(name)
        node["bmc"]["user"] = config.bmc_user
        node["bmc"]["password_file"] = str(lab.bmc_password_file(name))
        if pool_size is not None:
            node["storage"]["size"] = pool_size
    device = spec.get("quorum_device")
    if device is not None and "local" in device:  # the lab's own qnetd (lab-qdevice.yaml)
        device["port"] = config.qnetd_port
        device["local"]["nss_db"] = str(qnetd.nss_db_link(lab))
    for vm in spec.get("vms", []):
        vm.update(overrides or {})
    spec_timing = spec["cluster"].setdefault("timing", {})
    for key, value in (timing or {}).items():
        if value is None:
            spec_timing.pop(key, None)
        else:
            spec_timing[key] = value
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out
