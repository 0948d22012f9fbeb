"""`hakvm doctor`'s quorum device checks (pure: unit tests replay outputs).

- qdevice-not-voting: the spec has a quorum device but a node's corosync-qdevice is not
  connected to qnetd or does not cast its vote: quorum still holds with both nodes up, but
  a node failure now leaves the survivor 1 of 3 votes, and it stops its VMs;
- qdevice-with-two-node: a node's corosync.conf sets two_node and a quorum device: corosync
  refuses to start with both, so that node's next corosync start fails;
- quorum-held-by-wait-for-all: a node has the votes for quorum but wait_for_all holds it
  (qnetd came back after it lost quorum alone, docs/qdevice.md): it starts no VM and fences
  nobody until it has seen its peer; in `hakvm status`'s words (ops/status.py, which must
  not import render's jinja2 to say it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hakvm.ops.findings import Finding, critical, warning
from hakvm.ops.status import wait_for_all_hold
from hakvm.remote.facts import FileFact
from hakvm.remote.probes import NodeAnswer, qdevice_vote
from hakvm.render.corosync import PATH as COROSYNC_CONF
from hakvm.spec.models import ClusterSpec

VOTE_ID = "qdevice-not-voting"
CONFIG_ID = "qdevice-with-two-node"
HELD_ID = "quorum-held-by-wait-for-all"
_TWO_NODE = re.compile(r"^\s*two_node:\s*1\s*$", flags=re.M)
_DEVICE = re.compile(r"^\s*device\s*\{", flags=re.M)


def check_qdevice_vote(spec: ClusterSpec, answers: Mapping[str, NodeAnswer]) -> list[Finding]:
    qd = spec.quorum_device
    if qd is None:
        return []
    found: list[Finding] = []
    for name, answer in sorted(answers.items()):
        connected, voting, state = qdevice_vote(answer)
        if connected and voting:
            continue
        how = "does not cast the device's vote" if connected else f"is {state or 'not running'}"
        found.append(
            warning(
                VOTE_ID,
                name,
                f"corosync-qdevice on {name} {how}: quorum holds while both nodes are up, "
                "but a node failure now stops the survivor's VMs",
                f"check qnetd at {qd.host}:{qd.port} (there: corosync-qnetd-tool -l) and "
                f"on {name}: corosync-qdevice-tool -sv; hakvm apply SPEC starts a stopped "
                "corosync-qdevice and renews its certificates",
            )
        )
    return found


def check_qdevice_config(files: Mapping[str, Mapping[str, FileFact | None]]) -> list[Finding]:
    found: list[Finding] = []
    for name, node_files in sorted(files.items()):
        conf = node_files.get(COROSYNC_CONF)
        text = conf.content.decode("utf-8", "replace") if conf is not None else ""
        if _TWO_NODE.search(text) and _DEVICE.search(text):
            found.append(
                critical(
                    CONFIG_ID,
                    name,
                    f"{COROSYNC_CONF} on {name} sets two_node and a quorum device: corosync "
                    "refuses to start with both (the next start fails)",
                    "hakvm apply SPEC writes it with one of them (as the spec says), then "
                    "reloads corosync on both nodes",
                )
            )
    return found


def check_wait_for_all_hold(
    spec: ClusterSpec, answers: Mapping[str, NodeAnswer]
) -> list[Finding]:
    if spec.quorum_device is None:
        return []
    return [
        critical(HELD_ID, name, *held)
        for name, answer in sorted(answers.items())
        if (held := wait_for_all_hold(spec, name, answer)) is not None
    ]
