"""What apply refuses to destroy: only what hakvm created, or what the user named.

Three guards, each pure (facts in, a step or a refusal out). The phases use them, and the
engine runs those phases once before any other phase, so a refusal changes nothing.

* The cluster. A node's corosync.conf is hakvm's only if it starts with hakvm's exact
  managed header and names the spec's cluster; its CIB is read from disk, so a stopped
  cluster is seen too. Anything else is replaced only when it is a throw-away one-node
  cluster without resources (what the distribution's package starts) or when the user
  names it (`--replace-cluster NAME`); what is replaced is moved aside, never deleted.
* The disk `storage.create_from` names: never one in use (mounted anywhere in its tree,
  active swap, or held by LVM, dm-crypt or md), and one holding data (a partition table, a
  filesystem, an LVM PV) only if the spec says what it holds (`expect_signature`).
* Each VM's logical volume: tagged as this cluster's VM when hakvm creates it; an existing
  one without those tags is refused unless the user says `--adopt VM` (an earlier hakvm's,
  untagged, is recognised as `earlier_hakvm` says, and tagged).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from hakvm.deploy.cib_merge import CibMergeError, CibSummary, summarize
from hakvm.deploy.steps import Run, Step, run
from hakvm.errors import StateError
from hakvm.remote.disks import BlockDevice
from hakvm.remote.facts import CorosyncConf, LogicalVolume, NodeFacts, parse_corosync_conf
from hakvm.remote.pacemaker import CIB_DIR
from hakvm.render.base import MANAGED_HEADER
from hakvm.render.corosync import KEYFILE as AUTHKEY_PATH
from hakvm.render.corosync import PATH as COROSYNC_PATH
from hakvm.render.drbd import resource_path
from hakvm.spec.models import Node


class PlanError(StateError):
    """The nodes are in a state apply must not change by itself (one line, names the node)."""


@dataclass(frozen=True)
class RunOptions:
    """What the user allowed on the command line, beyond the spec."""

    replace_cluster: str | None = None  # --replace-cluster NAME
    adopt: frozenset[str] = frozenset()  # --adopt VM, for each VM named
    stamp: str = "unstamped"  # names the directory a replaced CIB moves to (one per run)


def moved_dir(stamp: str) -> str:
    return f"{CIB_DIR}/hakvm-moved-{stamp}"


# --- the cluster ---------------------------------------------------------------------------

# Moves every CIB file (cib.xml with its .sig, the numbered backups, cib.last) into $1 and
# copies the other files named after it there: nothing is deleted. Pacemaker must be stopped.
MOVE_SCRIPT = (
    "set -eu; dest=$1; shift; "
    'for f in "${dest%/*}"/cib*; do [ -e "$f" ] || continue; '
    'mkdir -p -m 0700 "$dest"; mv -- "$f" "$dest/"; done; '
    'for f in "$@"; do [ -e "$f" ] || continue; '
    'mkdir -p -m 0700 "$dest"; cp -p -- "$f" "$dest/"; done'
)


@dataclass(frozen=True)
class ClusterFound:
    """The cluster configuration a node holds (corosync.conf, the CIB on disk or live)."""

    name: str
    ours: bool  # this spec's cluster: nothing is replaced
    throwaway: bool  # one node, loopback only, no resources: nothing to lose
    what: str  # for the plan and the refusal


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _summaries(facts: NodeFacts) -> list[CibSummary] | None:
    """The live and on-disk CIBs' summaries; None: one is not readable XML."""
    try:
        return [summarize(c) for c in (facts.cib, facts.cib_on_disk) if c]
    except CibMergeError:
        return None


def cluster_on(facts: NodeFacts, cluster: str) -> ClusterFound | None:
    """What cluster the node belongs to; None: no cluster configuration at all."""
    conf_fact = facts.files.get(COROSYNC_PATH)
    conf = conf_fact.content if conf_fact is not None else None
    cibs = _summaries(facts)
    if conf is None and cibs == []:
        return None
    parsed = parse_corosync_conf(conf.decode("utf-8", "replace")) if conf is not None else None
    hakvm_conf = conf is not None and conf.startswith(MANAGED_HEADER.encode())
    names = [parsed.cluster_name if parsed else "", *(c.cluster_name for c in cibs or [])]
    name = next((n for n in names if n), "unnamed")
    if cibs is None:
        return ClusterFound(name, False, False, "its CIB on disk is not readable XML")
    resources = sorted({r for c in cibs for r in c.resources})
    hakvm_cib = any(c.hakvm for c in cibs)
    # Ours: hakvm's corosync.conf for this cluster; or (a corosync.conf lost or edited by
    # hand) a CIB hakvm pushed, with nothing naming another cluster.
    ours = (hakvm_conf and parsed is not None and parsed.cluster_name == cluster) or (
        hakvm_cib and all(n in ("", cluster) for n in names)
    )
    throwaway = (
        not resources
        and not hakvm_conf
        and not hakvm_cib
        and (parsed is None or (len(parsed.nodes) <= 1 and all(map(_loopback, parsed.addresses))))
    )
    return ClusterFound(name, ours, throwaway, _describe(parsed, hakvm_conf, cibs, hakvm_cib))


def _describe(
    conf: CorosyncConf | None, hakvm_conf: bool, cibs: list[CibSummary], hakvm_cib: bool
) -> str:
    """E.g. "corosync.conf not hakvm's, nodes db1, db2; CIB not hakvm's, 1 resource(s): ip"."""
    resources = sorted({r for c in cibs for r in c.resources})
    listed = ", ".join(resources[:5]) + (", ..." if len(resources) > 5 else "")
    held = f"{len(resources)} resource(s): {listed}" if resources else "no resources"
    not_conf, not_cib = ("" if hakvm_conf else "not "), ("" if hakvm_cib else "not ")
    nodes = ", ".join(conf.nodes) if conf and conf.nodes else "none"
    conf_part = f"corosync.conf {not_conf}hakvm's, nodes {nodes}" if conf else "no corosync.conf"
    return f"{conf_part}; " + (f"CIB {not_cib}hakvm's, {held}" if cibs else "no CIB")


def takeover(node: str, facts: NodeFacts, cluster: str, options: RunOptions) -> Step | None:
    """The step that stops the cluster a node holds and moves its configuration aside, when
    hakvm may replace it; None when there is none or it is this cluster (kept as it is)."""
    found = cluster_on(facts, cluster)
    if found is None or found.ours:
        return None
    named = options.replace_cluster == found.name
    if not found.throwaway and not named:
        raise PlanError(
            f"{node}: belongs to cluster {found.name} ({found.what}), not to this spec's "
            f"{cluster}: refusing to replace it; --replace-cluster {found.name} moves its "
            "configuration aside and replaces it"
        )
    dest = moved_dir(options.stamp)
    copies = [p for p in (COROSYNC_PATH, AUTHKEY_PATH) if facts.files.get(p) is not None]
    why = f" (--replace-cluster {found.name})" if named and not found.throwaway else ""
    kept = ", ".join(["the CIB files (cib.xml, its .sig, the backups)", *copies])
    return Step(
        node,
        "corosync",
        f"stop cluster {found.name} and move its configuration to {dest}/{why}",
        (
            run("systemctl", "stop", "pacemaker", "corosync"),
            run("sh", "-c", MOVE_SCRIPT, "sh", dest, *copies),
        ),
        f"cluster {found.name}: {found.what}\nnothing is deleted: {dest}/ keeps {kept}\n",
    )


# --- the disk storage.create_from names ------------------------------------------------------


def _in_use(dev: BlockDevice) -> list[str]:
    """What uses the device: a mount or active swap anywhere in its tree, and holders (LVM,
    dm-crypt, md...) on it or on one of its partitions."""
    found = []
    for d in (dev, *dev.descendants()):
        for mount in d.mountpoints:
            found.append(f"{d.name} is active swap" if mount == "[SWAP]" else
                         f"{d.name} is mounted at {mount}")  # fmt: skip
    layers = [dev, *(c for c in dev.children if c.type == "part")]
    found += [f"{h.name} ({h.type}) sits on {d.name}"
              for d in layers for h in d.children if h.type != "part"]  # fmt: skip
    return found


def _contents(dev: BlockDevice) -> list[str]:
    """What data the device holds: a partition table (and what its partitions hold), a
    filesystem or other signature, an LVM PV (of which volume group)."""
    found = []
    parts = [c for c in dev.children if c.type == "part"]
    if dev.partition_table or parts:
        inside = ", ".join(f"{p.name}: {p.fstype or 'no signature'}" for p in parts)
        table = f"a {dev.partition_table} partition table" if dev.partition_table else "partitions"
        found.append(f"{table} ({inside})" if inside else table)
    if dev.fstype == "LVM2_member" or dev.vg:
        group = f"of volume group {dev.vg}" if dev.vg else "in no volume group"
        found.append(f"an LVM physical volume {group}")
    elif dev.fstype:
        found.append(f"a {dev.fstype} signature")
    return found


def wipe_target(node: Node, facts: NodeFacts) -> BlockDevice:
    """The device `storage.create_from` names, resolved on the node, if hakvm may wipe it."""
    spec = node.storage.create_from
    assert spec is not None
    field = "storage.create_from"
    dev = facts.disks.resolve(spec.device)
    if dev is None:
        raise PlanError(f"{node.name}: {field}.device {spec.device} not found")
    named = spec.device if spec.device == dev.path else f"{spec.device} ({dev.path})"
    if spec.serial is not None and spec.serial not in (dev.serial, dev.wwn):
        raise PlanError(
            f"{node.name}: {field}.serial: {named} has serial {dev.serial or '-'} and WWN "
            f"{dev.wwn or '-'}, not {spec.serial}: refusing to wipe it"
        )
    busy = _in_use(dev)
    if busy:
        raise PlanError(f"{node.name}: {named} is in use ({'; '.join(busy)}): refusing to wipe it")
    held = " and ".join(_contents(dev))
    if spec.expect_signature is not None and spec.expect_signature != dev.signature:
        raise PlanError(
            f"{node.name}: {field}.expect_signature is {spec.expect_signature} but {named} "
            f"holds {held or 'nothing'} (signature {dev.signature or 'none'}): refusing to wipe it"
        )
    if held and spec.expect_signature is None:
        raise PlanError(
            f"{node.name}: {named} holds {held}: refusing to wipe it; if that may go, set "
            f"{field}.expect_signature: {dev.signature}"
        )
    return dev


def wipe_step(node: Node, facts: NodeFacts, cluster: str) -> Step:
    spec = node.storage.create_from
    assert spec is not None
    dev = wipe_target(node, facts)
    vg = node.storage.volume_group
    held = _contents(dev)
    diff = f"{spec.device} on {node.name} (lsblk):\n{dev.line()}\n"
    if held:
        diff += f"expect_signature {spec.expect_signature}: wipes {' and '.join(held)}\n"
    return Step(
        node.name,
        "storage",
        f"wipe {spec.device} and create volume group {vg}",
        (
            run("wipefs", "-a", spec.device),
            # vgcreate makes the device a PV itself: no separate pvcreate whose interruption
            # would leave a PV that the guard above then (rightly) refuses to wipe.
            run("vgcreate", "-q", "-y", "--addtag", f"hakvm_cluster={cluster}", vg, spec.device),
        ),
        diff,
    )


# --- each VM's logical volume --------------------------------------------------------------

CLUSTER_TAG = "hakvm_cluster="
VM_TAG = "hakvm_vm="


class LvOwner(StrEnum):
    OURS = "tagged as this cluster's VM"
    EARLIER = "an earlier hakvm's, untagged"
    UNTAGGED = "untagged"
    FOREIGN = "tagged for another cluster or VM"


def lv_tags(cluster: str, vm: str) -> tuple[str, str]:
    """The LVM tags hakvm puts on each VM's LV (tags allow [A-Za-z0-9_+.-/=!:&#])."""
    return (f"{CLUSTER_TAG}{cluster}", f"{VM_TAG}{vm}")


def _hakvm_tags(lv: LogicalVolume) -> list[str]:
    return [t for t in lv.tags if t.startswith((CLUSTER_TAG, VM_TAG))]


def earlier_hakvm(
    lv: LogicalVolume, node: str, cluster: str, res_file: bytes | None, conf: bytes | None
) -> bool:
    """An untagged LV that a hakvm from before LV tags created, as proven on its node by:
    hakvm's own DRBD resource file (its exact managed header) for the VM, naming this LV as
    this node's backing disk, on a node whose corosync.conf is hakvm's for this cluster.

    Those versions created the LV when it was missing and wrote that file for it; the only
    other way to that file was adopting an existing LV of that name, after which DRBD had
    written its metadata and a full sync over it. Either way the LV holds the VM's disk by
    now, so tagging it takes nothing from anyone. An LV without such a file (the VM added to
    the spec, nothing applied yet) proves nothing and needs --adopt."""
    header = MANAGED_HEADER.encode()
    if not res_file or not conf or not res_file.startswith(header) or not conf.startswith(header):
        return False
    if parse_corosync_conf(conf.decode("utf-8", "replace")).cluster_name != cluster:
        return False
    text = res_file.decode("utf-8", "replace")
    if not re.search(rf"^resource {re.escape(lv.name)} \{{$", text, re.M):
        return False
    host = re.search(rf"^\s*on {re.escape(node)} \{{\n(.*?)^\s*\}}", text, re.M | re.S)
    disk = f"/dev/{lv.vg}/{lv.name}"
    return (
        host is not None and re.search(rf"^\s*disk {re.escape(disk)};$", host[1], re.M) is not None
    )


def lv_owner(
    lv: LogicalVolume, node: str, cluster: str, res_file: bytes | None, conf: bytes | None
) -> LvOwner:
    hakvm = _hakvm_tags(lv)
    if hakvm:
        return (
            LvOwner.OURS if sorted(hakvm) == sorted(lv_tags(cluster, lv.name)) else LvOwner.FOREIGN
        )
    if earlier_hakvm(lv, node, cluster, res_file, conf):
        return LvOwner.EARLIER
    return LvOwner.UNTAGGED


def tag_command(lv: LogicalVolume, cluster: str) -> Run:
    """lvchange: hakvm's tags for this cluster's VM on, any other hakvm tag off."""
    wanted = lv_tags(cluster, lv.name)
    drop = [t for t in _hakvm_tags(lv) if t not in wanted]
    add = [t for t in wanted if t not in lv.tags]
    changes = [
        *(a for t in drop for a in ("--deltag", t)),
        *(a for t in add for a in ("--addtag", t)),
    ]
    return run("lvchange", *changes, f"{lv.vg}/{lv.name}")


def describe_lv(lv: LogicalVolume) -> str:
    hakvm = _hakvm_tags(lv)
    return f"tagged {','.join(hakvm)}" if hakvm else "untagged"


def lv_step(
    node: str, facts: NodeFacts, cluster: str, lv: LogicalVolume, adopt: bool
) -> Step | None:
    """For a VM's LV that exists: None if it is this cluster's VM's; a tagging step for an
    earlier hakvm's or one the user adopts; a refusal otherwise."""
    res = facts.files.get(resource_path(lv.name))
    conf = facts.files.get(COROSYNC_PATH)
    owner = lv_owner(
        lv, node, cluster, res.content if res else None, conf.content if conf else None
    )
    name = f"{lv.vg}/{lv.name}"
    if owner is LvOwner.OURS:
        return None
    if owner is LvOwner.EARLIER:
        proof = resource_path(lv.name)
        title = f"tag {name} as cluster {cluster}'s (made by an earlier hakvm: {proof} names it)"
    elif adopt:
        title = (
            f"adopt {name} (--adopt {lv.name}; {describe_lv(lv)}): tag it as cluster "
            f"{cluster}'s; DRBD writes its metadata at its end and may resync it from the peer"
        )
    else:
        raise PlanError(
            f"{node}: logical volume {name} exists and is not hakvm's ({describe_lv(lv)}): "
            f"refusing to put VM {lv.name}'s DRBD disk on it (its data would be overwritten); "
            f"--adopt {lv.name} takes it over"
        )
    return Step(node, "storage", title, (tag_command(lv, cluster),))
