"""Live-migration trust: how one node's libvirt reaches the other's, and nothing more.

VirtualDomain migrates with `virsh migrate --live DOMAIN qemu+ssh://<peer>-migration/system`
(`migration_network_suffix`), so the control channel and QEMU's memory stream both go to the
peer's address on the replication network (the bond), not over the dedicated heartbeat link.
That needs root SSH from node to node. hakvm gives it a dedicated key pair (generated once,
kept in the local state dir like the other cluster secrets) that:

- the peer accepts only from the other node's replication address (`from=`), with
  `restrict` (no forwarding, no pty) and a forced command (`FORCED_COMMAND`) that only
  ever runs libvirt's SSH tunnel (`virt-ssh-helper qemu:///system`): never a shell, nor
  any other command, not even from the other node;
- is offered only to the `<node>-migration` names (a managed block in root's ssh_config);
- verifies the peer's real host key (a dedicated known_hosts built from the nodes' own host
  keys, read by apply): never trust on first use.

The pieces that depend on node state (host keys, the existing authorized_keys and
ssh_config) are inputs here, so these stay pure functions.
"""

from __future__ import annotations

from hakvm.render.base import RenderContext
from hakvm.render.blocks import BEGIN, END
from hakvm.render.drbd import replication_link

SUFFIX = "-migration"
KEY_PATH = "/etc/hakvm/ssh/migration_ed25519"
KNOWN_HOSTS_PATH = "/etc/hakvm/ssh/known_hosts"
SSH_CONFIG_PATH = "/root/.ssh/config"
AUTHORIZED_KEYS_PATH = "/root/.ssh/authorized_keys"
HOST_KEY_PATH = "/etc/ssh/ssh_host_ed25519_key.pub"


# What sshd runs on the peer for the migration key, whatever the client asked for (that
# is in SSH_ORIGINAL_COMMAND). libvirt's ssh transport (libvirt 9.0 on Debian 12; used by
# `virsh -c qemu+ssh://...` and the VirtualDomain agent's migrate) asks for
#   sh -c 'which virt-ssh-helper ...; if ...; then virt-ssh-helper 'qemu:///system'; else
#          ... nc $ARG -U /var/run/libvirt/libvirt-sock; fi'
# (proxy=auto; proxy=netcat asks only for the nc part, proxy=native only for the helper):
# each becomes the helper on the system URI. Anything else is refused with a line on
# stderr. No double quote inside: it sits in authorized_keys' command="...".
FORCED_COMMAND = (
    "case $SSH_ORIGINAL_COMMAND in *virt-ssh-helper*|*libvirt-sock*) "
    "exec virt-ssh-helper qemu:///system;; esac; "
    "echo hakvm: the migration key opens only the libvirt tunnel >&2; exit 1"
)


def migration_name(node: str) -> str:
    return f"{node}{SUFFIX}"


def libvirt_uri(node: str) -> str:
    """The URI VirtualDomain migrates `node`'s VMs to (qemu+ssh over the replication net)."""
    return f"qemu+ssh://{migration_name(node)}/system"


def migration_addresses(ctx: RenderContext) -> dict[str, str]:
    """node -> its address on the replication network (where migrations go)."""
    link = replication_link(ctx)
    return {name: str(address) for name, address in link.addresses.items()}


def ssh_config_block(ctx: RenderContext) -> str:
    names = " ".join(migration_name(n.name) for n in ctx.spec.nodes)
    return (
        f"{BEGIN}\n"
        f"# cluster {ctx.spec.cluster.name}: libvirt live migration (qemu+ssh) to the peer\n"
        f"Host {names}\n"
        "    User root\n"
        f"    IdentityFile {KEY_PATH}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {KNOWN_HOSTS_PATH}\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
        f"{END}\n"
    )


def known_hosts(ctx: RenderContext, host_keys: dict[str, str]) -> str:
    """One line per node that has a host key: `<node>-migration,<address> <type> <key>`."""
    addresses = migration_addresses(ctx)
    lines = []
    for node in ctx.spec.nodes:
        key = host_keys.get(node.name, "").split()
        if len(key) >= 2 and node.name in addresses:
            lines.append(f"{migration_name(node.name)},{addresses[node.name]} {key[0]} {key[1]}")
    return "\n".join(lines) + "\n" if lines else ""


def authorized_keys_block(ctx: RenderContext, node: str, public_key: str) -> str:
    """The block on `node`: the migration key, accepted only from its peer's address and
    only for libvirt's tunnel."""
    addresses = migration_addresses(ctx)
    peers = [addresses[n.name] for n in ctx.spec.nodes if n.name != node and n.name in addresses]
    key = " ".join(public_key.split()[:2])
    options = f'restrict,from="{",".join(peers)}",command="{FORCED_COMMAND}"'
    return f"{BEGIN}\n{options} {key} hakvm-migration@{ctx.spec.cluster.name}\n{END}\n"
