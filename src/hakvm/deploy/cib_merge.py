"""The desired live CIB: the live one with hakvm's rendered configuration merged in.

hakvm owns the elements whose ids it renders; everything else an admin added (resources,
constraints, cluster properties) is kept. The node section and status belong to Pacemaker and
are never touched. The result is pushed as a `crm_diff` patch against the live CIB, so a
concurrent change is detected (the patch no longer applies) rather than overwritten.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree

# Sections replaced element-by-element, in schema order.
OWNED_SECTIONS = ("crm_config", "rsc_defaults", "op_defaults", "resources", "constraints")
SCHEMA_ORDER = ("crm_config", "rsc_defaults", "op_defaults", "nodes", "resources", "constraints")


class CibMergeError(Exception):
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
    """The live CIB with the rendered configuration merged into `sections`.

    `only_ids` limits resources/constraints to those ids (apply pushes fencing first)."""
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
    return etree.tostring(live, pretty_print=True, encoding="unicode")


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
