"""`hakvm lab ...`: two local QEMU cluster nodes, their links and virtual BMCs.

Exit codes: 2 bad input (click usage errors), 3 lab not in a state for the command,
1 an operation failed. No traceback for expected failures.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shlex
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hakvm.lab import (
    bmcs,
    faults,
    image,
    lifecycle,
    nodes,
    preflight,
    procs,
    qnetd,
    snapshots,
    ssh,
)
from hakvm.lab.qmp import QmpError
from hakvm.lab.state import (
    DEFAULT_BMC_PORT,
    DEFAULT_LINK_PORT,
    DEFAULT_QNETD_PORT,
    DEFAULT_REPO_PORT,
    DEFAULT_SSH_PORT,
    LINKS,
    NODES,
    Lab,
    LabConfig,
    LabStateError,
    disk_usage,
    lab_dir_from_env,
    orphaned_runtimes,
)

EXIT_FAILED = 1
EXIT_STATE = 3

err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

NODE = click.Choice(NODES)
LINK = click.Choice(LINKS)


def _fail(code: int, message: str) -> None:
    click.echo(f"hakvm lab: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Map lab errors to one line + exit code (click's own errors pass through)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LabStateError as exc:
            _fail(EXIT_STATE, str(exc))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        except (
            image.ImageError,
            nodes.NodeError,
            bmcs.BmcError,
            qnetd.QnetdError,
            procs.DaemonError,
            QmpError,
            OSError,
            TimeoutError,
        ) as exc:
            _fail(EXIT_FAILED, str(exc) or type(exc).__name__)
        except KeyboardInterrupt:
            _fail(EXIT_FAILED, "interrupted")
        return None

    return wrapper  # type: ignore[return-value]


def _lab(ctx: click.Context) -> Lab:
    return Lab(ctx.obj["lab_dir"])


@click.group()
@click.option(
    "--lab-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=None,
    help="Lab state dir [env HAKVM_LAB_DIR, default ./.hakvm/lab].",
)
@click.pass_context
def lab(ctx: click.Context, lab_dir: pathlib.Path | None) -> None:
    """Two local QEMU cluster nodes with bonded links and virtual BMCs."""
    ctx.ensure_object(dict)
    ctx.obj["lab_dir"] = lab_dir or lab_dir_from_env()


def _image_progress() -> tuple[Progress, Callable[[str, float], None]]:
    progress = Progress(
        TextColumn("[bold]node image[/]"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=False,
    )
    task = progress.add_task("", total=1.0)
    lock = threading.Lock()

    def update(text: str, fraction: float) -> None:
        with lock:
            progress.update(task, description=text[:70], completed=fraction)

    return progress, update


@lab.command("image")
@click.option("--force", is_flag=True, help="Rebuild even if a cached image exists.")
@handle_errors
def image_cmd(force: bool) -> None:
    """Build (or reuse) the cached Debian 12 node image."""
    cached = image.cached_image()
    if cached and not force:
        click.echo(f"node image cached: {cached.directory}")
        return
    preflight.require_root()
    started = time.monotonic()
    progress, update = _image_progress()
    with progress:
        img = image.build_image(update, force=force)
    click.echo(f"node image built in {time.monotonic() - started:.0f}s: {img.directory}")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise click.BadParameter(f"{name}={raw!r} is not a port number") from None


@lab.command("up")
@click.option(
    "--ssh-port",
    type=int,
    default=None,
    help=f"First SSH port on 127.0.0.1 [env HAKVM_LAB_SSH_PORT, {DEFAULT_SSH_PORT}].",
)
@click.option(
    "--bmc-port",
    type=int,
    default=None,
    help=f"First BMC UDP port [env HAKVM_LAB_BMC_PORT, {DEFAULT_BMC_PORT}].",
)
@click.option(
    "--link-port",
    type=int,
    default=None,
    help=f"First of 6 link UDP ports [env HAKVM_LAB_LINK_PORT, {DEFAULT_LINK_PORT}].",
)
@click.option(
    "--repo-port",
    type=int,
    default=None,
    help=f"Package repository TCP port [env HAKVM_LAB_REPO_PORT, {DEFAULT_REPO_PORT}].",
)
@click.option(
    "--qnetd-port",
    type=int,
    default=None,
    help=f"qnetd (quorum device) TCP port [env HAKVM_LAB_QNETD_PORT, {DEFAULT_QNETD_PORT}].",
)
@click.option(
    "--memory",
    "memory_mib",
    type=int,
    default=1536,
    show_default=True,
    help="Memory per node (MiB).",
)
@click.option("--cpus", type=int, default=1, show_default=True, help="vCPUs per node.")
@click.option(
    "--timeout", type=float, default=600, show_default=True, help="Seconds to wait for SSH."
)
@click.pass_context
@handle_errors
def up_cmd(
    ctx: click.Context,
    *,
    ssh_port: int | None,
    bmc_port: int | None,
    link_port: int | None,
    repo_port: int | None,
    qnetd_port: int | None,
    memory_mib: int,
    cpus: int,
    timeout: float,
) -> None:
    """Boot both nodes (building the image if needed) and wait for SSH.

    Checks first (exit 3, one line with the fix): root, the tools, every lab port free on
    127.0.0.1, enough memory and disk."""
    preflight.require_root()
    config = LabConfig(
        ssh_port=ssh_port or _env_int("HAKVM_LAB_SSH_PORT", DEFAULT_SSH_PORT),
        bmc_port=bmc_port or _env_int("HAKVM_LAB_BMC_PORT", DEFAULT_BMC_PORT),
        link_port=link_port or _env_int("HAKVM_LAB_LINK_PORT", DEFAULT_LINK_PORT),
        repo_port=repo_port or _env_int("HAKVM_LAB_REPO_PORT", DEFAULT_REPO_PORT),
        qnetd_port=qnetd_port or _env_int("HAKVM_LAB_QNETD_PORT", DEFAULT_QNETD_PORT),
        memory_mib=memory_mib,
        cpus=cpus,
    )
    try:
        config.validate()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    lab_ = _lab(ctx)
    for run_dir, gone in orphaned_runtimes():
        if run_dir != lab_.run.dir:  # this lab's own, lab.json lost, is reused by this up
            click.echo(
                f"lab: {run_dir} holds {disk_usage(run_dir) / 2**30:.1f} GiB of node disks of "
                f"the lab {gone}, which was deleted without `lab destroy`; `hakvm lab "
                f"--lab-dir {shlex.quote(str(gone))} destroy` removes them",
                err=True,
            )  # one line, unwrapped: the command is meant to be copied
    progress, update = _image_progress()
    needs_build = image.cached_image() is None

    def step(text: str) -> None:
        err.print(f"[bold]lab:[/] {text}")

    def first_update(text: str, fraction: float) -> None:
        # The bar appears with the build's first report: never before preflight has passed
        # (a failed check is the one line printed).
        if not progress.live.is_started:
            progress.start()
        update(text, fraction)

    try:
        result = lifecycle.up(lab_, config, step, first_update if needs_build else None, timeout)
    finally:
        progress.stop()
    mem = lifecycle.memory_kib(lab_)
    click.echo(
        f"lab up in {result.seconds:.0f}s (image {result.image_seconds:.0f}s, "
        f"disks {result.prepare_seconds:.0f}s, SSH after "
        + ", ".join(f"{n} {s:.0f}s" for n, s in result.boot_seconds.items())
        + f"); RSS {sum(mem.values()) // 1024} MiB"
    )
    click.echo(f"state dir: {lab_.dir} (runtime: {lab_.run.dir})")
    for node in NODES:
        click.echo(
            f"  {node}: ssh 127.0.0.1:{config.ssh_port_of(node)}, "
            f"BMC 127.0.0.1:{config.bmc_port_of(node)}/udp (guests: 10.0.2.2)"
        )
    click.echo(f"  qnetd (quorum device): 127.0.0.1:{config.qnetd_port}/tcp (guests: 10.0.2.2)")


@lab.command("down")
@click.pass_context
@handle_errors
def down_cmd(ctx: click.Context) -> None:
    """Stop every QEMU, BMC, repository and qnetd process of the lab (strays too)."""
    killed = lifecycle.down(_lab(ctx))
    click.echo(f"lab down: stopped {len(killed)} processes" if killed else "lab down: nothing ran")


@lab.command("destroy")
@click.pass_context
@handle_errors
def destroy_cmd(ctx: click.Context) -> None:
    """`lab down`, then delete the lab: its node disks (runtime dir) and its state dir."""
    lab_ = _lab(ctx)
    run_dir = lab_.run.dir
    lifecycle.destroy(lab_)
    click.echo(f"lab destroyed: {lab_.dir} and {run_dir} removed")


@lab.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@handle_errors
def status_cmd(ctx: click.Context, as_json: bool) -> None:
    """Power, QEMU and BMC processes, links."""
    state = lifecycle.status(_lab(ctx))
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    table = Table(title=f"lab {state['lab_dir']}")
    for col in ("node", "power", "qemu pid", "bmc", "ssh", "bmc address"):
        table.add_column(col)
    for node, info in state["nodes"].items():
        power = info["power"] + (" (frozen)" if info.get("frozen") else "")
        style = {"on": "green", "off": "yellow"}.get(info["power"], "bold red")
        bstyle = {"running": "green", "stopped": "yellow"}.get(info["bmc"], "bold red")
        table.add_row(
            node,
            f"[{style}]{power}[/]",
            str(info["qemu_pid"] or "-"),
            f"[{bstyle}]{info['bmc']}[/]",
            info["ssh"],
            info["bmc_address"],
        )
    Console().print(table)
    click.echo("links: " + ", ".join(f"{k} {v}" for k, v in state["links"].items()))
    repo_state = state["repository"]
    click.echo(f"package repository: {repo_state['state']} on {repo_state['address']}")
    qnetd_state = state["qnetd"]
    click.echo(
        f"qnetd (quorum device): {qnetd_state['state']} on {qnetd_state['address']} "
        f"(guests: {qnetd_state['guest_address']})"
    )
    if not state["healthy"]:
        click.echo(
            "a node, BMC or qnetd process died (see its serial_log / bmc_log / log in --json)",
            err=True,
        )


AT_HELP = "Print JSON with `at`: the fault's moment (Unix time, read right after it)."


@lab.command("kill")
@click.argument("node", type=NODE, metavar="NODE")
@click.option("--json", "as_json", is_flag=True, help=AT_HELP)
@click.pass_context
@handle_errors
def kill_cmd(ctx: click.Context, node: str, as_json: bool) -> None:
    """Hard power-off NODE (SIGKILL to its QEMU: a pulled plug)."""
    lab_ = _lab(ctx)
    lifecycle.require_up(lab_)
    at = nodes.kill_node(lab_.run, node)  # the drills' clock starts there
    if as_json:
        click.echo(json.dumps({"node": node, "was_on": at is not None, "at": at or time.time()}))
    else:
        click.echo(f"{node}: powered off" if at is not None else f"{node}: was already off")


@lab.command("freeze")
@click.argument("node", type=NODE, metavar="NODE")
@click.option("--json", "as_json", is_flag=True, help=AT_HELP)
@click.pass_context
@handle_errors
def freeze_cmd(ctx: click.Context, node: str, as_json: bool) -> None:
    """Hang NODE with its power on (its vCPUs stop): fencing must power it off."""
    lab_ = _lab(ctx)
    lifecycle.require_up(lab_)
    if not nodes.freeze_node(lab_.run, node):
        _fail(EXIT_STATE, f"{node} is off: nothing to freeze")
    at = time.time()  # QMP answers `stop` once the vCPUs stopped
    if as_json:
        click.echo(json.dumps({"node": node, "at": at}))
    else:
        click.echo(f"{node}: frozen (power on, vCPUs stopped)")


@lab.command("thaw")
@click.argument("node", type=NODE, metavar="NODE")
@click.pass_context
@handle_errors
def thaw_cmd(ctx: click.Context, node: str) -> None:
    """Let a frozen NODE run again (nothing to do if fencing already power-cycled it)."""
    lab_ = _lab(ctx)
    lifecycle.require_up(lab_)
    was_on = nodes.thaw_node(lab_.run, node)
    click.echo(f"{node}: running" if was_on else f"{node}: is off")


@lab.command("start")
@click.argument("node", type=NODE, metavar="NODE")
@click.option("--wait/--no-wait", default=False, help="Wait until SSH answers.")
@click.pass_context
@handle_errors
def start_cmd(ctx: click.Context, node: str, wait: bool) -> None:
    """Power on NODE (start its QEMU)."""
    lab_ = _lab(ctx)
    config = lifecycle.require_up(lab_)
    pid = nodes.start_node(lab_.run, node)
    click.echo(f"{node}: on (QEMU pid {pid})")
    if wait:
        secs = ssh.wait_for_ssh(config.ssh_port_of(node), lab_.ssh_key, lab_.known_hosts, 600)
        click.echo(f"{node}: SSH up after {secs:.0f}s")


@lab.command("reimage")
@click.argument("node", type=NODE, metavar="NODE")
@click.pass_context
@handle_errors
def reimage_cmd(ctx: click.Context, node: str) -> None:
    """Give powered-off NODE fresh disks from the node image: a new SSH host key, an empty
    DRBD disk, nothing of the cluster (a disk swap and an OS reinstall). Forgets the lab's
    snapshots, which hold its old disks."""
    done = lifecycle.reimage(_lab(ctx), node)
    click.echo(
        f"{node}: fresh disks in {done.seconds:.0f}s; new SSH host key {done.fingerprint} "
        f"(the lab's known_hosts changed for {node} only)"
    )
    if done.dropped:
        click.echo(f"snapshots forgotten (they held {node}'s old disks): {', '.join(done.dropped)}")


@lab.command("cut")
@click.argument("link", type=LINK, metavar="LINK")
@click.pass_context
@handle_errors
def cut_cmd(ctx: click.Context, link: str) -> None:
    """Drop carrier of LINK on both nodes."""
    changed = faults.cut(_lab(ctx), link)
    click.echo(f"{link}: cut (carrier down on {', '.join(changed) or 'no running node'})")


@lab.command("heal")
@click.argument("link", type=LINK, required=False, metavar="[LINK]")
@click.pass_context
@handle_errors
def heal_cmd(ctx: click.Context, link: str | None) -> None:
    """Restore carrier of LINK (default: all links)."""
    links = [link] if link else list(LINKS)
    faults.heal(_lab(ctx), links)
    click.echo(f"healed: {', '.join(links)}")


@lab.command("bmc-stop")
@click.argument("node", type=NODE, metavar="NODE")
@click.pass_context
@handle_errors
def bmc_stop_cmd(ctx: click.Context, node: str) -> None:
    """Stop NODE's virtual BMC (fencing it then fails, as with a dead BMC)."""
    lab_ = _lab(ctx)
    lifecycle.require_up(lab_)
    was = bmcs.stop_bmc(lab_, node)
    click.echo(f"{node}: BMC stopped" if was else f"{node}: BMC was not running")


@lab.command("bmc-start")
@click.argument("node", type=NODE, metavar="NODE")
@click.pass_context
@handle_errors
def bmc_start_cmd(ctx: click.Context, node: str) -> None:
    """Start NODE's virtual BMC."""
    lab_ = _lab(ctx)
    lifecycle.require_up(lab_)
    pid = bmcs.start_bmc(lab_, node, procs.ensure_lab_user())
    click.echo(f"{node}: BMC running (pid {pid})")


@lab.command("qnetd-stop")
@click.pass_context
@handle_errors
def qnetd_stop_cmd(ctx: click.Context) -> None:
    """Stop the lab's qnetd (the quorum device casts no vote until it is back)."""
    lab_ = _lab(ctx)
    lifecycle.require_up(lab_)
    was = qnetd.stop(lab_)
    click.echo("qnetd: stopped" if was else "qnetd: was not running")


@lab.command("qnetd-start")
@click.pass_context
@handle_errors
def qnetd_start_cmd(ctx: click.Context) -> None:
    """Start the lab's qnetd (on 127.0.0.1, reached by the guests at 10.0.2.2)."""
    lab_ = _lab(ctx)
    lifecycle.require_up(lab_)
    pid = qnetd.start(lab_, procs.ensure_lab_user())
    click.echo(f"qnetd: running (pid {pid})")


@lab.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("node", type=NODE, metavar="NODE")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
@handle_errors
def ssh_cmd(ctx: click.Context, node: str, command: tuple[str, ...]) -> None:
    """SSH to NODE as root (optional COMMAND, joined by ssh as usual)."""
    lab_ = _lab(ctx)
    config = lifecycle.require_up(lab_)
    argv = ssh.ssh_argv(
        config.ssh_port_of(node),
        lab_.ssh_key,
        lab_.known_hosts,
        list(command),
        tty=not command and sys.stdin.isatty(),
    )
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@lab.command("console")
@click.argument("node", type=NODE, metavar="NODE")
@click.pass_context
@handle_errors
def console_cmd(ctx: click.Context, node: str) -> None:
    """Attach to NODE's serial console (Ctrl-] to leave)."""
    from hakvm.lab import console

    lab_ = _lab(ctx)
    lifecycle.require_up(lab_)
    paths = nodes.node_paths(lab_.run, node)
    if nodes.qemu_pid(lab_.run, node) is None:
        raise LabStateError(f"{node} is off (its log: {paths.serial_log})")
    path = paths.console
    console.attach(path)


@lab.group("snapshot")
def snapshot() -> None:
    """Save the running lab (both nodes' memory and disks) and go back to it in seconds."""


@snapshot.command("save")
@click.argument("name")
@click.pass_context
@handle_errors
def snapshot_save_cmd(ctx: click.Context, name: str) -> None:
    """Pause both nodes together, save each, resume them."""
    lab_ = _lab(ctx)
    lifecycle.require_up(lab_)
    entry = snapshots.save(lab_, name)
    click.echo(f"snapshot {name} saved in {entry['seconds']:.0f}s")


@snapshot.command("restore")
@click.argument("name")
@click.pass_context
@handle_errors
def snapshot_restore_cmd(ctx: click.Context, name: str) -> None:
    """Put both nodes back to snapshot NAME (started first if off) and resume them."""
    lab_ = _lab(ctx)
    lifecycle.require_up(lab_)
    result = snapshots.restore(lab_, name)
    click.echo(
        f"snapshot {name} restored in {result['seconds']:.0f}s "
        f"(memory and disks loaded in {result['loaded_seconds']:.0f}s)"
    )


@snapshot.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@handle_errors
def snapshot_list_cmd(ctx: click.Context, as_json: bool) -> None:
    """The lab's snapshots."""
    index = snapshots.listing(_lab(ctx))
    if as_json:
        click.echo(json.dumps(index, indent=2, sort_keys=True))
        return
    for name, entry in sorted(index.items()):
        click.echo(f"{name}\t{entry.get('created', '?')}")


@snapshot.command("delete")
@click.argument("name")
@click.pass_context
@handle_errors
def snapshot_delete_cmd(ctx: click.Context, name: str) -> None:
    """Delete snapshot NAME from both nodes' disks."""
    snapshots.delete(_lab(ctx), name)
    click.echo(f"snapshot {name} deleted")
