"""Apply's quorum device phases (pure: steps are values, as in phases.py).

``qdevice``  the certificates qdevice and qnetd authenticate each other with: made once,
             cluster-wide (deploy/actions.py, crmsh's process); plan says "present" when
             every node holds a valid one for this cluster from the qnetd host's CA.
``quorum``   corosync's running quorum configuration follows its file. A running cluster
             switches between two_node and the device by one reload on both nodes at once,
             never a restart (which would stop Pacemaker and every VM), in the order that
             keeps quorum (docs/qdevice.md):
               to the device: certificates first (phase ``qdevice``), files written (phase
               ``corosync``, not read yet), both nodes members, qnetd reachable, reload
               (2 of 3 votes), corosync-qdevice started, its vote verified; the fence delay
               leaves the CIB afterwards (phase ``cib``);
               back to two_node: the fence delay back into the CIB first, reload (quorum 1),
               corosync-qdevice stopped.
             Otherwise corosync-qdevice is started (or stopped) and its vote verified.

The corosync phase leaves a running node whose file changes only in its quorum section to
this phase (`reload_only`), and records the nodes it restarts in `restarts_corosync`: their
restart reads the new file anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from hakvm.deploy import actions
from hakvm.deploy.guards import PlanError
from hakvm.deploy.steps import DISABLE, ENABLE, Call, CallFunc, Step, Write, run
from hakvm.remote.facts import FileFact, NodeFacts
from hakvm.remote.pacemaker import parse_crm_mon
from hakvm.remote.quorum import NodeCerts, check_certs, runtime_quorum
from hakvm.render.base import CLUSTER, RenderContext, Rendered
from hakvm.render.corosync import PATH as COROSYNC_CONF
from hakvm.spec.models import Node

PACKAGES = ("corosync-qdevice",)  # the same name on Debian and RHEL; pulls in the NSS tools
QDEVICE = actions.QDEVICE
_QUORUM_SECTION = re.compile(r"^quorum \{\n.*?^\}\n", flags=re.M | re.S)


class Env(Protocol):
    """What these phases read of phases.PlanEnv."""

    @property
    def ctx(self) -> RenderContext: ...

    @property
    def rendered(self) -> Rendered: ...

    @property
    def facts(self) -> dict[str, NodeFacts]: ...

    @property
    def nodes(self) -> list[Node]: ...

    @property
    def qnetd_ca(self) -> str | None: ...

    @property
    def notes(self) -> list[str]: ...

    @property
    def restarts_corosync(self) -> set[str]: ...

    @property
    def replacing(self) -> str | None: ...


def packages(env: Env) -> tuple[str, ...]:
    return PACKAGES if env.ctx.spec.quorum_device is not None else ()


def reload_only(writes: Sequence[Step], current: FileFact | None) -> bool:
    """Whether `writes` (the corosync phase's, for a running node whose corosync.conf is
    hakvm's) change nothing but the quorum section of corosync.conf: a reload applies that."""
    files = [a for step in writes for a in step.actions if isinstance(a, Write)]
    if current is None or len(files) != 1 or files[0].path != COROSYNC_CONF:
        return False
    old, new = current.content.decode("utf-8", "replace"), files[0].content.decode()
    return old != new and _QUORUM_SECTION.sub("", old) == _QUORUM_SECTION.sub("", new)


# --- phase: qdevice (the certificates) ----------------------------------------------------------


def qdevice(env: Env) -> list[Step]:
    spec = env.ctx.spec
    qd = spec.quorum_device
    if qd is None:
        return []
    names = [n.name for n in env.nodes]
    certs = {n: env.facts[n].qdevice_certs or NodeCerts() for n in names}
    check = check_certs(certs, spec.cluster.name, env.qnetd_ca)
    if check.present:
        env.notes.append("qdevice certificates: present")
        return []
    if env.replacing is not None:
        return _copy_to_new_node(env, names, certs, check.why)
    signer = f"qnetd host {qd.ssh.host}" if qd.ssh else "qnetd on this machine"
    cluster = spec.cluster.name
    call = Call(
        f"qnetd CA from the {signer}; on every node a new qdevice NSS database trusting it; "
        f"a request for CN={cluster} on {names[0]}, signed by the qnetd CA, imported there "
        f"and copied to {', '.join(names[1:])} as PKCS#12",
        _setup(names, cluster),
    )
    title = f"set up the qdevice certificates (CN={cluster}, signed by the {signer})"
    return [Step(names[0], "qdevice", title, (call,), "\n".join(check.why) + "\n")]


def _setup(names: list[str], cluster: str) -> CallFunc:
    return lambda nodes: actions.setup_qdevice_certificates(nodes, names, cluster)


def _copy_to_new_node(
    env: Env, names: list[str], certs: Mapping[str, NodeCerts], why: list[str]
) -> list[Step]:
    """replace-node: the new node gets the survivor's certificates (a new signature would
    renew them on the survivor too, whose corosync-qdevice votes meanwhile)."""
    new = env.replacing
    assert new is not None
    survivor = next(n for n in names if n != new)
    cluster = env.ctx.spec.cluster.name
    if not check_certs({survivor: certs[survivor]}, cluster, env.qnetd_ca).present:
        raise PlanError(
            f"{survivor} holds no valid qdevice certificate for {cluster} to copy to {new}: "
            "run hakvm apply SPEC on the running cluster first"
        )
    copy = Call(
        f"the qnetd CA and the cluster certificate with its key (PKCS#12) read from "
        f"{survivor}'s qdevice database, imported into a new one on {new}",
        lambda nodes: actions.copy_qdevice_certificates(
            nodes.connected(survivor), nodes.connected(new)
        ),
    )
    title = f"copy the qdevice certificates from {survivor}"
    return [Step(new, "qdevice", title, (copy,), "\n".join(why) + "\n")]


# --- phase: quorum (switch, start, stop, verify) -------------------------------------------


def _stale(env: Env, wanted: bool) -> list[str]:
    """Nodes whose running corosync has (or lacks) the device against the spec, and that the
    corosync phase does not restart."""
    stale = []
    for node in env.nodes:
        facts = env.facts[node.name]
        running = runtime_quorum(facts.cmap_quorum)
        if (
            facts.services_active.get("corosync", False)
            and node.name not in env.restarts_corosync
            and running is not None
            and running.device != wanted
        ):
            stale.append(node.name)
    return stale


def _both_online(facts: Mapping[str, NodeFacts], names: list[str]) -> None:
    text = next((f.crm_mon for f in facts.values() if f.crm_mon), None)
    if text is None:
        return  # Pacemaker not running: the switch checks corosync's membership itself
    state = parse_crm_mon(text)
    away = [n for n in names if not (n in state.nodes and state.nodes[n].online)]
    if away:
        raise PlanError(
            f"{', '.join(away)} is not online: switching to the quorum device needs both "
            "nodes (alone, a node holds 1 of 3 votes and loses quorum, its VMs stop); bring "
            "it back, then re-run apply"
        )


def quorum(env: Env) -> list[Step]:
    spec = env.ctx.spec
    qd = spec.quorum_device
    names = [n.name for n in env.nodes]
    first = names[0]
    stale = _stale(env, wanted=qd is not None)
    if qd is not None and stale:
        _both_online(env.facts, names)
        how = (
            f"corosync-cfgtool -R (both corosync.conf hold the device: 2 of 3 votes, quorum "
            f"kept), then systemctl enable --no-reload + restart {QDEVICE} on "
            f"{', '.join(names)}, then wait for the device's vote"
        )
        switch = Call(how, lambda nodes: actions.switch_to_qdevice(
            [nodes.connected(n) for n in names], qd.host, qd.port))  # fmt: skip
        title = "switch corosync from two_node to the quorum device (one reload, no restart)"
        return [Step(first, "quorum", title, (switch,))]
    if qd is None and stale:
        pacemaker = any(env.facts[n].services_active.get("pacemaker", False) for n in names)
        cib = _rendered_cib(env) if pacemaker else None
        how = (
            "the CIB's fence-race protection first, then corosync-cfgtool -R (two_node: "
            f"quorum 1), then systemctl disable --no-reload --now {QDEVICE} on {', '.join(names)}"
        )
        back = Call(how, lambda nodes: actions.switch_to_two_node(
            [nodes.connected(n) for n in names], cib))  # fmt: skip
        title = "switch corosync from the quorum device back to two_node"
        return [Step(first, "quorum", title, (back,))]
    steps = []
    for name in names:
        facts = env.facts[name]
        active = facts.services_active.get(QDEVICE, False)
        enabled = facts.services_enabled.get(QDEVICE, False)
        if qd is not None and not (active and enabled):
            start = run(*ENABLE, "--now", QDEVICE)
            steps.append(Step(name, "quorum", f"start {QDEVICE}", (start,)))
        elif qd is None and (active or enabled):
            stop = run(*DISABLE, "--now", QDEVICE)
            steps.append(Step(name, "quorum", f"stop {QDEVICE}", (stop,)))
    if qd is not None and steps:
        wait = Call(f"until every node's {QDEVICE} casts qnetd's vote", lambda nodes:
                    actions.wait_qdevice_vote([nodes.connected(n) for n in names]))  # fmt: skip
        # replace-node runs the steps of the node it brings back: the wait is that node's.
        waiter = env.replacing or first
        steps.append(Step(waiter, "quorum", "wait for the quorum device's vote", (wait,)))
    return steps


def _rendered_cib(env: Env) -> str:
    return next(f for f in env.rendered[CLUSTER] if f.path.endswith("cib.xml")).content
