"""The ports the cluster listens on, as the renderers derive them: knet's UDP port per
heartbeat link (`ports.corosync` + the link's number), DRBD's TCP port per VM (`drbd_base` +
its minor), and QEMU's incoming-migration range (TCP). Each must be a port (at most 65535),
and no TCP port may be another's or sshd's (22), which a node needs to be reached at all.
knet's are UDP: they share no number space with the others."""

from __future__ import annotations

from hakvm.spec.derive import Derived
from hakvm.spec.loader import PathKey
from hakvm.spec.models import ClusterSpec

SSHD = 22
PORT_MAX = 65535


def port_problems(spec: ClusterSpec, derived: Derived) -> list[tuple[PathKey, str]]:
    """(the spec field to change, the problem) for each port that cannot be, once per field."""
    ports = spec.cluster.ports
    corosync = sorted(ports.corosync + link.link for link in derived.links) or [ports.corosync]
    drbd = sorted(d.port for d in derived.vms.values())
    migration = range(ports.migration_min, ports.migration_max + 1)
    found: dict[PathKey, str] = {}

    def check(field: str, taken: list[int], what: str, udp: bool = False) -> None:
        path: PathKey = ("cluster", "ports", field)
        if taken and taken[-1] > PORT_MAX:
            found.setdefault(path, f"{what} would need {'UDP ' if udp else ''}port "
                                   f"{taken[-1]}, above {PORT_MAX}")  # fmt: skip
        elif not udp and SSHD in taken:
            found.setdefault(path, f"{what} would take port {SSHD}, sshd's; choose another")

    check("corosync", corosync, f"knet's {len(corosync)} link(s) from {ports.corosync}", udp=True)
    check("drbd_base", drbd, f"DRBD's {len(drbd)} VM(s) from {ports.drbd_base}")
    check("migration_min", list(migration), "the migration range")
    if shared := [p for p in drbd if p in migration]:
        message = f"DRBD port {shared[0]} falls in the migration range; move drbd_base"
        found.setdefault(("cluster", "ports", "drbd_base"), message)
    return list(found.items())
