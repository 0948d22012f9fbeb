"""Fault injectors for `hakvm drill`: the lab's own commands, or the nodes themselves.

Both offer the same faults, named by what they do to the cluster:

  crash(node)         hard power-off, no shutdown (the lab kills QEMU; a real node gets
                      `echo o > /proc/sysrq-trigger`: the kernel powers off at once, unsynced)
  cut_heartbeat()     the dedicated heartbeat link stops carrying traffic
  cut_bond_member()   one member of the bond fails (LACP must carry on over the other)
  partition()         no traffic at all between the nodes' cluster addresses
  heal()              undo every cut and partition
  bmc_down(node)      node's BMC unreachable from its peer (fencing it fails)
  bmc_up(node)        reachable again
  qnetd_down()        the quorum device's qnetd gone (the lab stops it; real nodes drop
                      their traffic to it, which is the same to the cluster)
  qnetd_up()          back
  isolate(node)       node cut off from its peer and from qnetd (partition, plus an
                      nftables rule on node dropping its traffic to qnetd: in the lab too)
  clear()             every fault of the kind undone on every node, whatever was injected;
                      says what it found (a drill's `finally`, and `hakvm drill --heal`)

heal() undoes every cut, partition and qnetd fault this injector made.

On real nodes cuts are nftables rules in a table of their own (`inet hakvm_drill`), never
a link taken down that the management path might need; only the bond member is really
taken down (`ip link set ... down`), because only that exercises LACP. A node that fencing
rebooted comes back without the table. Real nodes need `--yes-really` and a BMC on each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hakvm.drill.harness import DrillError, Say
from hakvm.errors import StateError
from hakvm.lab.state import Lab, LabStateError
from hakvm.remote import pacemaker
from hakvm.remote.connection import Remote, RemoteError
from hakvm.render.base import RenderContext, Secrets
from hakvm.render.drbd import replication_link
from hakvm.spec.derive import LinkAddress, NetworkAddresses, derive
from hakvm.spec.models import ClusterSpec, Node

CUT_TABLE = "hakvm_drill"
BMC_TABLE = "hakvm_drill_bmc"
QNETD_TABLE = "hakvm_drill_qnetd"


class FaultError(StateError):
    """These faults cannot be injected here (not a lab, management path at risk): exit 3."""


@dataclass
class Healed:
    """What a clear() found and undid, and the nodes it could not check (and why)."""

    undone: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


class Faults(Protocol):
    kind: str  # "lab" or "nodes"

    # crash and hang return the fault's moment (Unix time on this machine) when the injector
    # read it right at the fault: a drill's clock starts there, not before a command's start.
    async def crash(self, node: str) -> float | None: ...
    async def hang(self, node: str) -> float | None: ...
    async def unhang(self, node: str) -> None: ...
    async def power_on(self, node: str) -> None: ...
    async def cut_heartbeat(self) -> None: ...
    async def cut_bond_member(self) -> None: ...
    async def partition(self) -> None: ...
    async def heal(self) -> None: ...
    async def bmc_down(self, node: str) -> None: ...
    async def bmc_up(self, node: str) -> None: ...
    async def qnetd_down(self) -> None: ...
    async def qnetd_up(self) -> None: ...
    async def isolate(self, node: str) -> None: ...
    async def clear(self) -> Healed: ...


class Connections(Protocol):
    async def conn(self, name: str) -> Remote: ...
    async def drop(self, name: str) -> None: ...


# --- the lab ---------------------------------------------------------------------------------


@dataclass
class LabFaults:
    lab_dir: Path
    kind: str = "lab"
    # For isolate(): the node's own nftables rule against qnetd (the lab cannot cut one
    # guest's user-mode NIC from the host's loopback alone).
    spec: ClusterSpec | None = None
    cluster: Connections | None = None
    qnetd_stopped: bool = False
    isolated: list[str] = field(default_factory=list)

    def _lab(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "hakvm.cli", "lab", "--lab-dir", str(self.lab_dir), *args],
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        if result.returncode != 0:
            raise RemoteError(f"hakvm lab {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    async def run(self, *args: str) -> str:
        return await asyncio.to_thread(self._lab, *args)

    async def _moment(self, *args: str) -> float:
        """A fault command's `--json` moment: the lab's own reading right at the fault."""
        return float(json.loads(await self.run(*args, "--json"))["at"])

    async def crash(self, node: str) -> float | None:
        return await self._moment("kill", node)

    async def hang(self, node: str) -> float | None:
        return await self._moment("freeze", node)

    async def unhang(self, node: str) -> None:
        await self.run("thaw", node)

    async def power_on(self, node: str) -> None:
        await self.run("start", node)

    async def cut_heartbeat(self) -> None:
        await self.run("cut", "hb")

    async def cut_bond_member(self) -> None:
        await self.run("cut", "bond-a")

    async def partition(self) -> None:
        for link in ("hb", "bond-a", "bond-b"):
            await self.run("cut", link)

    async def heal(self) -> None:
        await self.run("heal")
        if self.qnetd_stopped:
            await self.qnetd_up()
        if self.isolated and self.spec is not None and self.cluster is not None:
            await unblock_qnetd(self.cluster, self.isolated)
        self.isolated = []

    async def bmc_down(self, node: str) -> None:
        await self.run("bmc-stop", node)

    async def bmc_up(self, node: str) -> None:
        await self.run("bmc-start", node)

    async def qnetd_down(self) -> None:
        self.qnetd_stopped = True
        await self.run("qnetd-stop")

    async def qnetd_up(self) -> None:
        await self.run("qnetd-start")
        self.qnetd_stopped = False

    async def isolate(self, node: str) -> None:
        if self.spec is None or self.cluster is None:
            raise FaultError("isolate: this lab injector has no spec and no node connections")
        self.isolated.append(node)
        await block_qnetd(self.spec, self.cluster, node)
        await self.partition()

    async def clear(self) -> Healed:
        """`lab heal`, `lab bmc-start` for every node and `lab qnetd-start` if a drill
        stopped it (what `lab status` saw cut or stopped), and the qnetd rule on the nodes
        this injector isolated."""
        state = json.loads(await self.run("status", "--json"))
        healed = Healed()
        await self.run("heal")
        healed.undone += [f"lab: link {k} healed" for k, v in state["links"].items() if v != "up"]
        for node, info in state["nodes"].items():
            await self.run("bmc-start", node)
            if info["bmc"] != "running":
                healed.undone.append(f"lab: {node}'s BMC started")
            if info.get("frozen"):
                await self.unhang(node)
                healed.undone.append(f"lab: {node} thawed")
        if state.get("qnetd", {}).get("state") == "stopped":  # as `lab qnetd-stop` left it
            await self.qnetd_up()
            healed.undone.append("lab: qnetd started")
        if self.cluster is not None:
            await _clear_nodes(self.cluster, self.isolated, {}, healed)
            self.isolated = []
        return healed


def lab_of(spec: ClusterSpec, lab_dir: Path) -> LabFaults | str:
    """The lab in `lab_dir` if the spec's nodes are its nodes, else why not."""
    try:
        config = Lab(lab_dir).load()
    except LabStateError as exc:
        return str(exc)
    for node in spec.nodes:
        if node.ssh.host != "127.0.0.1" or node.ssh.port != config.ssh_port_of(node.name):
            return f"nodes.{node.name}.ssh is not the lab in {lab_dir}"
    return LabFaults(lab_dir)


# --- real nodes --------------------------------------------------------------------------------


def _table(name: str, input_rule: str, output_rule: str) -> str:
    """An nft script that (re)creates table `name` with one drop rule each way.

    Declaring then deleting the table first makes it idempotent (no error if absent)."""
    return (
        f"table inet {name}\ndelete table inet {name}\n"
        f"table inet {name} {{\n"
        f"    chain input {{\n"
        f"        type filter hook input priority -200; policy accept;\n"
        f"        {input_rule} drop\n"
        f"    }}\n"
        f"    chain output {{\n"
        f"        type filter hook output priority -200; policy accept;\n"
        f"        {output_rule} drop\n"
        f"    }}\n"
        f"}}\n"
    )


def cut_ruleset(peer_addresses: list[ipaddress.IPv4Address]) -> str:
    """Drop everything from and to the peer's cluster addresses (before any accept)."""
    addrs = ", ".join(str(a) for a in sorted(peer_addresses))
    return _table(CUT_TABLE, f"ip saddr {{ {addrs} }}", f"ip daddr {{ {addrs} }}")


def bmc_ruleset(address: ipaddress.IPv4Address, port: int) -> str:
    """Drop the fencing node's IPMI traffic to one BMC (RMCP+ over UDP)."""
    match = f"ip daddr {address} udp dport {port}"
    return _table(BMC_TABLE, f"ip saddr {address} udp sport {port}", match)


def delete_table_script(name: str) -> str:
    return f"table inet {name}\ndelete table inet {name}\n"


def qnetd_ruleset(spec: ClusterSpec) -> str:
    """Drop a node's traffic to and from the quorum device's qnetd (its TCP port)."""
    qd = spec.quorum_device
    if qd is None:
        raise FaultError("the spec has no quorum_device: there is no qnetd to cut off")
    try:
        address = ipaddress.ip_address(qd.host)
    except ValueError:
        raise FaultError(
            f"quorum_device.host {qd.host!r}: the drill blocks qnetd by IP address; give it as one"
        ) from None
    family = "ip" if address.version == 4 else "ip6"
    match = f"{family} daddr {address} tcp dport {qd.port}"
    return _table(QNETD_TABLE, f"{family} saddr {address} tcp sport {qd.port}", match)


async def block_qnetd(spec: ClusterSpec, cluster: Connections, node: str) -> None:
    conn = await cluster.conn(node)
    await conn.run(["nft", "-f", "-"], stdin=qnetd_ruleset(spec).encode(), check=True, timeout=60)


UNBLOCK_S = 10.0  # a node fenced meanwhile reboots without the rule: do not wait for it


async def unblock_qnetd(cluster: Connections, nodes: list[str]) -> None:
    """Remove the qnetd rule where it is (a node fenced since has rebooted without it)."""
    script = delete_table_script(QNETD_TABLE).encode()

    async def unblock(node: str) -> None:
        conn = await cluster.conn(node)
        await conn.run(["nft", "-f", "-"], stdin=script, timeout=UNBLOCK_S)

    for node in nodes:
        try:
            await asyncio.wait_for(unblock(node), UNBLOCK_S)
        except (RemoteError, TimeoutError):
            await cluster.drop(node)


def bond_member(spec: ClusterSpec) -> tuple[str, str] | None:
    """(node, interface): the bond member bond-member-loss takes down, if the spec has one."""
    for node in spec.nodes:
        for bond in node.interfaces.bonds.values():
            if len(bond.members) >= 2:
                return node.name, bond.members[0]
    return None


def _admin_up(ip_link: str) -> bool:
    """Whether `ip -o link show` says the interface is administratively up."""
    flags = re.search(r"<([^>]*)>", ip_link)
    return flags is not None and "UP" in flags.group(1).split(",")


async def clear_node(conn: Remote, member: str | None) -> list[str]:
    """Undo on one node whatever in-node fault is there (the drill tables, a bond member
    taken down); only what is found is touched. What was undone, one line each."""
    undone = []
    listed = await conn.run(["nft", "list", "tables"], timeout=60)
    tables = set(listed.stdout.split("\n")) if listed.ok else set()
    for name in (CUT_TABLE, BMC_TABLE, QNETD_TABLE):
        if f"table inet {name}" in tables:
            await conn.run(["nft", "-f", "-"], stdin=delete_table_script(name), check=True)
            undone.append(f"{conn.name}: removed nftables table inet {name}")
    if member is not None:
        link = await conn.run(["ip", "-o", "link", "show", "dev", member], timeout=60)
        if link.ok and not _admin_up(link.stdout):
            await conn.run(["ip", "link", "set", "dev", member, "up"], check=True, timeout=60)
            undone.append(f"{conn.name}: bond member {member} set up again")
    return undone


async def heal_faults(faults: Faults, say: Say) -> None:
    """A drill's `finally`: every fault of its kind undone, each said; a failure is said,
    never raised (the drill's own outcome, or its interruption, is what the caller reports)."""
    try:
        healed = await faults.clear()
    except (RemoteError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        say(f"could not check for drill faults left behind ({exc}): run hakvm drill --heal SPEC")
        return
    for line in healed.undone:
        say(f"healed: {line}")
    for line in healed.unchecked:
        say(f"not checked: {line}: run hakvm drill --heal SPEC once it answers")


@dataclass
class NodeFaults:
    spec: ClusterSpec
    cluster: Connections
    kind: str = "nodes"

    def __post_init__(self) -> None:
        ctx = RenderContext(self.spec, derive(self.spec), Secrets.redacted())
        self.links = ctx.derived.links
        self.replication = replication_link(ctx)
        for node in self.spec.nodes:
            cluster_addresses = {
                str(link.addresses[node.name])
                for link in self.links
                if node.name in link.addresses
            }
            if node.ssh.host in cluster_addresses:
                raise FaultError(
                    f"nodes.{node.name}.ssh.host {node.ssh.host} is a cluster address: cutting "
                    "the cluster links would cut the drill's own path to the node"
                )
            if node.bmc is None:
                raise FaultError(f"nodes.{node.name}.bmc: drills on real nodes need a BMC")

    def _node(self, name: str) -> Node:
        return next(n for n in self.spec.nodes if n.name == name)

    def _peer(self, name: str) -> str:
        return next(n.name for n in self.spec.nodes if n.name != name)

    def heartbeat_link(self) -> LinkAddress:
        """The link to cut for `cut_heartbeat`: one that does not carry replication."""
        others = [link for link in self.links if link is not self.replication]
        return (others or list(self.links))[0]

    async def _nft(self, node: str, script: str) -> None:
        conn = await self.cluster.conn(node)
        await conn.run(["nft", "-f", "-"], stdin=script.encode(), check=True, timeout=60)

    async def _each(self, script_for: dict[str, str], *, tolerate_down: bool = False) -> None:
        for node, script in script_for.items():
            try:
                await self._nft(node, script)
            except RemoteError:
                if not tolerate_down:
                    raise
                await self.cluster.drop(node)  # fenced and rebooting: its rules are gone

    async def crash(self, node: str) -> float | None:
        return await self._last_words(node, "echo o > /proc/sysrq-trigger")

    async def _last_words(self, node: str, script: str) -> float:
        """Run a script that takes the node down; the moment it was sent (it reaches the
        node within half a round trip)."""
        conn = await self.cluster.conn(node)
        at = time.time()
        try:
            answered = await conn.run(["sh", "-c", script], timeout=10)
        except (RemoteError, TimeoutError, OSError):
            answered = None  # gone before it could answer: that is the point
        await self.cluster.drop(node)
        if answered is not None:
            raise FaultError(
                f"{node} answered `{script}` (exit {answered.returncode}: "
                f"{answered.stderr.strip()[:200]}): it did not go down"
            )
        return at

    async def hang(self, node: str) -> float | None:
        """A kernel panic that leaves the machine on and dead (kernel.panic=0: no reboot by
        itself), so fencing must power off a machine that is on."""
        script = "sysctl -qw kernel.panic=0 && echo c > /proc/sysrq-trigger"
        return await self._last_words(node, script)

    async def unhang(self, node: str) -> None:
        """Nothing to undo from here: a panicked node comes back only by its fencing."""

    async def power_on(self, node: str) -> None:
        """Through its fence device from its peer (stonith_admin --unfence: the agent's
        "on"), as its admin would with the BMC."""
        conn = await self.cluster.conn(self._peer(node))
        await pacemaker.power_on(conn, node, self.spec.cluster.timing.stonith_timeout_s)

    async def _cut(self, links: list[NetworkAddresses]) -> None:
        scripts = {}
        for node in self.spec.nodes:
            peer = self._peer(node.name)
            addrs = [link.addresses[peer] for link in links if peer in link.addresses]
            scripts[node.name] = cut_ruleset(addrs)
        await self._each(scripts)

    async def cut_heartbeat(self) -> None:
        await self._cut([self.heartbeat_link()])

    async def partition(self) -> None:
        own = [] if isinstance(self.replication, LinkAddress) else [self.replication]
        await self._cut([*self.links, *own])  # and the replication network of its own

    def _bond_member(self) -> tuple[str, str] | None:
        return bond_member(self.spec)

    async def cut_bond_member(self) -> None:
        found = self._bond_member()
        if found is None:
            raise FaultError("bond-member-loss: no bond with two members in the spec")
        node, member = found
        conn = await self.cluster.conn(node)
        await conn.run(["ip", "link", "set", "dev", member, "down"], check=True, timeout=60)

    async def qnetd_down(self) -> None:
        await self._each({n.name: qnetd_ruleset(self.spec) for n in self.spec.nodes})

    async def qnetd_up(self) -> None:
        await unblock_qnetd(self.cluster, [n.name for n in self.spec.nodes])

    async def isolate(self, node: str) -> None:
        await self._each({node: qnetd_ruleset(self.spec)})
        await self.partition()

    async def heal(self) -> None:
        scripts = {n.name: delete_table_script(CUT_TABLE) for n in self.spec.nodes}
        await self._each(scripts, tolerate_down=True)
        if self.spec.quorum_device is not None:
            await self.qnetd_up()
        found = self._bond_member()
        if found is not None:
            node, member = found
            try:
                conn = await self.cluster.conn(node)
                await conn.run(["ip", "link", "set", "dev", member, "up"], timeout=60)
            except RemoteError:
                await self.cluster.drop(node)

    def _bmc_target(self, node: str) -> tuple[ipaddress.IPv4Address, int]:
        bmc = self._node(node).bmc
        assert bmc is not None
        try:
            return ipaddress.IPv4Address(bmc.address), bmc.port
        except ValueError:
            raise FaultError(
                f"nodes.{node}.bmc.address {bmc.address!r}: fence-failure on real nodes "
                "blocks the BMC by IP address; give it as one"
            ) from None

    async def bmc_down(self, node: str) -> None:
        address, port = self._bmc_target(node)
        await self._nft(self._peer(node), bmc_ruleset(address, port))

    async def bmc_up(self, node: str) -> None:
        self._bmc_target(node)
        await self._each({self._peer(node): delete_table_script(BMC_TABLE)})

    async def clear(self) -> Healed:
        """clear_node on every node."""
        found = self._bond_member()
        members = dict([found]) if found is not None else {}
        healed = Healed()
        await _clear_nodes(self.cluster, [n.name for n in self.spec.nodes], members, healed)
        return healed


async def _clear_nodes(
    cluster: Connections, nodes: list[str], members: dict[str, str], healed: Healed
) -> None:
    """clear_node on each of `nodes` (with its bond member in `members`); a node that does
    not answer is reported, not fatal (a node that fencing rebooted lost the tables with its
    memory)."""
    for node in nodes:
        try:
            healed.undone += await clear_node(await cluster.conn(node), members.get(node))
        except RemoteError as exc:
            await cluster.drop(node)
            healed.unchecked.append(f"{node}: {exc}")


def faults_for(
    spec: ClusterSpec, cluster: Connections, lab_dir: Path, *, inject: str, yes_really: bool
) -> Faults:
    """The lab's commands when the spec is that lab (unless inject="nodes"), else faults
    injected from inside the nodes, which a real cluster gets only with --yes-really."""
    lab = lab_of(spec, lab_dir)
    if isinstance(lab, LabFaults) and inject in ("auto", "lab"):
        return dataclasses.replace(lab, spec=spec, cluster=cluster)
    if inject == "lab":
        raise DrillError(f"drill: --inject lab: {lab}")
    if not yes_really:
        why = "--inject nodes" if isinstance(lab, LabFaults) else f"not the lab ({lab})"
        raise DrillError(
            f"drill: {why}: faults would be injected on the nodes themselves (power-off by "
            "sysrq, nftables cuts, a BMC blocked): add --yes-really"
        )
    try:
        return NodeFaults(spec, cluster)
    except FaultError as exc:
        raise DrillError(f"drill: {exc}") from None
