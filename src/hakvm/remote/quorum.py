"""Corosync's quorum and the quorum device, as the nodes report them: the commands and their
pure parsers (unit tests replay outputs in tests/unit/data/qdevice).

- `corosync-quorumtool -s`: the partition's votes and, per member, whether its
  corosync-qdevice is alive and casts qnetd's vote (the Qdevice column: A/NA alive,
  V/NV vote, MW/NMW master wins; NR not registered), and the device's own line;
- `corosync-qdevice-tool -s`: this node's connection to qnetd (State: Connected, ...);
- `corosync-cmapctl -b quorum.`: the quorum configuration corosync runs with now (a reload
  replaces it; the file on disk may say otherwise);
- the node's qdevice NSS database (`certutil`): what the certificate check needs;
- the CIB's fence delays (a quorum device needs none).

`hakvm status`, `doctor`, `plan` and the drills read these; so does the metrics collector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

QUORUMTOOL = ["corosync-quorumtool", "-s"]
QDEVICE_TOOL = ["corosync-qdevice-tool", "-s"]
CMAP_QUORUM = ["corosync-cmapctl", "-b", "quorum."]

# The node side of qdevice-net's NSS database (corosync-qdevice-net-certutil's fixed paths).
NODE_DIR = "/etc/corosync/qdevice/net"
NODE_DB = f"{NODE_DIR}/nssdb"
CA_NICKNAME = "QNet CA"
CLIENT_NICKNAME = "Cluster Cert"


def status_commands() -> list[tuple[str, list[str]]]:
    """What `hakvm status` adds to its batch for a spec with a quorum device."""
    return [("quorumtool", QUORUMTOOL), ("qdevice_tool", QDEVICE_TOOL)]


def cert_commands() -> list[tuple[str, list[str]]]:
    """The node's qdevice certificates, for plan's "present" check."""
    pwd = f"{NODE_DB}/pwdfile.txt"
    return [
        ("qdevice_ca", ["certutil", "-L", "-d", NODE_DB, "-n", CA_NICKNAME, "-a"]),
        ("qdevice_cert", ["certutil", "-L", "-d", NODE_DB, "-n", CLIENT_NICKNAME]),
        ("qdevice_valid", ["certutil", "-V", "-d", NODE_DB, "-n", CLIENT_NICKNAME, "-u", "C"]),
        ("qdevice_keys", ["certutil", "-K", "-d", NODE_DB, "-f", pwd]),
    ]


# --- corosync-quorumtool -s -------------------------------------------------------------------


@dataclass(frozen=True)
class MemberVote:
    nodeid: int
    name: str
    votes: int
    local: bool
    # None: the column says NR (no qdevice registered on that node) or is absent
    qdevice_alive: bool | None = None
    qdevice_vote: bool | None = None


@dataclass(frozen=True)
class QuorumView:
    quorate: bool
    nodes: int  # members of this node's partition
    expected_votes: int | None
    total_votes: int | None
    quorum: int | None
    flags: frozenset[str]  # 2Node, Quorate, WaitForAll, Qdevice, ...
    members: tuple[MemberVote, ...] = ()
    # The device's line: the votes it adds here now (0: not cast) and its configured votes.
    device_votes: int | None = None
    device_configured_votes: int | None = None

    @property
    def local(self) -> MemberVote | None:
        return next((m for m in self.members if m.local), None)

    @property
    def device_voting(self) -> bool:
        return bool(self.device_votes)

    @property
    def held_by_wait_for_all(self) -> bool:
        """Not quorate though its votes reach quorum: votequorum's wait_for_all holds it
        until it has seen every node once (quorumtool prints "Activity blocked" for either
        cause; only the vote count tells them apart). A node booted alone waits so, and
        votequorum re-arms the wait when a node loses quorum (corosync 3.1
        exec/votequorum.c, are_we_quorate): recorded on the lab, 2 of 3 votes, blocked."""
        return (
            not self.quorate
            and "WaitForAll" in self.flags
            and self.total_votes is not None
            and self.quorum is not None
            and self.total_votes >= self.quorum
        )


_FIELD_RE = re.compile(r"^(?P<key>[A-Za-z ]+):\s+(?P<value>.*?)\s*$")
_MEMBER_RE = re.compile(
    r"^\s*(?P<id>\d+)\s+(?P<votes>\d+)\s+(?:(?P<qd>N?A,N?V,N?MW|NR)\s+)?(?P<name>\S+)"
    r"(?P<local>\s+\(local\))?\s*$"
)
_DEVICE_RE = re.compile(
    r"^\s*0\s+(?P<votes>\d+)\s+(?P<name>\S+)(?:\s+\(votes (?P<configured>\d+)\))?\s*$"
)


def _int(value: str | None) -> int | None:
    match = re.match(r"\d+", value or "")
    return int(match.group()) if match else None


def parse_quorumtool(text: str) -> QuorumView | None:
    """`corosync-quorumtool -s` (corosync 3.1); None when it printed no quorum information
    (corosync not running). Its exit code (2 when not quorate) is not needed: Quorate says."""
    fields: dict[str, str] = {}
    members: list[MemberVote] = []
    device_votes = device_configured = None
    in_members = False
    for line in text.splitlines():
        if line.startswith("Membership information"):
            in_members = True
            continue
        if not in_members:
            if m := _FIELD_RE.match(line):
                fields[m["key"].strip()] = m["value"]
            continue
        if m := _DEVICE_RE.match(line):
            device_votes, device_configured = int(m["votes"]), _int(m["configured"])
        elif m := _MEMBER_RE.match(line):
            qd = m["qd"]
            registered = qd is not None and qd != "NR"
            members.append(
                MemberVote(
                    nodeid=int(m["id"]),
                    name=m["name"],
                    votes=int(m["votes"]),
                    local=m["local"] is not None,
                    qdevice_alive=qd.split(",")[0] == "A" if registered and qd else None,
                    qdevice_vote=qd.split(",")[1] == "V" if registered and qd else None,
                )
            )
    if "Quorate" not in fields:
        return None
    if device_votes is not None and device_configured is None:
        device_configured = device_votes
    return QuorumView(
        quorate=fields["Quorate"] == "Yes",
        nodes=_int(fields.get("Nodes")) or 0,
        expected_votes=_int(fields.get("Expected votes")),
        total_votes=_int(fields.get("Total votes")),
        quorum=_int(fields.get("Quorum")),
        flags=frozenset(fields.get("Flags", "").split()),
        members=tuple(members),
        device_votes=device_votes,
        device_configured_votes=device_configured,
    )


# --- corosync-qdevice-tool -s, corosync-cmapctl -----------------------------------------------


def parse_qdevice_state(text: str) -> str | None:
    """The State line of `corosync-qdevice-tool -s`: Connected, Connecting, Connect failed,
    Disconnected; None when corosync-qdevice did not answer."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "State":
            return value.strip() or None
    return None


def local_vote(quorumtool: str, qdevice_tool: str) -> tuple[bool, bool, str | None]:
    """(connected to qnetd, casting the vote, qdevice's state) of the node that printed both
    outputs: connected by corosync-qdevice-tool's State, voting when its own line of
    corosync-quorumtool says V and the device's vote is counted."""
    state = parse_qdevice_state(qdevice_tool)
    view = parse_quorumtool(quorumtool)
    local = view.local if view is not None else None
    voting = bool(view and view.device_voting and local and local.qdevice_vote)
    return state == "Connected", voting, state


def parse_cmap(text: str) -> dict[str, str]:
    """`corosync-cmapctl` lines `key (type) = value` -> {key: value}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        left, sep, value = line.partition(" = ")
        if sep:
            out[left.split(" (", 1)[0].strip()] = value.strip()
    return out


@dataclass(frozen=True)
class RuntimeQuorum:
    """The quorum configuration corosync runs with (None: corosync not running)."""

    device: bool
    two_node: bool


def runtime_quorum(cmap_text: str | None) -> RuntimeQuorum | None:
    if not cmap_text or not cmap_text.strip():
        return None
    keys = parse_cmap(cmap_text)
    return RuntimeQuorum(
        device=bool(keys.get("quorum.device.model")),
        two_node=keys.get("quorum.two_node", "0") not in ("0", ""),
    )


# --- the node's qdevice certificates -------------------------------------------------------


def pem_body(text: str) -> str:
    """The base64 of the first certificate PEM block in `text` (qnetd-cacert.crt holds a text
    dump before it), whitespace removed; "" if none."""
    match = re.search(
        r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, flags=re.S
    )
    return re.sub(r"\s+", "", match.group(1)) if match else ""


@dataclass(frozen=True)
class NodeCerts:
    """One node's qdevice NSS database, as `cert_commands` read it."""

    ca: str = ""  # base64 of the trusted QNet CA ("" if none)
    cert: str = ""  # certutil's dump of the cluster certificate ("" if none)
    valid: bool = False  # the cluster certificate verifies as an SSL client against the CA
    has_key: bool = False  # its private key is in the database

    @property
    def subject_cn(self) -> str | None:
        match = re.search(r'Subject:\s*"CN=([^",]+)"', self.cert)
        return match.group(1) if match else None


def node_certs(outputs: dict[str, tuple[int, bytes]]) -> NodeCerts:
    def text(name: str) -> str:
        rc, out = outputs.get(name, (1, b""))
        return out.decode("utf-8", "replace") if rc == 0 else ""

    return NodeCerts(
        ca=pem_body(text("qdevice_ca")),
        cert=text("qdevice_cert").strip(),
        valid="certificate is valid" in text("qdevice_valid"),
        has_key=CLIENT_NICKNAME in text("qdevice_keys"),
    )


@dataclass
class CertCheck:
    present: bool
    why: list[str] = field(default_factory=list)


def check_certs(certs: dict[str, NodeCerts], cluster: str, qnetd_ca: str | None) -> CertCheck:
    """Present when every node trusts the same CA (qnetd's own, when it could be read) and
    holds the same valid cluster certificate for CN=`cluster` with its key."""
    why: list[str] = []
    for name, c in sorted(certs.items()):
        if not c.ca:
            why.append(f"{name}: no qdevice NSS database with the qnetd CA")
            continue
        if qnetd_ca is not None and c.ca != qnetd_ca:
            why.append(f"{name}: trusts another CA than the qnetd host's")
        if not (c.valid and c.has_key):
            why.append(f"{name}: no valid cluster certificate with its key")
        elif c.subject_cn != cluster:
            why.append(f"{name}: the certificate is for {c.subject_cn!r}, not {cluster!r}")
    if not why and len({(c.ca, c.cert) for c in certs.values()}) > 1:
        why.append("the nodes hold different certificates")
    return CertCheck(not why, why)


# --- the CIB's fence delays ---------------------------------------------------------------------


def fence_delays(cib: str) -> list[str]:
    """Every fencing delay a CIB configures (pcmk_delay_base/max on a stonith device, a
    non-zero priority-fencing-delay): what a cluster with a quorum device does without."""
    try:
        root = etree.fromstring(cib.encode(), etree.XMLParser(resolve_entities=False))
    except etree.XMLSyntaxError:
        return ["the CIB is not readable XML"]
    found: list[str] = []
    for prim in root.iterfind(".//resources//primitive[@class='stonith']"):
        for nv in prim.iterfind("instance_attributes/nvpair"):
            if nv.get("name") in ("pcmk_delay_base", "pcmk_delay_max"):
                found.append(f"{prim.get('id')}: {nv.get('name')}={nv.get('value')}")
    for nv in root.iterfind(".//crm_config//nvpair[@name='priority-fencing-delay']"):
        if (nv.get("value") or "0").rstrip("s") not in ("0", ""):
            found.append(f"priority-fencing-delay={nv.get('value')}")
    return found


# --- what a node that lost quorum decided (its own journal) ----------------------------------


def no_quorum_stops_command(since: float) -> list[str]:
    """The node's scheduler log since `since` (Unix time), every boot: its decisions to stop
    resources for lack of quorum (no-quorum-policy=stop). A node cut off from its peer and
    qnetd is fenced by the other half within seconds, often before its VMs' stops end; the
    journal (persistent on Debian 12) keeps the decision across that reboot."""
    return ["journalctl", "-q", "--no-pager", "-o", "cat", "-t", "pacemaker-schedulerd",
            "--since", f"@{int(since)}"]  # fmt: skip


# Pacemaker 2.1's transition summary: "Actions: Stop  vm-a  (  node01 )  due to no quorum".
_NO_QUORUM_STOP_RE = re.compile(r"\bStop\s+(?P<rsc>\S+)\s+\([^)]*\)\s+due to no quorum")


def parse_no_quorum_stops(text: str) -> set[str]:
    """The resources a node's scheduler stopped for lack of quorum (no_quorum_stops_command)."""
    return {m["rsc"] for m in _NO_QUORUM_STOP_RE.finditer(text)}


# Pacemaker's scheduler logs this on each run without quorum under a no-quorum-policy other
# than ignore (lib/pengine/status.c, cluster_status), before it works out the transition.
_RAN_WITHOUT_QUORUM = "Fencing and resource management disabled due to lack of quorum"


def ran_without_quorum(text: str) -> bool:
    """Whether a node's scheduler log (no_quorum_stops_command) shows a run without quorum:
    under no-quorum-policy=stop that run's transition stops every resource it holds."""
    return _RAN_WITHOUT_QUORUM in text
