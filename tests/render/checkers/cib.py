"""Real-tool checks for the rendered CIB: crm_verify, and crm_simulate placement runs."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

# Promotion score Pacemaker's simulator cannot learn by itself: the drbd agent sets it from
# its monitor (crm_master), and simulated monitors set nothing. Injected as a node attribute.
PROMOTION_SCORE = "10000"


def _run(args: list[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, check=False, timeout=60,
        env=None if env is None else {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
    )


def _nodes(cib: etree._ElementTree) -> list[str]:
    return [str(n.get("uname")) for n in cib.iterfind("configuration/nodes/node")]


def check_cib(text: str) -> None:
    """crm_verify twice: the file as rendered (no errors; the only warnings allowed are the
    ones an empty status section causes: no quorum, nodes never seen), then with both nodes
    injected online and quorate (no errors and no warnings at all)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp, "cib.xml")
        raw.write_text(text)
        res = _run(["crm_verify", "--xml-file", str(raw), "-V"])
        out = res.stdout + res.stderr
        if res.returncode not in (0, 78) or "error" in out.lower():
            raise AssertionError(f"crm_verify rejected the CIB (rc {res.returncode}):\n{out}")
        nodes = _nodes(etree.parse(str(raw)))
        up = Path(tmp, "up.xml")
        args = ["crm_simulate", "--xml-file", str(raw), "--quorum", "1", "--save-output", str(up)]
        for node in nodes:
            args += ["--node-up", node]
        res = _run(args)
        if res.returncode != 0:
            raise AssertionError(f"crm_simulate could not load the CIB:\n{res.stderr}")
        res = _run(["crm_verify", "--xml-file", str(up), "-V"])
        out = (res.stdout + res.stderr).strip()
        if res.returncode != 0 or out:
            raise AssertionError(
                f"crm_verify with both nodes online (rc {res.returncode}):\n{out}"
            )


@dataclass(frozen=True)
class Placement:
    """Where things run after a simulated transition."""

    started: dict[str, set[str]]  # primitive id -> nodes where it is Started or Promoted
    promoted: dict[str, set[str]]  # primitive id -> nodes where it is Promoted
    summary: str  # crm_simulate's transition summary, for messages and Migrate checks
    cib: str  # the resulting CIB with status, to chain the next step from


def _set_transient(
    state: etree._Element, name: str, value: str, *, replace: bool = True
) -> None:
    """Set a transient attribute in a node_state (creating its sets); `replace=False` keeps
    a value already there."""
    nid = str(state.get("id"))
    attrs = state.find("transient_attributes")
    if attrs is None:
        attrs = etree.SubElement(state, "transient_attributes", id=nid)
    iset = attrs.find("instance_attributes")
    if iset is None:
        iset = etree.SubElement(attrs, "instance_attributes", id=f"status-{nid}")
    old = iset.find(f"nvpair[@name='{name}']")
    if old is not None:
        if not replace:
            return
        iset.remove(old)
    etree.SubElement(iset, "nvpair", id=f"status-{nid}-{name}", name=name, value=value)


class Simulation:
    """Chain crm_simulate transitions on a rendered CIB in a temp dir: bring nodes up, fail
    them, put them in standby, and read back placement with crm_mon."""

    def __init__(self, cib_text: str, tmp: Path) -> None:
        self.tmp = tmp
        self.step = 0
        self.current = tmp / "step0.xml"
        self.current.write_text(cib_text)
        tree = etree.parse(str(self.current))
        self.nodes = _nodes(tree)
        self.promotables = [
            str(p.get("id"))
            for c in tree.iterfind("configuration/resources/clone")
            for p in c.iterfind("primitive")
            if c.find("meta_attributes/nvpair[@name='promotable'][@value='true']") is not None
        ]

    def _inject_promotion_scores(self, path: Path, nodes: Iterable[str]) -> None:
        tree = etree.parse(str(path))
        wanted = set(nodes)
        for state in tree.iterfind("status/node_state"):
            if state.get("uname") not in wanted or state.get("crmd") != "online":
                continue
            for rid in self.promotables:
                _set_transient(state, f"master-{rid}", PROMOTION_SCORE, replace=False)
        tree.write(str(path))

    def set_transient(self, node: str, name: str, value: str) -> None:
        """Set a transient node attribute (as attrd_updater would) in the current state."""
        tree = etree.parse(str(self.current))
        state = tree.find(f"status/node_state[@uname='{node}']")
        assert state is not None, f"{node} has no state yet"
        _set_transient(state, name, value)
        tree.write(str(self.current))

    def run(
        self,
        up: Iterable[str] = (),
        fail: Iterable[str] = (),
        standby: Iterable[str] = (),
        rounds: int = 3,
    ) -> Placement:
        """Inject node events, then simulate until the cluster settles (`rounds` max)."""
        up, fail, standby = list(up), list(fail), list(standby)
        if standby:
            tree = etree.parse(str(self.current))
            for node in tree.iterfind("configuration/nodes/node"):
                if node.get("uname") in standby:
                    nid = node.get("id")
                    iset = etree.SubElement(node, "instance_attributes", id=f"nodes-{nid}")
                    etree.SubElement(
                        iset, "nvpair", id=f"nodes-{node.get('id')}-standby", name="standby",
                        value="on",
                    )
            tree.write(str(self.current))
        summaries = []
        for i in range(rounds):
            self.step += 1
            out = self.tmp / f"step{self.step}.xml"
            args = ["crm_simulate", "--xml-file", str(self.current), "--simulate",
                    "--quorum", "1", "--save-output", str(out)]
            if i == 0:
                for node in up:
                    args += ["--node-up", node]
                for node in fail:
                    args += ["--node-fail", node]
            res = _run(args)
            if res.returncode != 0:
                raise AssertionError(f"crm_simulate failed:\n{res.stdout}\n{res.stderr}")
            summary = res.stdout.split("Transition Summary:", 1)[-1].split("Executing", 1)[0]
            summaries.append(summary.strip())
            self._inject_promotion_scores(out, self.nodes)
            self.current = out
            if not summary.strip():
                break
        return self.placement("\n".join(s for s in summaries if s))

    def placement(self, summary: str = "") -> Placement:
        res = _run(["crm_mon", "-1", "--output-as=xml"], env={"CIB_file": str(self.current)})
        if res.returncode != 0:
            raise AssertionError(f"crm_mon failed:\n{res.stderr}")
        mon = etree.fromstring(res.stdout.encode())
        started: dict[str, set[str]] = {}
        promoted: dict[str, set[str]] = {}
        for rsc in mon.iter("resource"):
            rid = str(rsc.get("id"))
            role = rsc.get("role")
            for node in rsc.iterfind("node"):
                name = str(node.get("name"))
                if role in ("Started", "Promoted", "Unpromoted"):
                    started.setdefault(rid, set()).add(name)
                if role == "Promoted":
                    promoted.setdefault(rid, set()).add(name)
        return Placement(started, promoted, summary, self.current.read_text())


# --- export scripts (pcs / crmsh) -------------------------------------------------------------


def _empty_cib(nodes: Iterable[tuple[str, str]]) -> str:
    """An empty CIB as `cibadmin --empty` makes it, with the cluster's node entries (which
    a live cluster has before any admin script runs)."""
    res = _run(["cibadmin", "--empty"])
    if res.returncode != 0:
        raise AssertionError(f"cibadmin --empty failed:\n{res.stderr}")
    tree = etree.fromstring(res.stdout.encode())
    nodes_el = tree.find("configuration/nodes")
    assert nodes_el is not None
    for nid, uname in nodes:
        etree.SubElement(nodes_el, "node", id=nid, uname=uname)
    return etree.tostring(tree, encoding="unicode")


def run_export_script(script: str, cib_text: str, tmp: Path, tool: str = "crmsh") -> str:
    """Run a rendered pcs/crmsh script offline (its CIB_FILE argument) against an empty CIB
    holding `cib_text`'s nodes; return the resulting CIB. Raise with the tool's output.

    crmsh: the whole script under bash (one `crm configure` process). pcs: its `pcs -f`
    commands inside one pcs process (pcs_inproc.py), as one pcs start costs ~1.5 s."""
    nodes = [
        (str(n.get("id")), str(n.get("uname")))
        for n in etree.fromstring(cib_text.encode()).iterfind("configuration/nodes/node")
    ]
    target = tmp / "export-cib.xml"
    target.write_text(_empty_cib(nodes))
    path = tmp / "export.sh"
    path.write_text(script)
    if tool == "pcs":
        runner = Path(__file__).with_name("pcs_inproc.py")
        args = ["/usr/bin/python3", str(runner), str(path), str(target)]
    else:
        args = ["bash", str(path), str(target)]
    res = subprocess.run(args, capture_output=True, text=True, check=False, timeout=300)
    if res.returncode != 0:
        raise AssertionError(
            f"export script failed (rc {res.returncode}):\n{res.stdout}{res.stderr}"
        )
    return target.read_text()


def _pairs(el: etree._Element, tag: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted(
            (str(nv.get("name")), str(nv.get("value")))
            for s in el.iterfind(tag)
            for nv in s.iterfind("nvpair")
        )
    )


def _interval_s(value: str | None) -> str:
    """Pacemaker accepts 0, 0s, 10, 10s, 1min: compare in seconds."""
    value = value or "0"
    for suffix, factor in (("min", 60), ("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if value.endswith(suffix):
            return str(float(value[: -len(suffix)]) * factor)
    return str(float(value))


def cib_semantics(text: str) -> dict[str, object]:
    """What a CIB configures, without ids of nvpair sets and ops or formatting: properties,
    defaults, each resource (agent, params, meta, ops) and each constraint, keyed by id."""
    root = etree.fromstring(text.encode())
    conf = root.find("configuration")
    assert conf is not None
    props = dict(_pairs(conf, "crm_config/cluster_property_set"))
    for managed in ("dc-version", "cluster-infrastructure", "cluster-name", "have-watchdog"):
        props.pop(managed, None)
    out: dict[str, object] = {
        "properties": tuple(sorted(props.items())),
        "rsc_defaults": _pairs(conf, "rsc_defaults/meta_attributes"),
        "op_defaults": _pairs(conf, "op_defaults/meta_attributes"),
    }
    for prim in conf.iter("primitive"):
        parent = prim.getparent()
        ops = tuple(
            sorted(
                (str(op.get("name")), _interval_s(op.get("interval")), str(op.get("role")),
                 _interval_s(op.get("timeout")))
                for op in prim.iterfind("operations/op")
            )
        )
        out[f"primitive {prim.get('id')}"] = (
            prim.get("class"), prim.get("provider"), prim.get("type"),
            _pairs(prim, "instance_attributes"), _pairs(prim, "meta_attributes"), ops,
            parent.get("id") if parent is not None and parent.tag == "clone" else None,
        )
    for clone in conf.iter("clone"):
        out[f"clone {clone.get('id')}"] = _pairs(clone, "meta_attributes")
    for con in conf.find("constraints") if conf.find("constraints") is not None else []:
        # pcs writes the default role (rsc-role="Started") out; it means the same.
        attrs = {
            k: v for k, v in con.attrib.items()
            if k != "id" and not (k.endswith("role") and v == "Started")
        }
        # Equivalent spellings: no kind means Mandatory; +INFINITY / INFINITY.
        attrs.setdefault("kind", "Mandatory") if con.tag == "rsc_order" else None
        if "score" in attrs:
            attrs["score"] = {"+INFINITY": "INFINITY", "inf": "INFINITY"}.get(
                attrs["score"], attrs["score"]
            )
        rules = tuple(
            (
                {"+INFINITY": "INFINITY", "inf": "INFINITY", "-inf": "-INFINITY"}.get(
                    str(rule.get("score")), str(rule.get("score"))
                ),
                rule.get("boolean-op") or "and",
                tuple(
                    sorted(
                        tuple(sorted((k, v) for k, v in expr.attrib.items() if k != "id"))
                        for expr in rule.iterfind("expression")
                    )
                ),
            )
            for rule in con.iterfind("rule")
        )
        out[f"{con.tag} {con.get('id')}"] = (tuple(sorted(attrs.items())), rules)
    for alert in conf.iterfind("alerts/alert"):
        # Recipient ids are the tool's (crmsh numbers them): compare their values.
        out[f"alert {alert.get('id')}"] = (
            alert.get("path"), tuple(sorted(str(r.get("value")) for r in alert.iter("recipient"))),
            tuple(sorted(_alert_part(c) for c in alert if c.tag != "recipient")),
        )
    return out


def _alert_part(element: etree._Element) -> str:
    """An alert's attribute set by its name=value pairs (ids and attribute order are the
    tool's), anything else by its XML."""
    if element.tag in ("meta_attributes", "instance_attributes"):
        pairs = sorted(f"{n.get('name')}={n.get('value')}" for n in element.iter("nvpair"))
        return f"{element.tag} {' '.join(pairs)}"
    return str(etree.tostring(element).decode())


def assert_same_configuration(expected_cib: str, actual_cib: str) -> None:
    want, got = cib_semantics(expected_cib), cib_semantics(actual_cib)
    if want != got:
        diff = [
            f"{key}:\n  want {want.get(key)}\n  got  {got.get(key)}"
            for key in sorted(set(want) | set(got))
            if want.get(key) != got.get(key)
        ]
        raise AssertionError("configurations differ:\n" + "\n".join(diff))
