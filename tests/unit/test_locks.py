"""No two hakvm runs at once (issue 16 item 6): the races reproduced deterministically, the
local locks, the node lock (the real lock script run here, and the shared fake node), which
commands lock, and the per-run scratch directory and rollback unit."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
import yaml

from hakvm import locks
from hakvm.deploy import actions
from hakvm.deploy import secrets as cluster_secrets
from hakvm.errors import ExitCode
from hakvm.locks import BusyError, local_lock
from hakvm.remote import lock as node_lock
from hakvm.remote import pacemaker
from hakvm.remote.connection import StreamResult
from hakvm.spec import edit
from hakvm.spec.models import OsFamily
from tests.unit import test_exit_codes
from tests.unit.fakes import FakeNode, FakeNodes

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = REPO / "examples" / "lab.yaml"
VM = {"name": "vm-c", "vcpus": 1, "memory": "64MiB", "disk": {"size": "1GiB"}}


def _in_threads(*work: Callable[[], object]) -> list[object]:
    """Run each callable in its own thread at once; their results (or exceptions)."""
    results: list[object] = [None] * len(work)

    def run(i: int) -> None:
        try:
            results[i] = work[i]()
        except Exception as exc:  # the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _rendezvous(parties: int, timeout: float = 1.0) -> Callable[[], None]:
    """Each caller waits (at most `timeout`) until all `parties` have called: the moment a
    race needs. Under a lock only one gets there; it goes on after the timeout."""
    barrier = threading.Barrier(parties, timeout=timeout)

    def meet() -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()

    return meet


# --- the spec file: two `vm add` at once ----------------------------------------------------


@pytest.fixture
def spec_path(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "lab.yaml"
    shutil.copy(LAB, path)
    return path


def test_two_vm_adds_at_once_keep_both_vms(
    spec_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both edits read the file, then both write: without the spec lock the second write
    drops the first VM (both 'succeed'); with it the second reads after the first wrote."""
    meet = _rendezvous(2)
    load = edit.load_spec_file

    def read_then_meet(path: pathlib.Path) -> Any:
        loaded = load(path)
        meet()  # both have read the file: now both write
        return loaded

    monkeypatch.setattr(edit, "load_spec_file", read_then_meet)
    results = _in_threads(
        lambda: edit.add_to_spec(spec_path, VM),
        lambda: edit.add_to_spec(spec_path, {**VM, "name": "vm-d"}),
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    names = [vm["name"] for vm in yaml.safe_load(spec_path.read_text())["vms"]]
    assert names[:2] == ["vm-a", "vm-b"] and sorted(names[2:]) == ["vm-c", "vm-d"]
    assert sorted(p.name for p in spec_path.parent.iterdir()) == ["lab.yaml"]  # no lock file


def test_a_held_spec_lock_names_its_holder(
    spec_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["hakvm", "vm", "add", str(spec_path), "vm-c"])
    held = r"the spec file is locked by another hakvm run: hakvm vm add .* \(pid "
    with (
        local_lock(locks.spec_lock_path(spec_path), "the spec file"),
        pytest.raises(BusyError, match=held),
        local_lock(locks.spec_lock_path(spec_path), "the spec file", wait=0.1),
    ):
        pass
    assert BusyError.exit_code == ExitCode.STATE


# --- the state directory: two first applies at once -----------------------------------------


def test_two_first_applies_at_once_generate_one_set_of_secrets(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both find no secret, then both generate one: without the state-dir lock each run
    keeps its own authkey (and the nodes get two); with it the second adopts the first's."""
    monkeypatch.setenv("HAKVM_STATE_DIR", str(tmp_path))
    meet = _rendezvous(2)
    token_bytes = cluster_secrets.secrets.token_bytes

    def generate_then_meet(n: int) -> bytes:
        value = token_bytes(n)
        meet()  # both decided there was no secret and made one
        return value

    monkeypatch.setattr(cluster_secrets.secrets, "token_bytes", generate_then_meet)
    async def never_read(node: str, path: str) -> bytes:
        raise AssertionError("no node has a copy to read")

    def first_apply() -> cluster_secrets.ClusterSecrets:
        return asyncio.run(cluster_secrets.resolve_secrets("lab", {}, never_read))

    first, second = _in_threads(first_apply, first_apply)
    assert isinstance(first, cluster_secrets.ClusterSecrets), first
    assert isinstance(second, cluster_secrets.ClusterSecrets), second
    # Compared by digest: a failing test prints no key material.
    assert _digests(first) == _digests(second)
    assert _digest((tmp_path / "lab" / "corosync.authkey").read_bytes()) == _digest(first.authkey)
    assert not (tmp_path / "lab" / ".lock").exists()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _digests(found: cluster_secrets.ClusterSecrets) -> tuple[str, str, str]:
    return _digest(found.authkey), _digest(found.drbd_master.encode()), _digest(found.migration_key)


def test_a_local_lock_dies_with_its_holder(tmp_path: pathlib.Path) -> None:
    """The kernel drops a flock when the process ends, however it ends (kill -9 here)."""
    path = tmp_path / "state.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom hakvm.locks import local_lock\n"
         f"with local_lock(__import__('pathlib').Path({str(path)!r}), 'x'):\n"
         "    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        busy = pytest.raises(BusyError, match=rf"\(pid {holder.pid} on ")
        with busy, local_lock(path, "x", wait=0.1):
            pass
        holder.kill()
        holder.wait(10)
        with local_lock(path, "x", wait=5):
            pass
    finally:
        holder.kill()
        holder.wait(10)


# --- the node lock: the real script, run on this machine ------------------------------------


class LocalNode:
    """A node that is this machine: `stream` runs the argv here, and a stop sends SIGTERM,
    as hakvm's stop of a streamed command does over SSH."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    async def stream(
        self,
        argv: Sequence[str],
        on_line: Callable[[str], None],
        *,
        timeout: float,
        stop: asyncio.Event | None = None,
        env: Mapping[str, str] | None = None,
    ) -> StreamResult:
        # Each node's lock directory of its own, as each node has its own /run/hakvm.
        local = [*argv[:4], f"{argv[4]}/{self.name}", *argv[5:]]
        proc = await asyncio.create_subprocess_exec(
            *local, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None

        async def read() -> None:
            assert proc.stdout is not None
            async for line in proc.stdout:
                on_line(line.decode().rstrip("\n"))

        reader = asyncio.create_task(read())
        stopper = asyncio.create_task((stop or asyncio.Event()).wait())
        await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopped = stopper.done()
        if stopped and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        stopper.cancel()
        await reader
        await proc.wait()
        ended = "stopped" if stopped else "exit"
        return StreamResult(tuple(argv), 0, proc.returncode, ended)

    async def close(self) -> None:
        self.closed = True


def _locks(directory: pathlib.Path, wait: float = 0.0) -> node_lock.NodeLocks:
    async def connect(name: str) -> LocalNode:
        return LocalNode(name)

    return node_lock.NodeLocks(["node01", "node02"], connect, wait=wait, directory=str(directory))


def test_a_second_writer_is_refused_naming_the_first(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["hakvm", "apply", "lab.yaml"])

    async def scenario() -> str:
        async with _locks(tmp_path):
            with pytest.raises(BusyError) as refused:
                async with _locks(tmp_path):
                    raise AssertionError("two runs held the node lock at once")
        async with _locks(tmp_path):  # released when the first run ended
            pass
        return str(refused.value)

    message = asyncio.run(scenario())
    assert message.startswith("node01: another hakvm run holds this node: hakvm apply lab.yaml")
    assert f"(pid {os.getpid()} on " in message and "--wait SECONDS" in message


def test_a_second_writer_with_wait_gets_the_lock_when_the_first_ends(
    tmp_path: pathlib.Path,
) -> None:
    order: list[str] = []

    async def first() -> None:
        async with _locks(tmp_path):
            order.append("first has it")
            await asyncio.sleep(0.5)
            order.append("first done")

    async def second() -> None:
        await asyncio.sleep(0.1)
        async with _locks(tmp_path, wait=10):
            order.append("second has it")

    async def both() -> None:
        await asyncio.gather(first(), second())

    asyncio.run(both())
    assert order == ["first has it", "first done", "second has it"]


def _script(directory: pathlib.Path, holder: str, wait: str = "0") -> list[str]:
    return node_lock.lock_argv(str(directory), float(wait), holder)


def test_the_node_lock_goes_when_its_client_dies(tmp_path: pathlib.Path) -> None:
    """The client's death closes the channel: sshd closes the shell's stdin, `cat` ends and
    so does the shell. Its SIGTERM (hakvm's own release) frees the lock at once, even with
    `cat` still running: the lock is the shell's alone."""
    for how in ("stdin closed", "SIGTERM"):
        held = subprocess.Popen(
            _script(tmp_path, "first"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert held.stdout is not None and held.stdout.readline() == "locked\n"
            second = subprocess.run(
                _script(tmp_path, "second"), stdin=subprocess.DEVNULL, capture_output=True,
                text=True, check=False,
            )  # fmt: skip
            assert (second.returncode, second.stdout) == (3, "busy first\n")
            if how == "SIGTERM":
                held.send_signal(signal.SIGTERM)
            else:
                assert held.stdin is not None
                held.stdin.close()
            held.wait(10)
            third = subprocess.run(
                _script(tmp_path, "third", wait="5"), stdin=subprocess.DEVNULL,
                capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip
            assert (third.returncode, third.stdout) == (0, "locked\n"), how
        finally:
            if held.stdin is not None and not held.stdin.closed:
                held.stdin.close()
            held.kill()
            held.wait(10)


# --- the node lock with the shared fake node -------------------------------------------------


def _fake_locks(nodes: FakeNodes, wait: float = 0.0) -> node_lock.NodeLocks:
    async def connect(name: str) -> FakeNode:
        return nodes[name]

    return node_lock.NodeLocks(["node01", "node02"], connect, wait=wait)


def test_both_nodes_locked_in_order_for_the_run_and_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "argv", ["hakvm", "drain", "lab.yaml", "node02"])
    nodes = FakeNodes()
    for node in nodes.nodes.values():
        node.stream_lines, node.stream_hold = ["locked"], True

    async def run() -> list[bool]:
        async with _fake_locks(nodes, wait=2.5) as held:
            during = [node.closed for node in nodes.nodes.values()]
            assert len(held.held) == 2
        return during

    assert asyncio.run(run()) == [False, False]
    assert all(node.closed for node in nodes.nodes.values())  # each channel's connection
    (first, second) = [tuple(s.argv) for s in nodes.sent]
    assert first[:4] == ("sh", "-c", node_lock.LOCK_SCRIPT, "hakvm-lock")
    assert first[4:6] == ("/run/hakvm", "2.500")
    assert first[6].startswith("hakvm drain lab.yaml node02 (pid ")
    assert [s.node for s in nodes.sent] == ["node01", "node02"]
    assert second[5] <= "2.500"  # what is left of the wait


def test_a_busy_node_is_exit_3_naming_the_holder_and_frees_what_was_taken() -> None:
    nodes = FakeNodes()
    nodes["node01"].stream_lines, nodes["node01"].stream_hold = ["locked"], True
    holder = "hakvm apply /srv/lab.yaml (pid 4242 on admin1, since 2026-01-05T10:00:00Z)"
    nodes["node02"].stream_lines = [f"busy {holder}"]

    async def run() -> None:
        async with _fake_locks(nodes):
            raise AssertionError("must not get here")

    with pytest.raises(BusyError) as refused:
        asyncio.run(run())
    assert str(refused.value) == (
        f"node02: another hakvm run holds this node: {holder}; wait for it to finish, or "
        "give --wait SECONDS"
    )
    assert nodes["node01"].closed  # node01's lock released again


# --- which commands lock --------------------------------------------------------------------

WRITERS = [
    ["apply", "{spec}"],
    ["apply", "{spec}", "--stop-after", "packages"],
    ["vm", "add", "{spec}", "vm-c", "--memory", "64MiB", "--disk", "1GiB"],
    ["vm", "remove", "{spec}", "vm-a"],
    ["migrate", "{spec}", "vm-a"],
    ["drain", "{spec}", "node02"],
    ["undrain", "{spec}", "node02"],
    ["drill", "{spec}", "--scenario", "node-crash", "--inject", "nodes", "--yes-really",
     "--witness-vm", "vm-a", "--lab-dir", "{tmp}"],
    ["drill", "{spec}", "--heal", "--lab-dir", "{tmp}"],
]  # fmt: skip
READERS = [["plan", "{spec}"], ["status", "{spec}"], ["doctor", "{spec}"], ["vm", "list", "{spec}"]]


unreachable = test_exit_codes.unreachable  # the fixture: the lab spec where nothing listens


@pytest.fixture
def held_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every node lock is held by another run (before any connection is made)."""

    async def busy(self: node_lock.NodeLocks) -> node_lock.NodeLocks:
        raise BusyError("node01: another hakvm run holds this node: LOCK-HOLDER")

    monkeypatch.setattr(node_lock.NodeLocks, "__aenter__", busy)


@pytest.mark.parametrize(
    ("argv", "writes"),
    [(a, True) for a in WRITERS] + [(a, False) for a in READERS],
    ids=lambda a: " ".join(a[:3]) if isinstance(a, list) else ("writer" if a else "reader"),
)
def test_writers_take_the_node_lock_first_and_readers_never(
    argv: list[str],
    writes: bool,
    held_elsewhere: None,
    unreachable: pathlib.Path,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hakvm.cli import main

    capsys.readouterr()
    code = main([a.replace("{spec}", str(unreachable)).replace("{tmp}", str(tmp_path))
                 for a in argv])  # fmt: skip
    err = capsys.readouterr().err
    if writes:
        assert code == ExitCode.STATE, err
        last = err.splitlines()[-1]
        assert last == "hakvm: node01: another hakvm run holds this node: LOCK-HOLDER"
        assert "vm-c" not in unreachable.read_text()  # vm add: refused before the spec changed
    else:
        # The nodes do not answer (vm list then shows unknown states, exit 0): that is all.
        assert code in (0, 3) and "LOCK-HOLDER" not in err, err


# --- per-run scratch directory and rollback unit -----------------------------------------------


def test_each_run_has_its_own_id() -> None:
    code = "from hakvm.locks import RUN_ID; print(RUN_ID)"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    ids = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       check=True).stdout.strip()
        for _ in range(2)
    }  # fmt: skip
    assert len(ids) == 2 and locks.RUN_ID not in ids


def test_a_cib_patch_is_staged_in_this_runs_directory_and_removed() -> None:
    node = FakeNode().on("crm_diff", rc=1, out="<diff/>")
    assert asyncio.run(pacemaker.patch_cib(node, "<cib live/>", "<cib desired/>"))
    scratch = f"/run/hakvm/{locks.RUN_ID}"
    assert set(node.files) == {f"{scratch}/{n}" for n in ("cib-live.xml", "cib-desired.xml",
                                                           "cib.patch")}  # fmt: skip
    assert node.argvs[-1] == ("rm", "-rf", "--", scratch)
    failing = FakeNode().on("crm_verify", rc=1, err="invalid")
    with pytest.raises(Exception, match="crm_verify"):
        asyncio.run(pacemaker.patch_cib(failing, "<cib/>", "<cib/>"))
    assert failing.argvs[-1] == ("rm", "-rf", "--", scratch)  # removed on failure too


def test_the_network_rollback_is_this_runs_own_unit() -> None:
    nodes = FakeNodes()
    node = nodes["node01"]
    asyncio.run(actions.activate_network(node, ["br0"], OsFamily.DEBIAN12,
                                         lambda: nodes.probe("node01")))  # fmt: skip
    unit = f"hakvm-net-rollback-{locks.RUN_ID}"
    units = {a for argv in node.argvs for a in argv if "rollback" in a and "/" not in a}
    # Armed and cancelled by its own name; no other run's timer is stopped or reset.
    assert units == {f"--unit={unit}", f"{unit}.timer"}
    assert ("systemctl", "stop", f"{unit}.timer") in node.argvs
