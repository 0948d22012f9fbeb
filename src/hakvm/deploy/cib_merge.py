"""The desired live CIB: the live one with hakvm's rendered configuration merged in.

hakvm owns the elements whose ids it renders; everything else an admin added (resources,
constraints, cluster properties) is kept. The node section and status belong to Pacemaker and
are never touched. The result is pushed as a `crm_diff` patch against the live CIB, so a
concurrent change is detected (the patch no longer applies) rather than overwritten.

A VM removed from the spec: its resources are recognised as hakvm's by what only hakvm
renders (see `owned_vm`), not by id alone, and they are deleted with every constraint that
references them, but only once the VM's target-role is Stopped (`hakvm vm remove` sets it and
waits): deleting a running VM's resources would make Pacemaker stop it as an orphan, so a VM
dropped from the spec by mistake keeps running until an admin stops it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from hakvm.errors import FailedError
from hakvm.render.cib import drbd_clone_id, drbd_id, fence_id, fs_id, password_script_path, vm_id
from hakvm.render.libvirt import domain_path, qcow2_dir

# Sections replaced element-by-element, in schema order.
OWNED_SECTIONS = ("crm_config", "rsc_defaults", "op_defaults", "resources", "constraints",
                  "alerts")  # fmt: skip
SCHEMA_ORDER = ("crm_config", "rsc_defaults", "op_defaults", "nodes", "resources", "constraints",
                "alerts")  # fmt: skip


class CibMergeError(FailedError):
    pass


def _parse(text: str, what: str) -> etree._Element:
    try:
        parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
        return etree.fromstring(text.encode(), parser)
    except etree.XMLSyntaxError as exc:
        raise CibMergeError(f"{what} CIB is not valid XML: {exc}") from None


def _section(conf: etree._Element, name: str) -> etree._Element:
    found = conf.find(name)
    if found is not None:
        return found
    new = etree.Element(name)
    # Insert in schema order: Pacemaker rejects out-of-order sections.
    later = SCHEMA_ORDER[SCHEMA_ORDER.index(name) + 1 :]
    for child in conf:
        if child.tag in later:
            child.addprevious(new)
            return new
    conf.append(new)
    return new


def _merge_nvset(live_set: etree._Element, wanted: etree._Element) -> None:
    """Set wanted nvpairs by name; keep the live ones hakvm does not render (dc-version...)."""
    by_name = {nv.get("name"): nv for nv in live_set.findall("nvpair")}
    for nv in wanted.findall("nvpair"):
        current = by_name.get(nv.get("name"))
        if current is None:
            live_set.append(etree.fromstring(etree.tostring(nv)))
        elif current.get("value") != nv.get("value"):
            current.set("value", nv.get("value") or "")


# Sections resource agents write into their own primitive at runtime (VirtualDomain sets
# utilization from the domain's vCPUs and memory): the live values are kept.
AGENT_OWNED = ("utilization",)


def _keep_agent_owned(current: etree._Element, wanted: etree._Element) -> None:
    for prim in current.iter("primitive"):
        target = wanted if wanted.get("id") == prim.get("id") else None
        if target is None:
            target = next((p for p in wanted.iter("primitive") if p.get("id") == prim.get("id")),
                          None)  # fmt: skip
        if target is None:
            continue
        for tag in AGENT_OWNED:
            live_part = prim.find(tag)
            if live_part is not None and target.find(tag) is None:
                target.append(etree.fromstring(etree.tostring(live_part)))


def _replace_children(live: etree._Element, wanted: Iterable[etree._Element]) -> None:
    wanted = list(wanted)
    ids = {w.get("id") for w in wanted}
    live_by_id = {c.get("id"): c for c in live}
    for w in wanted:
        current = live_by_id.get(w.get("id"))
        copy = etree.fromstring(etree.tostring(w))
        if current is not None:
            _keep_agent_owned(current, copy)
        if current is None:
            live.append(copy)
        elif etree.tostring(current, method="c14n") != etree.tostring(copy, method="c14n"):
            current.addnext(copy)
            live.remove(current)
    del ids


def desired_cib(
    live_text: str,
    rendered_text: str,
    sections: Iterable[str] = OWNED_SECTIONS,
    only_ids: set[str] | None = None,
) -> str:
    """The live CIB with the rendered configuration merged into `sections`, less the stopped
    hakvm VMs the rendered configuration no longer has.

    `only_ids` limits resources/constraints to those ids (apply pushes fencing first) and
    deletes nothing."""
    live = _parse(live_text, "live")
    rendered = _parse(rendered_text, "rendered")
    live_conf = live.find("configuration")
    rendered_conf = rendered.find("configuration")
    if live_conf is None or rendered_conf is None:
        raise CibMergeError("a CIB without a configuration section")
    for name in sections:
        wanted_section = rendered_conf.find(name)
        if wanted_section is None:
            continue
        if name == "alerts" and only_ids is not None:
            continue  # the first push (fencing) carries no alert
        live_section = _section(live_conf, name)
        if name in ("crm_config", "rsc_defaults", "op_defaults"):
            for wanted_set in wanted_section:
                current = live_section.find(f"*[@id='{wanted_set.get('id')}']")
                if current is None:
                    live_section.append(etree.fromstring(etree.tostring(wanted_set)))
                else:
                    _merge_nvset(current, wanted_set)
        else:
            children = [c for c in wanted_section if only_ids is None or c.get("id") in only_ids]
            _replace_children(live_section, children)
    if only_ids is None and "resources" in sections:
        for vm in sorted(_stale_vms(live_conf, rendered_conf)):
            _remove_vm(live_conf, vm)
    return etree.tostring(live, pretty_print=True, encoding="unicode")


# --- hakvm's VMs in a CIB ------------------------------------------------------------------


def _param(el: etree._Element, name: str) -> str | None:
    nv = el.find(f"instance_attributes/nvpair[@name='{name}']")
    return None if nv is None else nv.get("value")


def _is_agent(el: etree._Element, provider: str, kind: str) -> bool:
    return (
        el.tag == "primitive"
        and el.get("class") == "ocf"
        and el.get("provider") == provider
        and el.get("type") == kind
    )


def owned_vm(el: etree._Element) -> str | None:
    """The VM a top-level resource belongs to, if hakvm rendered it, else None.

    Each kind is recognised by an id and a parameter that both derive from the VM's name and
    point into hakvm's own paths, so an admin's resource named like one is never taken."""
    rid = el.get("id") or ""
    if _is_agent(el, "heartbeat", "VirtualDomain") and _param(el, "config") == domain_path(rid):
        return rid
    if el.tag == "clone" and rid.endswith("_drbd_clone"):
        vm = rid.removesuffix("_drbd_clone")
        child = el.find("primitive")
        if (
            child is not None
            and child.get("id") == drbd_id(vm)
            and _is_agent(child, "linbit", "drbd")
            and _param(child, "drbd_resource") == vm
        ):
            return vm
    if rid.endswith("_fs") and _is_agent(el, "heartbeat", "Filesystem"):
        vm = rid.removesuffix("_fs")
        if _param(el, "directory") == qcow2_dir(vm):
            return vm
    return None


def _owned(conf: etree._Element) -> dict[str, list[etree._Element]]:
    found: dict[str, list[etree._Element]] = {}
    for el in conf.findall("resources/*"):
        vm = owned_vm(el)
        if vm is not None:
            found.setdefault(vm, []).append(el)
    return found


def _stopped(resources: list[etree._Element], vm: str) -> bool:
    """Its VirtualDomain has target-role Stopped (or is gone already)."""
    domain = next((el for el in resources if el.get("id") == vm_id(vm)), None)
    if domain is None:
        return True
    roles = domain.iterfind("meta_attributes/nvpair[@name='target-role']")
    return any((nv.get("value") or "").lower() == "stopped" for nv in roles)


def _stale_vms(live_conf: etree._Element, rendered_conf: etree._Element) -> set[str]:
    wanted = set(_owned(rendered_conf))
    return {
        vm
        for vm, resources in _owned(live_conf).items()
        if vm not in wanted and _stopped(resources, vm)
    }


def _references(constraint: etree._Element) -> set[str]:
    refs = {constraint.get(a) for a in ("rsc", "with-rsc", "first", "then")}
    refs |= {ref.get("id") for ref in constraint.iter("resource_ref")}
    return {r for r in refs if r}


def _remove_vm(conf: etree._Element, vm: str) -> list[str]:
    """Delete the VM's resources and every constraint naming one of them (hakvm's, the
    admin's, crm_resource's cli-* and DRBD's fence constraints: all would dangle)."""
    removed: list[str] = []
    ids: set[str] = set()
    all_ids = {el.get("id") for el in conf.iterfind("resources//*[@id]")}
    for el in _owned(conf).get(vm, []):
        ids |= {d.get("id") or "" for d in el.iter() if d.tag in ("primitive", "clone")}
        removed.append(el.get("id") or "")
        _drop(el)
    # A constraint left behind by an earlier, partial removal names a resource that no
    # longer exists at all: it goes too (never one naming an admin's resource of that id).
    derived = {vm_id(vm), drbd_id(vm), drbd_clone_id(vm), fs_id(vm)}
    ids |= derived - all_ids
    for con in conf.findall("constraints/*"):
        if _references(con) & ids:
            removed.append(con.get("id") or "")
            _drop(con)
    return removed


def _drop(el: etree._Element) -> None:
    parent = el.getparent()
    if parent is not None:
        parent.remove(el)


def without_vm(cib_text: str, vm: str) -> tuple[str, list[str]]:
    """The CIB without hakvm's resources of `vm` and the constraints naming them, and the
    ids removed (none: the VM is gone already, the text is returned unchanged)."""
    root = _parse(cib_text, "live")
    conf = root.find("configuration")
    if conf is None:
        raise CibMergeError("a CIB without a configuration section")
    removed = _remove_vm(conf, vm)
    if not removed:
        return cib_text, []
    return etree.tostring(root, pretty_print=True, encoding="unicode"), removed


def vm_resource_ids(cib_text: str, vm: str) -> list[str]:
    """hakvm's top-level resources of `vm`, in stop order: domain, filesystem, DRBD clone."""
    conf = _parse(cib_text, "live").find("configuration")
    if conf is None:
        return []
    order = {vm_id(vm): 0, fs_id(vm): 1, drbd_clone_id(vm): 2}
    ids = [el.get("id") or "" for el in _owned(conf).get(vm, [])]
    return sorted(ids, key=lambda i: order.get(i, 3))


def configuration_text(cib_text: str) -> str:
    """The configuration section alone, pretty-printed: what `plan` diffs for people."""
    root = _parse(cib_text, "live")
    conf = root.find("configuration")
    if conf is None:
        return ""
    return etree.tostring(conf, pretty_print=True, encoding="unicode")


def resource_ids(rendered_text: str, kinds: tuple[str, ...] = ("primitive", "clone")) -> list[str]:
    root = _parse(rendered_text, "rendered")
    resources = root.find("configuration/resources")
    if resources is None:
        return []
    return [c.get("id") or "" for c in resources if c.tag in kinds]


def stonith_ids(rendered_text: str) -> set[str]:
    """Fence devices and the constraints that only mention them (pushed first)."""
    root = _parse(rendered_text, "rendered")
    conf = root.find("configuration")
    if conf is None:
        return set()
    ids = {
        p.get("id") or ""
        for p in conf.findall("resources/primitive")
        if p.get("class") == "stonith"
    }
    for con in conf.findall("constraints/*"):
        if con.get("rsc") in ids:
            ids.add(con.get("id") or "")
    return ids


def fence_targets(rendered_text: str) -> dict[str, str]:
    """Each fence device -> the node it fences (its pcmk_host_list)."""
    root = _parse(rendered_text, "rendered")
    return {
        p.get("id") or "": nv.get("value") or ""
        for p in root.iterfind("configuration/resources/primitive[@class='stonith']")
        for nv in p.iterfind("instance_attributes/nvpair[@name='pcmk_host_list']")
    }


# --- whose CIB ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CibSummary:
    """What a CIB holds, for deciding whether apply may set it aside."""

    cluster_name: str  # cib-bootstrap-options cluster-name: the controller copies corosync's
    resources: tuple[str, ...]  # top-level resource ids
    hakvm: bool  # carries hakvm's marker (see `summarize`)


def summarize(cib_text: str) -> CibSummary:
    """The CIB's cluster name, its resources, and whether hakvm pushed it.

    hakvm's marker is its fence device: a stonith resource `<node>_fence` whose
    password_script is hakvm's own file for that node (/etc/hakvm/fence/<node>.password.sh).
    Every CIB hakvm pushes has one (fencing is required and pushed before anything else), and
    no other tool writes that path. Raises CibMergeError for a CIB that is not XML."""
    conf = _parse(cib_text, "the node's").find("configuration")
    if conf is None:
        return CibSummary("", (), hakvm=False)
    name = conf.find("crm_config/cluster_property_set/nvpair[@name='cluster-name']")
    resources = tuple(el.get("id") or "" for el in conf.findall("resources/*"))
    marked = any(
        p.get("class") == "stonith"
        and (node := _param(p, "pcmk_host_list")) is not None
        and p.get("id") == fence_id(node)
        and _param(p, "password_script") == password_script_path(node)
        for p in conf.findall("resources/primitive")
    )
    return CibSummary("" if name is None else name.get("value") or "", resources, marked)
