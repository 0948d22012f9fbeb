"""`hakvm replace-node SPEC NODE`: bring a node reinstalled from scratch back into the
cluster, a full copy of every VM's disk synced to it from the survivor; the VMs keep running.

Without --yes it checks and shows the plan, and changes nothing. The node's host key has
changed with the reinstall: it must be confirmed, with --new-host-key SHA256:... (read on
the node's console: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) or at a prompt with
--interactive; then only that node's entries in the spec's known_hosts file are replaced.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
from rich.console import Console

from hakvm.cli.common import SPEC_ARG, load_context, say
from hakvm.deploy.steps import Step
from hakvm.errors import ExitCode, HakvmError, StateError
from hakvm.ops import replace
from hakvm.remote import hostkeys
from hakvm.remote.session import Session
from hakvm.spec.paths import resolve, spec_dir

CHECK_AFTER = "the survivor's copies were not touched; see hakvm status, run replace-node again"


def confirm_host_key(
    spec_path: Path, session: Session, node: str, given: str | None, interactive: bool
) -> str:
    """The node's host key, trusted for it: already, or now because the user confirmed it.
    Returns its fingerprint."""
    ssh = session.node(node).ssh
    known = resolve(spec_dir(spec_path), ssh.known_hosts) if ssh.known_hosts else Path(
        "~/.ssh/known_hosts").expanduser()  # fmt: skip
    found = asyncio.run(hostkeys.check(ssh, known))
    if given is not None and not hostkeys.same_fingerprint(given, found.key):
        raise StateError(
            f"replace-node: {node} ({found.where}) presents host key {found.fingerprint}, not "
            f"{given}: is it the machine you reinstalled?"
        )
    if found.state == "trusted":
        return found.fingerprint
    prompt = f"hakvm: {node} presents a new host key {found.fingerprint}: is it the node's?"
    if given is None and not (interactive and click.confirm(prompt, err=True)):
        raise StateError(
            f"replace-node: {node} presents host key {found.fingerprint}, which {known} does "
            "not hold: check it on the node's console (ssh-keygen -lf /etc/ssh/"
            f"ssh_host_ed25519_key.pub), then add --new-host-key {found.fingerprint}"
        )
    hostkeys.trust(found)
    say(f"{node}: host key {found.fingerprint} trusted; {known} updated for {found.where} only")
    return found.fingerprint


def _show_plan(console: Console, steps: list[Step]) -> None:
    phase = ""
    for step in steps:
        if step.phase != phase:
            phase = step.phase
            console.print(f"[bold]{phase}[/bold]")
        console.print(f"  {step.node}: {step.title}", markup=False)
        for action in step.actions:
            console.print(f"      $ {action.describe()}", markup=False)


def _show(report: replace.ReplaceReport, *, ran: bool) -> None:
    console = Console(highlight=False)
    if not ran:
        console.print(f"replace {report.node} from {report.survivor}: the checks passed")
        _show_plan(console, report.planned)
        console.print(f"nothing was changed: add --yes to replace {report.node}")
        return
    for t, event in report.timeline:
        console.print(f"{t:>8.1f}s  {event}", markup=False)
    if report.resync_s:
        took = ", ".join(f"{vm} {s}s" for vm, s in report.resync_s.items())
        console.print(f"resync from {report.survivor}: {took}")
    verdict = "untouched" if report.untouched else "NOT untouched"
    console.print(f"VMs on {report.survivor}: {verdict} (Pacemaker's operation history)")
    for problem in report.problems:
        console.print(f"[bold red]problem:[/bold red] {problem}")


@click.command("replace-node")
@SPEC_ARG
@click.argument("node")
@click.option("--yes", is_flag=True, help="replace it (without: check and show the plan only)")
@click.option("--new-host-key", metavar="SHA256:...",
              help="the reinstalled node's host key fingerprint, as read on its console")
@click.option("--interactive", is_flag=True, help="confirm a new host key at a prompt")
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
def replace_node_cmd(  # noqa: PLR0917 - click passes options by keyword
    spec: Path, node: str, yes: bool, new_host_key: str | None, interactive: bool, as_json: bool
) -> int:
    """Bring NODE, reinstalled from scratch (same name and addresses), back into the cluster.

    The survivor must run every VM on UpToDate data and NODE must hold nothing (empty pool
    disk, no cluster configuration). NODE's disks are synced from the survivor, never the
    other way (checked before any data moves); the VMs keep running. Exit: 0 replaced (or,
    without --yes, checked), 1 a step failed, 2 bad input, 3 refused (one line says why)."""
    ctx = load_context(spec)
    session = Session(ctx.spec, spec)
    session.node(node)  # a name not in the spec: exit 2 before anything is asked of a node
    fingerprint = confirm_host_key(spec, session, node, new_host_key, interactive)
    console = Console(stderr=True, highlight=False)

    def progress(phase: str, where: str, step: Step | None, event: str) -> None:
        if step is None:
            console.print(f"[bold]{phase}[/bold]: {event}")
        elif event != "start":
            console.print(f"  {where}: {step.title} ... {'ok' if event == 'done' else 'FAILED'}",
                          markup=False)  # fmt: skip

    try:
        report = asyncio.run(
            replace.replace_node(ctx.spec, spec, node, say, progress=progress, run=yes)
        )
    except HakvmError as exc:
        if yes and not isinstance(exc, replace.ReplaceRefused):
            exc.hint = CHECK_AFTER
        raise
    report.host_key = fingerprint
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _show(report, ran=yes)
    return ExitCode.FAILED if report.problems else ExitCode.OK


COMMANDS = [replace_node_cmd]
