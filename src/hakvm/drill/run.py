"""`hakvm drill`: run the scenarios asked for, one after the other, each from a cluster
that is healthy and idle."""

from __future__ import annotations

import contextlib
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from hakvm.drill.faults import LabFaults, faults_for, heal_faults, lab_of
from hakvm.drill.harness import Cluster, DrillError, DrillResult, Say
from hakvm.drill.scenarios import DRILLS
from hakvm.ops import drills
from hakvm.spec.models import ClusterSpec


async def run_drills(
    spec: ClusterSpec,
    spec_path: Path,
    scenarios: list[str],
    *,
    lab_dir: Path,
    bound: float,
    say: Say,
    inject: str = "auto",
    yes_really: bool = False,
    witness_vm: str | None = None,
    victim: str | None = None,
    lock: AbstractAsyncContextManager[object] | None = None,
) -> list[DrillResult]:
    """`lock` (the node lock) is held from the first node contact to the end."""
    if victim is not None and victim not in {n.name for n in spec.nodes}:
        raise DrillError(f"drill: --victim {victim}: no such node in the spec")
    cluster = Cluster(spec, spec_path, witness_vm, victim)
    faults = faults_for(spec, cluster, lab_dir, inject=inject, yes_really=yes_really)
    if faults.kind == "nodes" and witness_vm is None and not isinstance(
        lab_of(spec, lab_dir), LabFaults
    ):
        raise DrillError(
            "drill: on real nodes name the VM whose disk the witness may overwrite (its last "
            "16 MiB): --witness-vm NAME"
        )
    if witness_vm is not None and witness_vm not in {vm.name for vm in spec.vms}:
        raise DrillError(f"drill: --witness-vm {witness_vm}: no such VM in the spec")
    results: list[DrillResult] = []
    async with lock or contextlib.nullcontext():
        try:
            for name in scenarios:
                # Healthy and idle: a VM still moving after the previous drill would be read
                # as this drill's doing (or hide it).
                say("waiting for the cluster to be healthy and idle before the drill")
                if await cluster.wait_settled(900, say) < 0:
                    raise DrillError(
                        f"drill {name}: cluster not healthy and idle: "
                        f"{'; '.join(cluster.problems[:3])}"
                    )
                say(f"drill {name}")
                try:
                    started = time.time()
                    results.append(await DRILLS[name](cluster, faults, bound, say))
                    keep(spec.cluster.name, results[-1], started, say)
                    # Final now: what each node's agent exports as its last drill.
                    for node in await cluster.record(results[-1]):
                        say(f"{node} did not take the drill's result ({name}); its metrics miss it")
                finally:
                    # However the drill ended (an invariant failed, a node stopped answering,
                    # Ctrl-C): no cut, partition or blocked BMC stays behind.
                    await heal_faults(faults, say)
        finally:
            await cluster.close()
    return results


def keep(cluster: str, result: DrillResult, started: float, say: Say) -> None:
    """The result, kept for `hakvm serve`'s timeline (ops/drills.py); not keeping it does
    not fail the drill."""
    try:
        drills.record(cluster, result.as_dict(), started, time.time())
    except (OSError, ValueError) as exc:
        say(f"drill {result.scenario}: result not kept: {exc}")
