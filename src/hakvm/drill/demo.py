"""`make demo`: build the lab, deploy the lab spec, pull the plug on a node, show the failover.

Each step is a real command a user could type; the demo only strings them together and
prints the measured timeline.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hakvm.deploy.engine import apply
from hakvm.drill.failover import cluster_state, watch_failover
from hakvm.drill.timeline import Event, Running, Timeline
from hakvm.remote.connection import NodeConnection, RemoteError
from hakvm.remote.session import Session
from hakvm.spec.models import ClusterSpec


def hakvm_cli(*args: str, quiet: bool = False) -> int:
    """Run a hakvm subcommand as its own process (what the user would type)."""
    argv = [sys.executable, "-m", "hakvm.cli", *args]
    return subprocess.run(argv, capture_output=quiet, check=False).returncode


HEALTHY_WAIT_S = 600.0


def _wait_healthy(spec_path: Path, timeout: float) -> float | None:
    """Seconds until `hakvm status` exits 0 (healthy), or None after timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if hakvm_cli("status", str(spec_path), quiet=True) == 0:
            return time.monotonic() - started
        time.sleep(10)
    return None


def _placement_table(title: str, placement: dict[str, list[str]]) -> Table:
    table = Table(title=title)
    table.add_column("VM")
    table.add_column("running on")
    for vm, nodes in sorted(placement.items()):
        table.add_row(vm, ", ".join(nodes) or "(stopped)")
    return table


async def _placement(conn: NodeConnection, vms: list[str]) -> dict[str, list[str]]:
    state = await cluster_state(conn)
    if state is None:
        return {vm: [] for vm in vms}
    return {vm: state.active_on(vm) for vm in vms}


async def _failover(spec: ClusterSpec, spec_path: Path, console: Console) -> Timeline:
    vms = [vm.name for vm in spec.vms]
    victim = spec.nodes[1].name
    survivor_node = spec.nodes[0]
    moving = [vm.name for vm in spec.vms if vm.preferred_node == victim]
    async with Session(spec, spec_path) as session:
        survivor = await session.conn(survivor_node.name)
        console.print(_placement_table("before", await _placement(survivor, vms)))

        async def pull_plug() -> None:
            if await asyncio.to_thread(hakvm_cli, "lab", "kill", victim) != 0:
                raise RemoteError(f"hakvm lab kill {victim} failed")

        console.print(f"[bold]pulling the plug on {victim}[/bold] (hakvm lab kill {victim})")
        timeline = await watch_failover(survivor, victim, moving, pull_plug)
        console.print(_placement_table("after failover", await _placement(survivor, vms)))
        console.print(f"waiting for {victim} to come back (fencing rebooted it)...")
        started = time.monotonic()
        while time.monotonic() - started < 600:
            state = await cluster_state(survivor)
            if state and victim in state.nodes and state.nodes[victim].online:
                break
            await asyncio.sleep(3)
        else:
            raise RemoteError(f"{victim} did not rejoin within 600s")
        rejoined = time.monotonic() - started + timeline.marks[-1][0]
        timeline.mark(rejoined, Event(f"{victim} rejoined"))
        await asyncio.sleep(15)  # a transition in which Pacemaker could move VMs back
        after = await _placement(survivor, vms)
        console.print(_placement_table(f"after {victim} returned (stickiness)", after))
        stayed = all(after.get(vm) == [survivor_node.name] for vm in moving)
        console.print(
            "VMs stayed on the survivor: [green]yes[/green]"
            if stayed
            else "[red]VMs moved back: stickiness did not hold[/red]"
        )
        return timeline


def run_demo(spec: ClusterSpec, spec_path: Path) -> int:
    console = Console(highlight=False)
    t0 = time.monotonic()
    console.rule("1. the lab: two Debian 12 nodes under QEMU, bonded links, IPMI BMCs")
    up = hakvm_cli("lab", "up")
    if up == 3:  # already running (a second `make demo`): reuse it, apply converges it
        console.print("the lab is already up: reusing it")
    elif up != 0:
        console.print("[red]hakvm lab up failed[/red]")
        return 1
    console.rule("2. validate and render the spec")
    if (
        hakvm_cli("validate", str(spec_path)) != 0
        or hakvm_cli("render", str(spec_path), "-o", "out") != 0
    ):
        return 2
    console.rule("3. apply: bare nodes -> fenced cluster with replicated VMs")

    def progress(phase: str, node: str, step: object, event: str) -> None:
        if step is None:
            console.print(f"[bold]{phase}[/bold]: {event}")
        elif event != "start":
            console.print(f"  {node}: {getattr(step, 'title', '')} ... {event}", markup=False)

    report = asyncio.run(apply(spec, spec_path, progress))
    console.print(f"apply: {report.changes} step(s) in {report.seconds:.0f}s")
    console.rule("4. status: the cluster as hakvm sees it")
    hakvm_cli("status", str(spec_path))
    console.rule("5. failover: hard power-off of a node")
    timeline = asyncio.run(_failover(spec, spec_path, console))
    table = Table(title="failover timeline (seconds after the fault)")
    table.add_column("t (s)", justify="right")
    table.add_column("event")
    for t, what in timeline.marks:
        table.add_row(f"{t:.1f}", what.text)
    console.print(table)
    running = [t for t, w in timeline.marks if isinstance(w, Running)]
    if running:
        console.print(
            f"recovery time (fault to every VM running on the survivor): {max(running):.1f}s"
        )
    console.rule("6. status after the node came back")
    # Right after the rejoin DRBD is still reconnecting (status says DEGRADED): show the
    # cluster once it is healthy again, and how long that took.
    console.print(f"waiting for {spec.nodes[1].name}'s DRBD to reconnect and resync...")
    healthy_after = _wait_healthy(spec_path, HEALTHY_WAIT_S)
    if healthy_after is None:
        console.print(f"[red]not healthy within {HEALTHY_WAIT_S:.0f}s[/red]")
    else:
        console.print(f"healthy again {healthy_after:.0f}s after the node rejoined")
    hakvm_cli("status", str(spec_path))
    console.print(
        f"demo finished in {time.monotonic() - t0:.0f}s; the lab keeps running "
        "(hakvm lab status, hakvm lab down)"
    )
    return 0 if healthy_after is not None else 1
