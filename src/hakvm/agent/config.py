"""/etc/hakvm/agent.json: what a node's agent knows about its cluster, rendered from the spec
by render/monitoring.py (no secret: the peer's BMC password stays in the fencing phase's
0600 file, which the config only names)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FORMAT = 1


@dataclass(frozen=True)
class VmConfig:
    name: str
    preferred_node: str | None
    autostart: bool
    drbd_resource: str
    drbd_minor: int
    resync_attribute: str  # the node attribute DRBD's resync handler sets (render/drbd.py)


@dataclass(frozen=True)
class BmcConfig:
    """The peer's BMC, which this node fences (and checks)."""

    node: str
    address: str
    port: int
    user: str
    lanplus: bool
    password_file: str


@dataclass(frozen=True)
class AgentConfig:
    cluster: str
    node: str  # this node
    nodes: tuple[tuple[str, int], ...]  # (name, corosync node id), in the spec's order
    vms: tuple[VmConfig, ...] = ()
    bonds: dict[str, tuple[str, ...]] = field(default_factory=dict)  # this node's bonds
    peer_bmc: BmcConfig | None = None
    interval_s: int = 15
    bmc_check_interval_s: int = 60
    version: str = ""
    qdevice: bool = False  # the spec has a quorum device: this node's corosync-qdevice votes

    @property
    def peers(self) -> list[str]:
        return [name for name, _ in self.nodes if name != self.node]

    def node_name(self, node_id: int) -> str:
        return next((name for name, nid in self.nodes if nid == node_id), str(node_id))

    def drbd_node_id(self, name: str) -> int:
        """DRBD 9's node-id of a node (its index in the spec, as render/drbd.py numbers)."""
        return next((i for i, (n, _) in enumerate(self.nodes) if n == name), 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "cluster": self.cluster,
            "node": self.node,
            "version": self.version,
            "nodes": [{"name": n, "id": i} for n, i in self.nodes],
            "vms": [vm.__dict__ for vm in self.vms],
            "bonds": {b: list(m) for b, m in sorted(self.bonds.items())},
            "peer_bmc": None if self.peer_bmc is None else self.peer_bmc.__dict__,
            "interval_s": self.interval_s,
            "bmc_check_interval_s": self.bmc_check_interval_s,
            "qdevice": self.qdevice,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n"


def from_dict(data: dict[str, Any]) -> AgentConfig:
    """ValueError naming the key when the file is not what render/monitoring.py writes."""
    try:
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        vms = tuple(
            VmConfig(str(v["name"]), v.get("preferred_node"), bool(v["autostart"]),
                     str(v["drbd_resource"]), int(v["drbd_minor"]), str(v["resync_attribute"]))
            for v in data.get("vms", [])
        )  # fmt: skip
        bmc = data.get("peer_bmc")
        peer_bmc = None
        if bmc is not None:
            peer_bmc = BmcConfig(str(bmc["node"]), str(bmc["address"]), int(bmc["port"]),
                                 str(bmc["user"]), bool(bmc["lanplus"]),
                                 str(bmc["password_file"]))  # fmt: skip
        return AgentConfig(
            cluster=str(data["cluster"]),
            node=str(data["node"]),
            version=str(data.get("version", "")),
            nodes=tuple((str(n["name"]), int(n["id"])) for n in data["nodes"]),
            vms=vms,
            bonds={str(b): tuple(str(m) for m in ms) for b, ms in data.get("bonds", {}).items()},
            peer_bmc=peer_bmc,
            interval_s=int(data.get("interval_s", 15)),
            bmc_check_interval_s=int(data.get("bmc_check_interval_s", 60)),
            qdevice=bool(data.get("qdevice", False)),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"agent config: missing or wrong key {exc}") from None


def load(path: str) -> AgentConfig:
    with open(path, encoding="utf-8") as handle:
        return from_dict(json.load(handle))
