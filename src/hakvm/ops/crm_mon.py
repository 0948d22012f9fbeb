"""Parse `crm_mon --output-as=xml`: Pacemaker's own machine-readable cluster state."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree


@dataclass(frozen=True)
class NodeState:
    name: str
    online: bool
    standby: bool
    unclean: bool
    maintenance: bool
    is_dc: bool


@dataclass
class ResourceState:
    id: str
    agent: str
    active_on: list[str] = field(default_factory=list)
    promoted_on: list[str] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)  # node -> role
    failed: bool = False
    managed: bool = True
    role: str = "Stopped"
    pending: str = ""  # an operation in flight ("Starting", "Migrating", ...)

    @property
    def running_on(self) -> list[str]:
        """Nodes where it is settled and running: active with no operation in flight."""
        return [] if self.pending else list(self.active_on)


@dataclass(frozen=True)
class Failure:
    resource: str
    node: str
    task: str
    exitreason: str
    status: str

    def describe(self) -> str:
        reason = f": {self.exitreason}" if self.exitreason else ""
        return f"{self.resource} {self.task} on {self.node} {self.status}{reason}"


@dataclass(frozen=True)
class FenceEvent:
    action: str
    target: str
    delegate: str
    status: str
    completed: str


@dataclass
class ClusterState:
    dc: str | None = None
    quorate: bool = False
    stonith_enabled: bool = True
    no_quorum_policy: str = ""
    maintenance_mode: bool = False
    nodes: dict[str, NodeState] = field(default_factory=dict)
    resources: dict[str, ResourceState] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    fencing: list[FenceEvent] = field(default_factory=list)
    # Transient and permanent node attributes, as crm_mon lists them: node -> name -> value.
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)


def _true(value: str | None) -> bool:
    return value == "true"


def _add_resource(state: ClusterState, el: etree._Element, key: str | None = None) -> None:
    rid = key or el.get("id") or ""
    res = state.resources.setdefault(rid, ResourceState(rid, el.get("resource_agent", "")))
    res.failed = res.failed or _true(el.get("failed"))
    res.managed = res.managed and el.get("managed", "true") == "true"
    role = el.get("role", "Stopped")
    if el.get("pending"):
        res.pending = el.get("pending", "")
    elif role in ("Starting", "Stopping", "Migrating", "Promoting", "Demoting"):
        res.pending = role
    for node in el.findall("node"):
        name = node.get("name", "")
        if _true(el.get("active")):
            if name not in res.active_on:
                res.active_on.append(name)
            res.roles[name] = role
            if role in ("Promoted", "Master"):
                res.promoted_on.append(name)
    if res.active_on:
        res.role = "Promoted" if res.promoted_on else "Started"


def parse_crm_mon(text: str) -> ClusterState:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    root = etree.fromstring(text.encode(), parser)
    state = ClusterState()
    dc = root.find("summary/current_dc")
    if dc is not None and _true(dc.get("present")):
        state.dc = dc.get("name")
        state.quorate = _true(dc.get("with_quorum"))
    options = root.find("summary/cluster_options")
    if options is not None:
        state.stonith_enabled = _true(options.get("stonith-enabled"))
        state.no_quorum_policy = options.get("no-quorum-policy", "")
        state.maintenance_mode = _true(options.get("maintenance-mode"))
    for node in root.findall("nodes/node"):
        name = node.get("name", "")
        state.nodes[name] = NodeState(
            name,
            _true(node.get("online")),
            _true(node.get("standby")),
            _true(node.get("unclean")),
            _true(node.get("maintenance")),
            _true(node.get("is_dc")),
        )
    resources = root.find("resources")
    for el in resources if resources is not None else []:
        if el.tag == "resource":
            _add_resource(state, el)
        elif el.tag in ("clone", "group", "bundle"):
            clone_id = el.get("id", "")
            for child in el.iter("resource"):
                _add_resource(state, child, clone_id)
                _add_resource(state, child)
    for failure in root.findall("failures/failure"):
        op_key = failure.get("op_key", "")
        task = failure.get("task", "")
        resource = op_key.rsplit("_", 2)[0] if op_key.count("_") >= 2 else op_key
        state.failures.append(
            Failure(
                resource,
                failure.get("node", ""),
                task,
                failure.get("exitreason", ""),
                failure.get("exitstatus", failure.get("status", "")),
            )
        )
    for node in root.findall("node_attributes/node"):
        state.attributes[node.get("name", "")] = {
            attr.get("name", ""): attr.get("value", "") for attr in node.findall("attribute")
        }
    for event in root.findall("fence_history/fence_event"):
        state.fencing.append(
            FenceEvent(
                event.get("action", ""),
                event.get("target", ""),
                event.get("delegate", ""),
                event.get("status", ""),
                event.get("completed", ""),
            )
        )
    return state
