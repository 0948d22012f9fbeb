"""Real-tool checks of rendered network configuration.

- ifupdown (debian12): `ifquery --interfaces=FILE --list` parses the whole file (ifupdown's
  own parser: unknown methods, empty options, bad stanzas are errors), then
  `ifquery --interfaces=FILE IFACE` prints each interface's options as ifup would see them.
- NetworkManager keyfiles (rhel9): libnm's own keyfile reader (`NM.keyfile_read`, via
  PyGObject in the system python; Debian 12 ships libnm 1.42 = RHEL 9.2) reads the file,
  normalizes and verifies the connection, and writes it back with `NM.keyfile_write`. Any key
  that is in the file but missing from the re-write and is not a known property of its
  setting was silently ignored by NetworkManager: that is an error too (NM ignores unknown
  keys without a warning, e.g. `controller=` before NM 1.46).

Neither check touches the host's network: both only parse.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

IFQUERY = "ifquery"
SYSTEM_PYTHON = "/usr/bin/python3"  # has PyGObject (python3-gi); the venv does not


def require_ifquery() -> None:
    if shutil.which(IFQUERY) is None:
        pytest.skip("ifquery is not installed (apt-get install ifupdown)")


def check_ifupdown(text: str) -> dict[str, dict[str, str]]:
    """Raise AssertionError (with ifquery's stderr) unless ifupdown parses `text`.

    Returns {interface: {option: value}} as `ifquery IFACE` reports them (ifupdown adds
    derived options such as netmask/broadcast for a CIDR address).
    """
    require_ifquery()
    with tempfile.TemporaryDirectory(prefix="hakvm-ifupdown-") as tmp:
        path = Path(tmp) / "interfaces"
        path.write_text(text)
        listed = subprocess.run(
            [IFQUERY, f"--interfaces={path}", "--list", "--allow=auto"],
            capture_output=True,
            text=True,
            check=False,
        )
        if listed.returncode != 0:
            raise AssertionError(f"ifquery rejected the interfaces file:\n{listed.stderr}")
        out: dict[str, dict[str, str]] = {}
        for iface in listed.stdout.split():
            if iface == "lo":  # ifquery always lists the implicit loopback
                continue
            shown = subprocess.run(
                [IFQUERY, f"--interfaces={path}", iface],
                capture_output=True,
                text=True,
                check=False,
            )
            if shown.returncode != 0:
                raise AssertionError(f"ifquery {iface} failed:\n{shown.stderr}")
            options: dict[str, str] = {}
            for line in shown.stdout.splitlines():
                key, _, value = line.partition(":")
                options[key.strip()] = value.strip()
            out[iface] = options
        return out


_NM_SCRIPT = r"""
import json, sys
import gi
gi.require_version("NM", "1.0")
from gi.repository import GLib, NM

ALIASES = {"ethernet": "802-3-ethernet", "wifi": "802-11-wireless"}
# Keyfile-only keys that stand for a property under another name.
SPECIAL = {"ipv4": ("address", "route", "gateway"), "ipv6": ("address", "route", "gateway")}

def check(path):
    kf = GLib.KeyFile()
    try:
        kf.load_from_file(path, GLib.KeyFileFlags.NONE)
        conn = NM.keyfile_read(kf, "/etc/NetworkManager/system-connections",
                               NM.KeyfileHandlerFlags.NONE, None, None)
        conn.normalize()
        conn.verify()
    except GLib.Error as exc:
        return f"NetworkManager rejects the keyfile: {exc.message}", None
    written = NM.keyfile_write(conn, NM.KeyfileHandlerFlags.NONE, None, None)
    problems = []
    for group in kf.get_groups()[0]:
        for key in kf.get_keys(group)[0]:
            if written.has_group(group) and key in written.get_keys(group)[0]:
                continue
            setting = ALIASES.get(group, group)
            gtype = NM.Setting.lookup_type(setting)
            if not gtype or gtype.name == "invalid":
                problems.append(f"[{group}] is not a NetworkManager setting")
                continue
            if group == "bond":
                problems.append(f"[bond] {key}: dropped by NetworkManager")
                continue
            cls = getattr(NM, gtype.name[2:])
            names = {p.name for p in cls.list_properties()}
            if key not in names and not key.startswith(SPECIAL.get(group, ("\0",))):
                problems.append(
                    f"[{group}] {key}: unknown key, silently ignored by NetworkManager")
    if problems:
        return "\n".join(problems), None
    s_con = conn.get_setting_connection()
    result = {
        "id": s_con.get_id(),
        "uuid": s_con.get_uuid(),
        "type": s_con.get_connection_type(),
        "interface-name": s_con.get_interface_name(),
        "master": s_con.get_master(),
        "slave-type": s_con.get_slave_type(),
        "keyfile": written.to_data()[0],
    }
    ip4 = conn.get_setting_ip4_config()
    if ip4 is not None:
        result["ipv4.method"] = ip4.get_method()
        result["ipv4.addresses"] = [
            f"{a.get_address()}/{a.get_prefix()}"
            for a in (ip4.get_address(i) for i in range(ip4.get_num_addresses()))
        ]
        result["ipv4.gateway"] = ip4.get_gateway()
    ip6 = conn.get_setting_ip6_config()
    if ip6 is not None:
        result["ipv6.method"] = ip6.get_method()
    vlan = conn.get_setting_vlan()
    if vlan is not None:
        result["vlan"] = {"id": vlan.get_id(), "parent": vlan.get_parent()}
    bond = conn.get_setting_bond()
    if bond is not None:
        result["bond"] = {bond.get_option(i)[1]: bond.get_option(i)[2]
                          for i in range(bond.get_num_options())}
    return None, result

out = {}
for path in sys.argv[1:]:
    error, result = check(path)
    out[path] = {"error": error, "result": result}
print(json.dumps(out))
"""


def require_libnm() -> None:
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('NM', '1.0')"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("libnm GObject bindings missing (apt-get install gir1.2-nm-1.0 python3-gi)")


def check_nmconnections(files: dict[str, str]) -> dict[str, dict[str, object]]:
    """Raise AssertionError (with libnm's messages) unless NetworkManager's keyfile reader
    accepts every keyfile (name -> text) as a valid connection and ignores none of its keys.

    Returns, per name, the connection as NM understood it (id, uuid, type, interface-name,
    master, slave-type, ipv4.method/addresses/gateway, ipv6.method, bond options, and
    `keyfile`: NM's own re-write of the profile). One libnm process checks them all.
    """
    require_libnm()
    with tempfile.TemporaryDirectory(prefix="hakvm-nm-") as tmp:
        paths: dict[str, str] = {}
        for index, (name, text) in enumerate(files.items()):
            path = Path(tmp) / f"{index}-{Path(name).name}"
            path.write_text(text)
            paths[str(path)] = name
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-c", _NM_SCRIPT, *paths],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise AssertionError(f"libnm check crashed:\n{proc.stderr}")
    report: dict[str, dict[str, object]] = json.loads(proc.stdout)
    errors = [f"{paths[p]}: {r['error']}" for p, r in report.items() if r["error"]]
    if errors:
        raise AssertionError("libnm rejected:\n" + "\n".join(errors))
    return {paths[p]: r["result"] for p, r in report.items()}  # type: ignore[misc]


def check_nmconnection(text: str, filename: str = "hakvm.nmconnection") -> dict[str, object]:
    """`check_nmconnections` for one keyfile."""
    return check_nmconnections({filename: text})[filename]


def check_nm_profiles(files: dict[str, str]) -> dict[str, dict[str, object]]:
    """Check every keyfile of one node, then that they fit together: unique ids, uuids and
    interface names, every port's master is the uuid of a bond/bridge profile here and
    every VLAN's parent the uuid of a profile here."""
    parsed = check_nmconnections(files)
    by_uuid = {str(p["uuid"]): p for p in parsed.values()}
    for key in ("id", "uuid", "interface-name"):
        values = [p[key] for p in parsed.values()]
        if len(values) != len(set(values)):
            raise AssertionError(f"duplicate {key} among the NetworkManager profiles: {values}")
    for name, profile in parsed.items():
        vlan = profile.get("vlan")
        if isinstance(vlan, dict) and str(vlan["parent"]) not in by_uuid:
            raise AssertionError(
                f"{name}: VLAN parent {vlan['parent']} is not one of the rendered profiles"
            )
        master = profile["master"]
        if master is None:
            continue
        controller = by_uuid.get(str(master))
        if controller is None:
            raise AssertionError(f"{name}: master {master} is not one of the rendered profiles")
        if controller["type"] != profile["slave-type"]:
            raise AssertionError(
                f"{name}: slave-type {profile['slave-type']} but the master is a "
                f"{controller['type']}"
            )
    return parsed
