"""`hakvm demo` (`make demo`): build the lab, deploy the lab spec, pull the plug on a node,
show the failover. Each step is a real command a user could type; the demo strings them
together and prints the measured timeline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from hakvm.cli.common import load_spec
from hakvm.deploy import engine
from hakvm.deploy.steps import Step
from hakvm.drill import demo
from hakvm.drill.faults import LabFaults
from hakvm.drill.timeline import Timeline
from hakvm.errors import ExitCode, FailedError
from hakvm.lab import lifecycle
from hakvm.lab.state import Lab, LabStateError, lab_dir_from_env
from hakvm.remote.connection import RemoteError
from hakvm.remote.lock import node_locks
from hakvm.remote.session import Session
from hakvm.spec.models import ClusterSpec


def _placement_table(title: str, placement: dict[str, list[str]]) -> Table:
    table = Table(title=title)
    table.add_column("VM")
    table.add_column("running on")
    for vm, nodes in sorted(placement.items()):
        table.add_row(vm, ", ".join(nodes) or "(stopped)")
    return table


async def _failover(spec: ClusterSpec, spec_path: Path, console: Console) -> Timeline:
    vms = [vm.name for vm in spec.vms]
    victim = spec.nodes[1].name
    survivor_node = spec.nodes[0]
    moving = [vm.name for vm in spec.vms if vm.preferred_node == victim]
    async with Session(spec, spec_path) as session:
        survivor = await session.conn(survivor_node.name)
        console.print(_placement_table("before", await demo.placement(survivor, vms)))

        async def pull_plug() -> float | None:  # `hakvm lab kill`, as the user would type it
            return await LabFaults(lab_dir_from_env()).crash(victim)

        console.print(f"[bold]pulling the plug on {victim}[/bold] (hakvm lab kill {victim})")
        timeline = await demo.watch_failover(survivor, victim, moving, pull_plug)
        console.print(_placement_table("after failover", await demo.placement(survivor, vms)))
        console.print(f"waiting for {victim} to come back (fencing rebooted it)...")
        await demo.wait_rejoined(survivor, victim, timeline)
        await asyncio.sleep(15)  # a transition in which Pacemaker could move VMs back
        after = await demo.placement(survivor, vms)
        console.print(_placement_table(f"after {victim} returned (stickiness)", after))
        stayed = all(after.get(vm) == [survivor_node.name] for vm in moving)
        console.print(
            "VMs stayed on the survivor: [green]yes[/green]"
            if stayed
            else "[red]VMs moved back: stickiness did not hold[/red]"
        )
        return timeline


def _timeline_table(timeline: Timeline) -> Table:
    table = Table(title="failover timeline (seconds after the fault)")
    table.add_column("t (s)", justify="right")
    table.add_column("event")
    for t, mark in timeline.marks:
        table.add_row(f"{t:.1f}", mark.text)
    return table


def _lab_running() -> bool:
    """Whether the default lab runs whole (every node, BMC and the repository)."""
    try:
        return bool(lifecycle.status(Lab(lab_dir_from_env()))["healthy"])
    except (LabStateError, OSError, ValueError):
        return False  # no lab, or not ours to read (not root): `lab up` says what is wrong


async def _apply(spec: ClusterSpec, spec_path: Path, progress: engine.Progress) -> engine.RunReport:
    async with node_locks(spec, spec_path):  # a writer, as `hakvm apply` is
        return await engine.apply(spec, spec_path, progress)


def run_demo(spec: ClusterSpec, spec_path: Path) -> int:
    console = Console(highlight=False)
    t0 = time.monotonic()
    console.rule("1. the lab: two Debian 12 nodes under QEMU, bonded links, IPMI BMCs")
    if _lab_running():  # a second `make demo`: apply converges the lab's cluster
        console.print("the lab is already up: reusing it")
    else:
        up = demo.run_hakvm("lab", "up")
        if up != ExitCode.OK:  # its one line (e.g. a preflight check and its fix) is above
            console.print("[red]hakvm lab up failed[/red]")
            return up
    console.rule("2. validate and render the spec")
    if (
        demo.run_hakvm("validate", str(spec_path)) != ExitCode.OK
        or demo.run_hakvm("render", str(spec_path), "-o", "out") != ExitCode.OK
    ):
        return ExitCode.INPUT
    console.rule("3. apply: bare nodes -> fenced cluster with replicated VMs")

    def progress(phase: str, node: str, step: Step | None, event: str) -> None:
        if step is None:
            console.print(f"[bold]{phase}[/bold]: {event}")
        elif event != "start":
            console.print(f"  {node}: {step.title} ... {event}", markup=False)

    report = asyncio.run(_apply(spec, spec_path, progress))
    console.print(f"apply: {report.changes} step(s) in {report.seconds:.0f}s")
    console.rule("4. status: the cluster as hakvm sees it")
    # A plug is pulled only on a healthy cluster: on a degraded one (a node unclean, a fence
    # device failed) the failover would show the earlier fault, not hakvm's recovery.
    if demo.wait_healthy(spec_path) is None:
        demo.run_hakvm("status", str(spec_path))
        console.print(f"[red]the cluster is not healthy after {demo.HEALTHY_WAIT_S:.0f}s: "
                      "no failover on it (hakvm status above says why)[/red]")  # fmt: skip
        return ExitCode.FAILED
    demo.run_hakvm("status", str(spec_path))
    console.rule("5. failover: hard power-off of a node")
    timeline = asyncio.run(_failover(spec, spec_path, console))
    console.print(_timeline_table(timeline))
    recovery = demo.recovery_s(timeline)
    if recovery is not None:
        console.print(f"recovery time (fault to every VM running on the survivor): {recovery:.1f}s")
    console.rule("6. status after the node came back")
    # Right after the rejoin DRBD is still reconnecting (status says DEGRADED): show the
    # cluster once it is healthy again, and how long that took.
    console.print(f"waiting for {spec.nodes[1].name}'s DRBD to reconnect and resync...")
    healthy_after = demo.wait_healthy(spec_path)
    if healthy_after is None:
        console.print(f"[red]not healthy within {demo.HEALTHY_WAIT_S:.0f}s[/red]")
    else:
        console.print(f"healthy again {healthy_after:.0f}s after the node rejoined")
    demo.run_hakvm("status", str(spec_path))
    console.print(
        f"demo finished in {time.monotonic() - t0:.0f}s; the lab keeps running "
        "(hakvm lab status, hakvm lab down)"
    )
    return ExitCode.OK if healthy_after is not None else ExitCode.FAILED


@click.command("demo")
@click.argument(
    "spec", type=click.Path(path_type=Path), default=Path("examples/lab.yaml")
)
def demo_cmd(spec: Path) -> int:
    """Build the lab, deploy SPEC, pull the plug on a node and show the failover."""
    cluster = load_spec(spec)
    try:
        return run_demo(cluster, spec)
    except (engine.ApplyError, RemoteError) as exc:
        raise FailedError(f"demo failed: {exc}") from None


COMMANDS = [demo_cmd]
