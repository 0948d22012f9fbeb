"""`hakvm init`: read two machines (or the running lab) and write the spec for them.

It asks nothing unless `--interactive`: an unknown host key is refused (exit 3) unless
`--accept-new-host-keys` trusts it (its fingerprint printed, the key written to the spec's
known_hosts file); a changed one is always refused. What cannot be discovered (a BMC's
password, its user when the BMC lists none) is a TODO in the spec, or asked for with
`--interactive`.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import click

from hakvm.cli.common import say
from hakvm.errors import ExitCode, InputError, StateError
from hakvm.remote import hostkeys
from hakvm.remote.inventory import Survey, survey
from hakvm.remote.session import Target
from hakvm.spec.models import NAME_RE, SshTarget
from hakvm.spec.propose import Access, KnownBmc, Machine, propose

KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
TARGET_RE = re.compile(r"^(?:(?P<user>[a-z_][a-z0-9_-]*)@)?(?P<host>[^@:\s]+)(?::(?P<port>\d+))?$")


def parse_target(text: str) -> tuple[str, str, int]:
    """"[USER@]HOST[:PORT]" -> (user, host, port); root and 22 by default."""
    match = TARGET_RE.match(text)
    port = int(match["port"] or 22) if match else 0
    if match is None or not 1 <= port <= 65535:
        raise click.BadParameter(f"{text!r}: write it as [USER@]HOST[:PORT]", param_hint="--node")
    return match["user"] or "root", match["host"], port


def _written(path: Path, spec_dir: Path) -> str:
    """How the spec names a file: relative to the spec inside its directory, else absolute."""
    path = path.expanduser().resolve()
    return str(path.relative_to(spec_dir)) if path.is_relative_to(spec_dir) else str(path)


def _default_key() -> Path:
    for name in KEYS:
        key = Path("~/.ssh").expanduser() / name
        if key.is_file():
            return key
    raise InputError("init: no SSH key in ~/.ssh (id_ed25519, id_ecdsa, id_rsa): name one with -i")


def _trust(targets: list[Target], accept: bool, interactive: bool) -> None:
    """Each machine's host key must be in its known_hosts file, or trusted now because the
    user said so (never a changed one)."""
    for target in targets:
        known = target.ssh.known_hosts
        assert known is not None
        found = asyncio.run(hostkeys.check(target.ssh, known))
        if found.state == "trusted":
            continue
        what = f"{found.where} presents host key {found.fingerprint} ({found.key.get_algorithm()})"
        if found.state == "changed":
            raise StateError(
                f"init: {what}, not the one {known} holds: not the machine that file knows; "
                "init never replaces a host key"
            )
        if not accept and not (
            interactive and click.confirm(f"hakvm: {what}: trust it?", err=True)
        ):
            raise StateError(
                f"init: {what}, which {known} does not hold: check it on the machine (ssh-keygen "
                "-lf /etc/ssh/ssh_host_ed25519_key.pub), then add --accept-new-host-keys"
            )
        hostkeys.trust(found)
        say(f"{what}: trusted, written to {known}")


def _machines(found: Survey, accesses: list[Access]) -> list[Machine]:
    return [
        Machine(access, inv, password_file=f"bmc-{inv.hostname or i}.password")
        for i, (access, inv) in enumerate(zip(accesses, found.inventories, strict=True))
    ]


def _ask_bmcs(machines: list[Machine], spec_dir: Path) -> None:
    """--interactive: the BMC's address (if unknown), user and password (written 0600)."""
    for m in machines:
        name = m.inv.hostname
        address = m.inv.bmc.address if m.inv.bmc else None
        address = click.prompt(f"{name}: BMC address", default=address, err=True)
        user = click.prompt(f"{name}: BMC user", default=m.inv.bmc.user if m.inv.bmc else None,
                            err=True)  # fmt: skip
        password = click.prompt(f"{name}: BMC password", hide_input=True, err=True)
        path = spec_dir / m.password_file
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        comment = "BMC address, user and password given at the prompt"
        m.bmc = KnownBmc(address, 623, user, m.password_file, comment)


def _lab(lab_dir: Path | None, spec_dir: Path) -> tuple[list[Target], list[Access], list[KnownBmc]]:
    from hakvm.lab.state import GUEST_HOST_ADDRESS, LOOPBACK, NODES, Lab, LabStateError
    from hakvm.lab.state import lab_dir_from_env as default_dir

    lab = Lab(lab_dir or default_dir())
    try:
        config = lab.load()
    except LabStateError as exc:
        raise StateError(f"init --lab: {exc}") from None
    targets, accesses, bmcs = [], [], []
    for node in NODES:
        ssh = SshTarget(host=LOOPBACK, port=config.ssh_port_of(node), user="root",
                        key_file=lab.ssh_key, known_hosts=lab.known_hosts)  # fmt: skip
        targets.append(Target(node, ssh))
        accesses.append(Access(LOOPBACK, ssh.port, "root", _written(lab.ssh_key, spec_dir),
                               _written(lab.known_hosts, spec_dir)))  # fmt: skip
        port = config.bmc_port_of(node)
        bmcs.append(KnownBmc(
            GUEST_HOST_ADDRESS, port, config.bmc_user,
            _written(lab.bmc_password_file(node), spec_dir),
            f"the lab's BMC of {node}: {LOOPBACK}:{port} on the host, which the nodes reach "
            f"as {GUEST_HOST_ADDRESS}",
        ))  # fmt: skip
    return targets, accesses, bmcs


def _save(found: Survey, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for inv, batch, probe in zip(
        found.inventories, found.raw_batches, found.raw_probes, strict=True
    ):
        (directory / f"inventory-{inv.hostname}.b64").write_text(batch.strip() + "\n")
        (directory / f"linkprobe-{inv.hostname}.txt").write_text(probe)
    say(f"raw answers saved in {directory}")


@click.command("init")
@click.option("--node", "nodes", multiple=True, metavar="[USER@]HOST[:PORT]",
              help="a machine of the cluster (twice)")
@click.option("--lab", is_flag=True, help="the running QEMU lab (its SSH ports, key, BMCs)")
@click.option("--lab-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="with --lab: the lab's state dir ($HAKVM_LAB_DIR, .hakvm/lab)")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("cluster.yaml"), show_default=True, help="the spec to write")
@click.option("-i", "--key", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="SSH private key (default: ~/.ssh/id_ed25519, id_ecdsa or id_rsa)")
@click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="host keys to check against (default ~/.ssh/known_hosts; with "
              "--accept-new-host-keys, known_hosts beside the spec)")
@click.option("--accept-new-host-keys", is_flag=True,
              help="trust a machine's host key that the known_hosts file lacks (printed)")
@click.option("--name", "cluster_name", help="cluster name (default: the two hostnames)")
@click.option("--interactive", is_flag=True,
              help="ask: unknown host keys, the cluster name, BMC users and passwords")
@click.option("--force", is_flag=True, help="overwrite OUTPUT if it exists")
@click.option("--save-facts", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="also keep what the machines answered in this directory (bug reports)")
def init_cmd(  # noqa: PLR0917 - click passes options by keyword
    nodes: tuple[str, ...],
    lab: bool,
    lab_dir: Path | None,
    output: Path,
    key: Path | None,
    known_hosts: Path | None,
    accept_new_host_keys: bool,
    cluster_name: str | None,
    interactive: bool,
    force: bool,
    save_facts: Path | None,
) -> int:
    """Read two machines over SSH and write a commented spec for them (OUTPUT).

    Each machine is read only, but for a few seconds of link probing: a free NIC that is
    down is taken up, pings the IPv6 all-nodes address of its own link, and is taken down
    again. Exit: 0 written, 2 bad command line, 3 a machine cannot be reached or trusted,
    or the two cannot make a cluster as they are (one line says why)."""
    if lab == bool(nodes) or (nodes and len(nodes) != 2):
        raise click.UsageError("name the two machines with --node twice, or use --lab")
    if output.exists() and not force:
        raise InputError(f"init: {output} exists; choose another -o or add --force")
    if cluster_name is not None and not re.match(NAME_RE, cluster_name):
        raise click.BadParameter("lower-case letters, digits and '-'", param_hint="--name")
    spec_dir = output.expanduser().resolve().parent
    if lab:
        targets, accesses, bmcs = _lab(lab_dir, spec_dir)
    else:
        key = key or _default_key()
        default_known = spec_dir / "known_hosts" if accept_new_host_keys else Path(
            "~/.ssh/known_hosts").expanduser()  # fmt: skip
        known = (known_hosts or default_known).expanduser().resolve()
        targets, accesses, bmcs = [], [], []
        for text in nodes:
            user, host, port = parse_target(text)
            ssh = SshTarget(host=host, port=port, user=user, key_file=key.expanduser().resolve(),
                            known_hosts=known)  # fmt: skip
            targets.append(Target(host, ssh))
            accesses.append(Access(host, port, user, _written(ssh.key_file, spec_dir),
                                   _written(known, spec_dir)))  # fmt: skip
        _trust(targets, accept_new_host_keys, interactive)
    found = asyncio.run(survey(targets, Path.cwd()))
    if save_facts is not None:
        _save(found, save_facts)
    machines = _machines(found, accesses)
    for machine, bmc in zip(machines, bmcs, strict=False):
        machine.bmc = bmc
    names = [m.inv.hostname for m in machines]
    named = "--name" if cluster_name else "proposal: the two hostnames"
    if cluster_name is None and lab:
        cluster_name, named = "lab", "the lab"
    if cluster_name is None and interactive:
        cluster_name = click.prompt("hakvm: cluster name", default="-".join(names), err=True)
    if interactive and not lab:
        _ask_bmcs(machines, spec_dir)
    source = "hakvm init --lab" if lab else "hakvm init"
    text = propose(machines, cluster_name=cluster_name or "-".join(names)[:63].strip("-"),
                   source=source, named=named)  # fmt: skip
    output.write_text(text)
    todo = text.count("# TODO")
    click.echo(f"{output}: written for {' and '.join(names)}"
               + (f"; {todo} TODO(s) to fill in" if todo else ""))  # fmt: skip
    click.echo(f"next: hakvm validate {output} && hakvm plan {output} && hakvm apply {output}")
    return ExitCode.OK


COMMANDS = [init_cmd]
