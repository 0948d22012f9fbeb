"""The declarative cluster spec: pydantic models, one YAML file per two-node cluster.

Values that must agree across both nodes (DRBD minors and ports, MAC addresses) are never
typed by hand: they are derived in `hakvm.spec.derive`. Secrets are referenced by file path,
never inlined. Relative paths are relative to the spec file's directory.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from hakvm.spec.fieldcheck import plain_value
from hakvm.spec.paths import LocalPath
from hakvm.spec.units import Size

NAME_RE = r"^[a-z][a-z0-9-]{0,62}$"
IFNAME_RE = r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$"  # Linux IFNAMSIZ is 16 including the NUL
VLAN_RE = r"^[A-Za-z][A-Za-z0-9_-]{0,9}\.[0-9]{1,4}$"  # <parent>.<VLAN id>, as ifupdown names it
MAC_RE = r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$"
# What IPMI allows a user name (16 bytes), less what a shell, a crmsh line or an ipmitool
# argument could read as something else: no space, quote, '$', backslash or leading '-'.
BMC_USER_RE = r"^[A-Za-z0-9_.@+][A-Za-z0-9_.@+-]{0,15}$"
_HOST_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_HOST_LABEL}(\.{_HOST_LABEL})*\.?$")

Name = Annotated[str, Field(pattern=NAME_RE, description="lower-case letters, digits, '-'")]

# Words of drbd.conf's grammar: drbdadm cannot parse one as a resource or host name
# (`on no {`: "TK_STRING expected, but got 'no'", found by the property test).
DRBD_WORDS = frozenset({
    "address", "common", "connection", "device", "disk", "floating", "global", "handlers",
    "host", "include", "internal", "ipv4", "ipv6", "meta-disk", "minor", "net", "no",
    "node-id", "on", "options", "path", "resource", "sci", "sdp", "skip", "ssocks", "startup",
    "syncer", "volume", "yes",
})


def not_a_drbd_word(value: str) -> str:
    if value in DRBD_WORDS:
        raise ValueError(
            f"{value!r} is a word of DRBD's configuration language: drbdadm cannot read it as "
            "a name; choose another"
        )
    return value
IfName = Annotated[str, Field(pattern=IFNAME_RE, description="a Linux interface name")]
VlanName = Annotated[str, Field(pattern=VLAN_RE, description="<parent>.<VLAN id>, e.g. bond0.20")]
Port = Annotated[int, Field(ge=1, le=65535)]
# corosync's totem.join default (ms); hakvm never sets join, so this is the cluster's value.
COROSYNC_JOIN_MS = 50


class Model(BaseModel):
    """Base: unknown keys are errors (typos must not be silently ignored), values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _plain(cls, value: object, info: ValidationInfo) -> object:
        """Every field: printable text, no yes/no where none belongs (fieldcheck)."""
        return plain_value(value, cls.model_fields.get(info.field_name or ""))


class OsFamily(StrEnum):
    DEBIAN12 = "debian12"
    RHEL9 = "rhel9"  # Rocky, Alma, CentOS Stream 9


class Hypervisor(StrEnum):
    KVM = "kvm"
    QEMU = "qemu"  # software emulation: the lab, whose nodes cannot nest KVM


class FenceRaceProtection(StrEnum):
    STATIC_DELAY = "static-delay"
    PRIORITY = "priority-fencing-delay"


class FenceAction(StrEnum):
    """Pacemaker's stonith-action."""

    REBOOT = "reboot"
    OFF = "off"


class Timing(Model):
    token_ms: int = Field(3000, ge=1000, le=60000, description="corosync totem token timeout (ms)")
    consensus_ms: int | None = Field(
        None,
        ge=1,
        le=72000,
        description="corosync consensus timeout; default 1.2 x token. Two nodes: any value "
        f"above the join timeout ({COROSYNC_JOIN_MS} ms) is safe, below the token included "
        "(corosync.conf(5))",
    )
    fence_delay_s: int = Field(
        10,
        ge=0,
        le=120,
        description="fence-race protection: seconds the preferred survivor's fencing of "
        "it is delayed (static-delay) or the priority-fencing-delay",
    )
    stonith_timeout_s: int = Field(60, ge=10, le=600)
    monitor_interval_s: int = Field(10, ge=1, le=600, description="VM monitor interval")
    drbd_monitor_interval_s: int = Field(
        30,
        ge=5,
        le=600,
        description="DRBD monitor interval (the Promoted side is checked 1 s sooner, the "
        "Unpromoted 1 s later: Pacemaker needs distinct intervals per role)",
    )
    monitor_timeout_s: int = Field(
        30, ge=5, le=600, description="VM and DRBD monitor timeout (slow or nested hosts: raise)"
    )
    vm_start_timeout_s: int = Field(120, ge=10, le=3600)
    fence_monitor_interval_s: int = Field(
        60,
        ge=10,
        le=3600,
        description="how often each fence device (BMC) is checked: a dead BMC found early is "
        "a failover that will not hang later",
    )
    vm_stop_timeout_s: int = Field(120, ge=10, le=3600)
    load_threshold_pct: int | None = Field(
        None,
        ge=10,
        le=10000,
        description="Pacemaker load-threshold: above this CPU load the controller runs one "
        "action at a time (default 80%); raise it on emulated (TCG) nodes, whose load is "
        "emulation and not contention",
    )
    node_action_limit: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Pacemaker node-action-limit: actions a node runs at once (default twice "
        "its cores); a one-vCPU node gets 2, so one slow VM start holds back every "
        "notify and monitor queued behind it",
    )
    migrate_timeout_s: int = Field(300, ge=10, le=7200)

    @field_validator("consensus_ms")
    @classmethod
    def _consensus_above_join(cls, value: int | None) -> int | None:
        # corosync.conf(5), consensus: "For two node clusters, a consensus larger than the
        # join timeout but less than token is safe." (Its "minimum value for consensus must
        # be 1.2 * token" describes the default: corosync 3 only refuses a consensus below
        # the join timeout, exec/totemconfig.c totem_volatile_config_validate, 3.1.7.)
        if value is not None and value <= COROSYNC_JOIN_MS:
            raise ValueError(
                f"{value} is not above corosync's join timeout ({COROSYNC_JOIN_MS} ms); "
                "corosync.conf(5) calls any consensus above it safe for two nodes, below "
                "the token included: raise it or leave it unset (1.2 x token)"
            )
        return value


class Fencing(Model):
    race_protection: FenceRaceProtection = FenceRaceProtection.STATIC_DELAY
    preferred_survivor: Name | None = Field(
        None,
        description="with static-delay: the node that wins a fence race (fencing it is "
        "delayed); default the first node",
    )
    action: FenceAction = Field(
        FenceAction.REBOOT,
        description="what fencing does to a node (Pacemaker's stonith-action): reboot (it "
        "comes back and rejoins by itself) or off (fencing ends as soon as the power is off, "
        "with no power-on and its wait: recovery is that much faster, but the node stays "
        "powered off until someone powers it on, e.g. `stonith_admin --unfence NODE` on the "
        "survivor)",
    )
    power_wait_s: int | None = Field(
        None,
        ge=0,
        le=60,
        description="fence_ipmilan's power_wait: seconds it waits after each power off and on "
        "before it reads the power state back (default: the agent's, 2 s). A reboot of a "
        "running node pays it twice; 0 suits a BMC whose power state is exact at once",
    )


class Ports(Model):
    corosync: Port = Field(5405, description="knet UDP port (one per link: port, port+1)")
    drbd_base: Port = Field(7789, description="DRBD TCP port of the VM with minor 0")
    migration_min: Port = 49152
    migration_max: Port = 49215

    @model_validator(mode="after")
    def _range(self) -> Ports:
        if self.migration_min > self.migration_max:
            raise ValueError("migration_min must not be above migration_max")
        return self


class Cluster(Model):
    name: Name = Field(description="cluster name (corosync cluster_name)")
    os: OsFamily = OsFamily.DEBIAN12
    hypervisor: Hypervisor = Hypervisor.KVM
    stickiness: int = Field(
        200,
        ge=0,
        le=1000000,
        description="resource-stickiness: above the location preference, so a VM stays "
        "where it failed over to when the other node returns",
    )
    no_quorum_policy: Literal["stop", "freeze", "ignore"] = Field(
        "stop",
        description="with corosync two_node the survivor keeps quorum; stop is the safe "
        "answer when it is lost anyway",
    )
    timing: Timing = Timing()
    fencing: Fencing = Fencing()
    ports: Ports = Ports()


class SshTarget(Model):
    host: str = Field(min_length=1, description="address or name hakvm connects to")
    port: Port = 22
    user: str = Field("root", pattern=r"^[a-z_][a-z0-9_-]*$")
    key_file: LocalPath = Field(
        description="private key file without a passphrase, mode 0600 (the one key hakvm "
        "offers: it never uses an ssh-agent)"
    )
    known_hosts: LocalPath | None = Field(
        None, description="known_hosts file holding the node's host key (never auto-accepted)"
    )


class BondMode(StrEnum):
    LACP = "802.3ad"
    ACTIVE_BACKUP = "active-backup"


class Bond(Model):
    members: list[IfName] = Field(min_length=1)
    mode: BondMode = BondMode.LACP
    miimon: int = Field(100, ge=0, le=10000, description="link monitoring interval (ms)")
    lacp_rate: Literal["slow", "fast"] = "fast"
    xmit_hash_policy: Literal["layer2", "layer2+3", "layer3+4", "encap2+3", "encap3+4"] = "layer3+4"
    mtu: int = Field(1500, ge=576, le=9216)
    addresses: list[ipaddress.IPv4Interface] = []


class Ethernet(Model):
    mtu: int = Field(1500, ge=576, le=9216)
    addresses: list[ipaddress.IPv4Interface] = []


class Bridge(Model):
    ports: list[IfName] = Field(min_length=1)
    mtu: int = Field(1500, ge=576, le=9216)
    stp: bool = False
    addresses: list[ipaddress.IPv4Interface] = []


class Vlan(Model):
    """An 802.1Q VLAN on a bond or NIC of the spec, named <parent>.<id> (no bridge on it):
    the way to give replication a network of its own on the bond the VMs' bridge uses."""

    mtu: int = Field(1500, ge=576, le=9216, description="at most the parent's MTU")
    addresses: list[ipaddress.IPv4Interface] = []


def vlan_parent(name: str) -> tuple[str, int]:
    """bond0.20 -> ("bond0", 20)."""
    parent, _, vid = name.rpartition(".")
    return parent, int(vid)


class Interfaces(Model):
    bonds: dict[IfName, Bond] = {}
    ethernets: dict[IfName, Ethernet] = {}
    bridges: dict[IfName, Bridge] = {}
    vlans: dict[VlanName, Vlan] = Field(
        {}, description="802.1Q VLANs on a bond or NIC above, e.g. bond0.20 for replication"
    )


def is_host_address(value: str) -> bool:
    """An IPv4 or IPv6 literal, or a DNS host name (RFC 1123 labels)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return HOSTNAME_RE.match(value) is not None and not value.replace(".", "").isdigit()
    return True


class Bmc(Model):
    address: str = Field(
        description="BMC address as reached from the peer: an IPv4/IPv6 address or a DNS name"
    )
    port: Port = 623
    user: str = Field(
        pattern=BMC_USER_RE,
        description="IPMI user (at most 16 characters: letters, digits, _ . @ + -)",
    )
    password_file: LocalPath = Field(description="file holding the BMC password (mode 0600)")
    lanplus: bool = True

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not is_host_address(value):
            raise ValueError(
                f"{value!r} is not an IP address or a DNS host name; write it like "
                "10.0.30.11 or bmc-node01.example.net"
            )
        return value


class StorageDevice(Model):
    device: str = Field(
        pattern=r"^/dev/\S+$",
        description="partition or disk to use; best by a stable name such as "
        "/dev/disk/by-id/wwn-0x... (resolved on the node: /dev/sdX names can change at boot)",
    )
    destroy_existing_data: bool = Field(
        False, description="must be true: the device is wiped and turned into an LVM PV"
    )
    serial: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.:+-]{1,128}$",
        description="pins the device: its serial number or WWN as `lsblk -o SERIAL,WWN` "
        "shows it on the node; a device whose serial and WWN both differ is refused",
    )
    expect_signature: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.+-]{1,64}$",
        description="only for a device that already holds something: what it holds, as "
        "hakvm's refusal names it (a partition table type such as gpt or dos, a filesystem "
        "such as ext4, or LVM2_member); that content is then wiped. A device that is "
        "mounted anywhere in its tree or used by LVM, dm or md is refused whatever this says",
    )

    @field_validator("device")
    @classmethod
    def _plain_device_path(cls, value: str) -> str:
        """/dev/../etc/passwd matched the pattern: apply refused it on the node (no block
        device of that name), validate should not pass it."""
        if any(part in ("", ".", "..") for part in value.split("/")[2:]):
            raise ValueError(f"{value!r} holds an empty, '.' or '..' component: name the device")
        return value


class Storage(Model):
    volume_group: str = Field("hakvm", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
    thin_pool: str | None = Field(
        "drbdpool",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$",
        description="thin pool (recommended: fresh thin LVs read as zeros on both nodes, "
        "so the initial DRBD sync can be skipped); null for thick LVs",
    )
    size: Size = Field(gt=0, description="usable size of the pool / volume group for VM disks")
    create_from: StorageDevice | None = Field(
        None, description="create the volume group on this device (destructive)"
    )


class Node(Model):
    name: Name = Field(description="hostname, as Pacemaker and corosync know the node")
    _name_for_drbd = field_validator("name")(not_a_drbd_word)
    ssh: SshTarget
    interfaces: Interfaces = Interfaces()
    bmc: Bmc | None = Field(None, description="IPMI BMC used to fence this node")
    storage: Storage
    memory: Size = Field(description="host RAM")
    reserved_memory: Size = Field(
        2 * 1024**3, description="RAM kept for the host itself (not for VMs)"
    )


def _strict_network(value: object) -> object:
    if isinstance(value, str):
        try:
            ipaddress.IPv4Network(value)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a network address: write it like 10.0.20.0/24 (host bits zero)"
            ) from exc
    return value


class HeartbeatLink(Model):
    network: ipaddress.IPv4Network = Field(
        description="subnet both nodes have an address in; corosync uses those addresses"
    )
    priority: int = Field(1, ge=0, le=255, description="knet link priority (higher first)")

    _network = field_validator("network", mode="before")(_strict_network)


class Replication(Model):
    network: ipaddress.IPv4Network = Field(
        description="subnet both nodes have an address in, on no interface a VM attaches to "
        "(e.g. a VLAN on the bond): DRBD replication and live migration use it"
    )

    _network = field_validator("network", mode="before")(_strict_network)


# --- the quorum device (corosync-qdevice, voting through a corosync-qnetd on a third host) ---

# A heuristics argument: corosync-qdevice splits exec_NAME values itself (quotes and
# backslashes have meaning there) and runs them with execv, never a shell; hakvm allows no
# character that would need quoting.
HEURISTIC_ARG_RE = r"^[A-Za-z0-9_@%+=:,./-]+$"


class QdeviceAlgorithm(StrEnum):
    FFSPLIT = "ffsplit"  # fifty-fifty split: the vote goes to one partition (even node counts)
    LMS = "lms"  # last man standing: any single node that still reaches qnetd gets it


class HeuristicsMode(StrEnum):
    SYNC = "sync"  # at start, membership change and (re)connect to qnetd
    ON = "on"  # also every interval
    OFF = "off"


class HeuristicCommand(Model):
    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="names the check (corosync quorum.device.heuristics.exec_<name>)",
    )
    argv: list[str] = Field(
        min_length=1,
        max_length=16,
        description="the command: an absolute path, then its arguments (letters, digits and "
        "_@%+=:,./- only); run by corosync-qdevice with execv, no shell; exit 0 = pass",
    )

    @field_validator("argv")
    @classmethod
    def _strict_argv(cls, value: list[str]) -> list[str]:
        if not value[0].startswith("/"):
            raise ValueError(
                f"{value[0]!r} is not an absolute path: corosync-qdevice runs the command "
                "with execv (no PATH, no shell); write e.g. /usr/bin/ping"
            )
        for arg in value:
            if not re.fullmatch(HEURISTIC_ARG_RE, arg):
                raise ValueError(
                    f"{arg!r}: a heuristics argument may hold letters, digits and _@%+=:,./- "
                    "only (no spaces, quotes or shell syntax: there is no shell)"
                )
        return value


class Heuristics(Model):
    mode: HeuristicsMode = Field(
        HeuristicsMode.SYNC,
        description="sync: at start, membership change and qnetd (re)connect; on: also "
        "periodically; off: disabled",
    )
    commands: list[HeuristicCommand] = Field(
        min_length=1,
        max_length=32,
        description="all must pass for this node's partition to score (e.g. ping the gateway)",
    )

    @field_validator("commands")
    @classmethod
    def _unique_names(cls, value: list[HeuristicCommand]) -> list[HeuristicCommand]:
        names = [c.name for c in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"command name {twice[0]!r} is used twice; names must be unique")
        return value


class QnetdLocal(Model):
    nss_db: LocalPath = Field(
        description="qnetd's NSS database on this machine (the lab: `hakvm lab up` links "
        "it into the lab's state dir as qnetd-nssdb)"
    )
    user: str = Field(
        pattern=r"^[a-z_][a-z0-9_-]*$",
        description="the user qnetd runs as and owns the database: certutil runs as it",
    )


class QuorumDevice(Model):
    host: str = Field(
        description="address or DNS name of the qnetd host as the nodes reach it "
        "(quorum.device.net.host): a third machine, never a cluster node"
    )
    port: Port = Field(5403, description="qnetd's TCP port")
    algorithm: QdeviceAlgorithm = QdeviceAlgorithm.FFSPLIT
    tie_breaker: str = Field(
        "lowest",
        description="who gets the vote when both halves are equal: lowest or highest node "
        "id, or a node name",
    )
    tls: Literal["on", "required"] = Field(
        "required",
        description="required: TLS or no connection; on: TLS if qnetd offers it (apply "
        "always sets up the certificates, off is not offered)",
    )
    heuristics: Heuristics | None = None
    ssh: SshTarget | None = Field(
        None,
        description="how hakvm reaches the qnetd host to sign the cluster's certificate "
        "(host key checked against known_hosts, as for the nodes)",
    )
    local: QnetdLocal | None = Field(
        None,
        description="instead of ssh, when qnetd runs on the machine hakvm runs on (the "
        "lab): sign with its NSS database directly, as the user qnetd runs as",
    )

    @field_validator("host")
    @classmethod
    def _strict_host(cls, value: str) -> str:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            address = None
        if address is None:
            if not is_host_address(value):  # a DNS name: written into corosync.conf as is
                raise ValueError(
                    f"{value!r} is neither an IP address nor a DNS name; write e.g. "
                    "192.0.2.10 or qnetd.example.org"
                )
            if value.lower() == "localhost":
                raise ValueError("'localhost' is each node itself: name the qnetd host")
            return value
        if address.is_loopback or address.is_unspecified or address.is_multicast:
            raise ValueError(
                f"{value} is not a host the nodes can reach as a third machine (loopback, "
                "unspecified or multicast): give the qnetd host's own address"
            )
        return value

    @field_validator("tie_breaker")
    @classmethod
    def _tie_breaker(cls, value: str) -> str:
        if value in ("lowest", "highest") or re.fullmatch(NAME_RE, value):
            return value
        raise ValueError(f"{value!r} is not allowed; use lowest, highest or a node name")

    @model_validator(mode="after")
    def _one_way_to_sign(self) -> QuorumDevice:
        if (self.ssh is None) == (self.local is None):
            raise ValueError(
                "give exactly one of ssh (the qnetd host's SSH target, where its CA signs "
                "the cluster's certificate) or local (qnetd on this machine: the lab)"
            )
        return self


class DiskMode(StrEnum):
    BLOCK = "block"  # the DRBD device is the VM disk: live migration possible
    QCOW2_ON_XFS = "qcow2-on-xfs"  # the original recipe: restart-only failover


class Disk(Model):
    size: Size = Field(gt=0)
    mode: DiskMode = DiskMode.BLOCK


class VmNetwork(Model):
    bridge: IfName
    mac: str | None = Field(
        None, pattern=MAC_RE, description="leave unset: a stable MAC is derived from the name"
    )
    model: Literal["virtio", "e1000"] = "virtio"
    clean_traffic: bool = Field(
        True,
        description="libvirt's clean-traffic filter: the guest sends only from its own MAC "
        "and the first IPv4 address it uses (learned), IPv4 and ARP only. Off only for a "
        "guest that must route, bridge or use several addresses or IPv6 on this network",
    )


class Boot(Model):
    source: Literal["disk", "cdrom", "network"] = "disk"
    cdrom_image: Path | None = Field(None, description="ISO on both nodes, for source: cdrom")

    @model_validator(mode="after")
    def _cdrom_needs_image(self) -> Boot:
        if self.source == "cdrom" and not (self.cdrom_image and self.cdrom_image.is_absolute()):
            raise ValueError("source cdrom needs cdrom_image, the ISO's absolute path on the nodes")
        return self


class Vm(Model):
    name: Name
    _name_for_drbd = field_validator("name")(not_a_drbd_word)
    vcpus: int = Field(1, ge=1, le=256)
    memory: Size = Field(gt=0)
    disk: Disk
    preferred_node: Name | None = Field(None, description="where the VM runs when both are up")
    networks: list[VmNetwork] = []
    boot: Boot = Boot()
    autostart: bool = Field(True, description="started by the cluster (target-role Started)")
    force_stop: bool = Field(
        False,
        description="stop by destroying the domain instead of an ACPI shutdown: only for "
        "guests that ignore ACPI (the lab's BIOS-only payloads), whose shutdown would run "
        "into the stop timeout and get their node fenced",
    )

    @field_validator("memory")
    @classmethod
    def _memory_floor(cls, value: int) -> int:
        if value < 16 * 1024**2:
            raise ValueError("memory below 16MiB cannot boot anything: raise it")
        return value


class Alerts(Model):
    webhook_url_file: LocalPath | None = Field(
        None,
        description="file holding an http(s) URL: every event the alert agent records is also "
        "POSTed there as JSON (the URL may hold a token: it stays out of the spec and the CIB)",
    )


class Monitoring(Model):
    """What apply installs so the cluster is watched without hakvm running (docs/metrics.md)."""

    metrics: bool = Field(
        True,
        description="the hakvm-metrics timer: ha_cluster_* and hakvm_* metrics in "
        "node_exporter's textfile directory on each node",
    )
    interval_s: int = Field(15, ge=5, le=300, description="how often the metrics are written")
    node_exporter: bool = Field(
        False,
        description="install and run Debian's prometheus-node-exporter (port 9100), which "
        "serves the metrics; leave false if you run node_exporter yourself",
    )
    events: bool = Field(
        True,
        description="a Pacemaker alert agent recording every fencing, node and resource event "
        "on each node (/var/log/hakvm/events/events.jsonl)",
    )
    alerts: Alerts = Alerts()


class ClusterSpec(Model):
    """The whole cluster: the one document hakvm is driven by."""

    cluster: Cluster
    nodes: list[Node] = Field(description="exactly two nodes")
    heartbeat: list[HeartbeatLink] = Field(
        min_length=1,
        max_length=8,
        description="corosync knet links: two recommended (bond network + back-to-back link)",
    )
    replication: Replication | None = Field(
        None,
        description="the network of DRBD replication and live migration; default: a "
        "heartbeat network on a bond (shared with whatever else is on it)",
    )
    vms: list[Vm] = []
    monitoring: Monitoring = Monitoring()
    allow_memory_overcommit: bool = Field(
        False,
        description="turn 'one node cannot hold every VM after a failover' into a warning",
    )
    quorum_device: QuorumDevice | None = Field(
        None,
        description="a corosync-qnetd on a third host decides which half of a split keeps "
        "quorum: replaces two_node and the fence delay",
    )

    @field_validator("nodes")
    @classmethod
    def _two_nodes(cls, value: list[Node]) -> list[Node]:
        if len(value) != 2:
            raise ValueError(f"a hakvm cluster has exactly two nodes, this spec has {len(value)}")
        return value

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def is_valid_name(value: str) -> bool:
    return re.match(NAME_RE, value) is not None
