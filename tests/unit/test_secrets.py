"""Cluster secrets (issue 16 item 4a and 4c, and item 9's node files and key files): an
unusable secret in the state directory is one line (exit 3), a placeholder or malformed
secret on a node is never adopted, no placeholder is ever written to a node, local copies
are replaced atomically and node files fsynced before their rename; plan and doctor read no
secret from the nodes (hashes computed there) and write none locally; apply reads a node's
copy only to adopt it; an unusable SSH key file is bad input in one line (exit 2)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import secrets
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncssh
import pytest

from hakvm.deploy import engine
from hakvm.deploy import phases as ph
from hakvm.deploy.secrets import (
    AUTHKEY_PATH,
    DRBD_MASTER_PATH,
    KINDS,
    ClusterSecrets,
    masked_paths,
    resolve_secrets,
    secret_paths,
    write_private,
)
from hakvm.ops import doctor as dr
from hakvm.redact import GENERATED
from hakvm.remote.connection import WRITE_SCRIPT, NodeConnection, RemoteError
from hakvm.remote.facts import (
    FileFact,
    NodeFacts,
    parse_secret_files,
    secret_files_command,
    without_secret_lines,
)
from hakvm.render import migration
from hakvm.render.base import RenderContext, Secrets
from hakvm.render.cib import password_file_path
from hakvm.render.tree import render_all
from hakvm.spec.validate import validate_file
from tests.unit.fakes import FakeNode
from tests.unit.test_plan import _spec_file, converged_facts, fresh_facts

KEY = asyncssh.generate_private_key("ssh-ed25519")
MINE = ClusterSecrets(
    authkey=secrets.token_bytes(256),
    drbd_master=secrets.token_hex(32),
    migration_key=KEY.export_private_key("openssh"),
)
PUBLIC = KEY.export_public_key("openssh").decode().strip()
NODES = ("node01", "node02")


def _hashed(path: str, fact: FileFact | None) -> FileFact | None:
    """A secret file as the node reports it (SECRET_FILES_SCRIPT): never its bytes."""
    if fact is None:
        return None
    digest = hashlib.sha256(fact.content).hexdigest()
    masked = without_secret_lines(fact.content) if path.endswith(".res") else b""
    public = PUBLIC if path == migration.KEY_PATH else ""
    hex_only = not fact.content.translate(None, b"0123456789abcdef\n")
    return FileFact(masked, fact.mode, digest, len(fact.content), public, hex_only, "root:root")


def deployed(tmp_path: Path) -> tuple[Path, dict[str, NodeFacts]]:
    """The lab spec and its two nodes as a converged apply with MINE left them, each
    secret file in the form the nodes report it."""
    spec_path = _spec_file(tmp_path, "lab")
    report = validate_file(spec_path)
    assert report.spec is not None and report.derived is not None
    ctx = RenderContext(report.spec, report.derived, Secrets(MINE.drbd_master))
    env = ph.PlanEnv(ctx, render_all(ctx), {}, MINE, spec_path.parent)
    facts = converged_facts(env)
    for node in facts.values():
        node.files[AUTHKEY_PATH] = FileFact(MINE.authkey, 0o400)
        node.files[DRBD_MASTER_PATH] = FileFact(MINE.drbd_master_file, 0o600)
        for path in [*secret_paths(report.spec), *masked_paths(report.spec)]:
            node.files[path] = _hashed(path, node.files.get(path))
    return spec_path, facts


def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HAKVM_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state" / "lab"


def _fill_state(directory: Path) -> None:
    for name, value in (("corosync.authkey", MINE.authkey), ("drbd-master",
                        MINE.drbd_master.encode()), ("migration_ed25519", MINE.migration_key)):
        write_private(directory / name, value)  # fmt: skip


def _fake_nodes(
    monkeypatch: pytest.MonkeyPatch, facts: dict[str, NodeFacts]
) -> dict[str, FakeNode]:
    """Connections to fake nodes whose facts are `facts` (as the batch would give them)."""
    nodes = {n: FakeNode(n) for n in facts}

    async def connect_all(wanted: Any, directory: Path) -> list[FakeNode]:
        return [nodes[n.name] for n in wanted]

    async def gather(
        conn: FakeNode, paths: Any, minors: Any, *secret: Any, **_: Any
    ) -> NodeFacts:
        conn.sent.append(SimpleNamespace(node=conn.name, argv=["gather", *paths], stdin=""))
        return facts[conn.name]

    monkeypatch.setattr("hakvm.remote.session.connect_all", connect_all)
    monkeypatch.setattr(engine, "gather_facts", gather)
    return nodes


def _secret_steps(report: engine.RunReport, spec_path: Path) -> list[str]:
    spec = validate_file(spec_path).spec
    assert spec is not None
    watched = [*secret_paths(spec), *masked_paths(spec), migration.AUTHORIZED_KEYS_PATH]
    return [
        f"{s.node}: {s.title}"
        for p in report.phases
        for s in p.steps
        if any(path in s.title for path in watched)
    ]


# --- 4a: the state directory ----------------------------------------------------------------

BAD = {
    "empty": b"",
    "a newline": b"\n",
    "the render placeholder": GENERATED.encode(),
    "garbage": b"garbage\n",
}


@pytest.mark.parametrize("what", sorted(BAD))
@pytest.mark.parametrize("name", [k.name for k in KINDS])
def test_an_unusable_state_dir_secret_is_one_line_exit_3(
    name: str,
    what: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The empty drbd-master of the issue (every resource then got the placeholder as its
    shared secret) and a corrupt migration key (a traceback in plan) among them."""
    from hakvm.cli import main

    directory = _state(tmp_path, monkeypatch)
    spec_path = _spec_file(tmp_path, "lab")
    _fake_nodes(monkeypatch, {n: fresh_facts(n, "debian12") for n in NODES})
    directory.mkdir(parents=True)
    (directory / name).write_bytes(BAD[what])
    capsys.readouterr()
    code = main(["plan", str(spec_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert (code, len(err)) == (3, 1), err
    assert str(directory / name) in err[0] and "remove the file" in err[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [("corosync.authkey", b"x" * 64), ("corosync.authkey", b"\0" * 256), ("drbd-master", b"ab12")],
)
def test_short_or_never_written_secrets_are_refused(
    name: str, value: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _state(tmp_path, monkeypatch)
    write_private(directory / name, value)
    with pytest.raises(Exception, match="unusable") as refused:
        asyncio.run(resolve_secrets("lab", {}, None))
    assert getattr(refused.value, "exit_code", None) == 3


def test_state_dir_copies_are_replaced_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state" / "lab" / "drbd-master"
    write_private(target, b"a" * 64)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700

    def crash(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        write_private(target, b"b" * 64)
    assert target.read_bytes() == b"a" * 64  # the old copy, never an empty one
    assert os.listdir(target.parent) == ["drbd-master"]  # no temp file left


# --- 4a: nodes ----------------------------------------------------------------------------------


def test_a_placeholder_or_malformed_node_secret_is_never_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's state: node01's master is the empty secret's "\\n" and its resources carry
    the placeholder; node02's master is garbage, by its node-side facts. Plan shows a new
    master and every resource rewritten (today's code adopted "\\n" again, so nothing)."""
    directory = _state(tmp_path, monkeypatch)
    spec_path, facts = deployed(tmp_path)
    spec = validate_file(spec_path).spec
    assert spec is not None
    broken = b"\n"
    facts["node01"].files[DRBD_MASTER_PATH] = _hashed("m", FileFact(broken, 0o600))
    for path in masked_paths(spec):
        res = (facts["node01"].files[path] or FileFact(b"", 0)).content
        placeholder = res + f'shared-secret "{GENERATED}";\n'.encode()
        facts["node01"].files[path] = _hashed(path, FileFact(placeholder, 0o600))
    facts["node02"].files[DRBD_MASTER_PATH] = _hashed("m", FileFact(b"Z" * 64, 0o600))
    _fake_nodes(monkeypatch, facts)

    report = asyncio.run(engine.plan(spec, spec_path))
    steps = _secret_steps(report, spec_path)
    for node in NODES:
        assert f"{node}: update {DRBD_MASTER_PATH}" in steps
        assert all(f"{node}: update {path}" in steps for path in masked_paths(spec))
    assert report.secrets[1].startswith("DRBD master secret (generated at apply)")
    assert not directory.exists()


def test_apply_reads_a_plausible_node_secret_and_still_refuses_garbage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Facts alone cannot tell every bad copy (hex, right size, a newline in the middle):
    apply reads it, checks it and generates a new one; node01's "\\n" is not even read."""
    directory = _state(tmp_path, monkeypatch)
    broken, garbage = b"\n", b"ab" * 16 + b"\n" + b"cd" * 16
    facts = {
        node: NodeFacts(node, files={DRBD_MASTER_PATH: _hashed("m", FileFact(value, 0o600))})
        for node, value in (("node01", broken), ("node02", garbage))
    }
    reads: list[tuple[str, str]] = []

    async def read(node: str, path: str) -> bytes:
        reads.append((node, path))
        return {"node01": broken, "node02": garbage}[node] if path == DRBD_MASTER_PATH else b""

    chosen = asyncio.run(resolve_secrets("lab", facts, read))
    assert reads == [("node02", DRBD_MASTER_PATH)]
    assert chosen.drbd_master not in ("", garbage.strip().decode())
    assert (directory / "drbd-master").read_text() == chosen.drbd_master


def test_no_placeholder_is_ever_written_to_a_node(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []

    class Ssh:
        async def run(self, command: str, **kwargs: Any) -> SimpleNamespace:
            sent.append(command)
            return SimpleNamespace(exit_status=0, stdout=b"", stderr=b"")

    conn = NodeConnection(SimpleNamespace(name="node01"), Path())  # type: ignore[arg-type]
    conn._conn = Ssh()  # type: ignore[assignment]
    res = f'resource vm-a {{ net {{ shared-secret "{GENERATED}"; }} }}\n'.encode()
    with pytest.raises(RemoteError, match=r"refusing to write /etc/drbd\.d/vm-a\.res"):
        asyncio.run(conn.write_file("/etc/drbd.d/vm-a.res", res, 0o600))
    assert sent == []
    asyncio.run(conn.write_file("/etc/drbd.d/vm-a.res", b"resource vm-a {}\n", 0o600))
    assert len(sent) == 1


def test_node_files_are_fsynced_before_their_rename(tmp_path: Path) -> None:
    """WRITE_SCRIPT run here with chown, sync and mv logging what they get (in order)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    for tool in ("chown", "sync", "mv"):
        real = "true" if tool == "chown" else f"/bin/{tool}"
        shim = bin_dir / tool
        shim.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexec {real} "$@"\n')
        shim.chmod(0o755)
    target = tmp_path / "etc" / "secret"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    argv = ["sh", "-c", WRITE_SCRIPT, "sh", str(target), "0600", "root:root"]
    subprocess.run(argv, input=b"data", env=env, check=True)
    assert target.read_bytes() == b"data" and stat.S_IMODE(target.stat().st_mode) == 0o600
    calls = log.read_text().splitlines()
    temp = calls[0].split()[-1]
    assert temp.startswith(f"{target}.hakvm.")
    assert [c.split()[0] for c in calls] == ["chown", "sync", "mv", "sync"]
    assert calls[1] == f"sync {temp}" and calls[3] == f"sync {target.parent}"
    assert os.listdir(target.parent) == ["secret"]


# --- 4c: what crosses the wire ----------------------------------------------------------------


def test_the_node_reports_a_secret_file_by_hash_never_its_bytes(tmp_path: Path) -> None:
    """SECRET_FILES_SCRIPT run here on real files: mode, size, hash, the resource file
    without its secret line, the key's public half; none of the secrets in its output."""
    authkey, key, res, missing = (tmp_path / n for n in ("authkey", "key", "vm-a.res", "none"))
    authkey.write_bytes(MINE.authkey)
    key.write_bytes(MINE.migration_key)
    secret = secrets.token_hex(24)
    res.write_text(f'resource vm-a {{\n    shared-secret "{secret}";\n    device /dev/drbd0;\n}}\n')
    for path in (authkey, key, res):
        path.chmod(0o600)
    argv = secret_files_command([str(authkey), str(key), str(missing)], [str(res)])
    out = subprocess.run(argv, capture_output=True, check=True).stdout
    assert secret.encode() not in out and MINE.authkey not in out
    assert MINE.migration_key.split(b"\n")[1] not in out
    found = parse_secret_files(out.decode())
    assert sorted(found) == sorted(str(p) for p in (authkey, key, res))
    assert found[str(authkey)].sha256 == hashlib.sha256(MINE.authkey).hexdigest()
    assert (found[str(authkey)].mode, found[str(authkey)].length) == (0o600, 256)
    assert found[str(key)].public_key.split()[:2] == PUBLIC.split()[:2]
    assert found[str(res)].content == b"resource vm-a {\n    device /dev/drbd0;\n}\n"
    assert found[str(res)].same_as(res.read_bytes())


def test_plan_reads_no_secret_from_the_nodes_and_writes_none_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plan from a machine without the state dir (another admin's laptop): every secret is
    compared by the node's hash, nothing is read back or generated, nothing written here,
    and the deployed cluster's secret files need no change."""
    directory = _state(tmp_path, monkeypatch)
    spec_path, facts = deployed(tmp_path)
    spec = validate_file(spec_path).spec
    assert spec is not None
    nodes = _fake_nodes(monkeypatch, facts)
    report = asyncio.run(engine.plan(spec, spec_path))
    assert _secret_steps(report, spec_path) == []
    assert not directory.exists()
    for node in nodes.values():
        for sent in node.sent:
            assert not set(sent.argv) & {*secret_paths(spec), *masked_paths(spec)}, sent.argv
    assert report.secrets == [
        f"{what} (node01's copy): node01 present, matches; node02 present, matches"
        for what in ("corosync authkey", "DRBD master secret", "migration SSH key")
    ]
    view = asyncio.run(dr.deployment_view(spec, spec_path))  # doctor: the same
    assert view.error is None and not directory.exists()


def test_plan_says_whether_each_nodes_copy_matches_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _state(tmp_path, monkeypatch)
    _fill_state(directory)
    spec_path, facts = deployed(tmp_path)
    spec = validate_file(spec_path).spec
    assert spec is not None
    other = FileFact(secrets.token_bytes(256), 0o400)
    facts["node02"].files[AUTHKEY_PATH] = _hashed(AUTHKEY_PATH, other)
    _fake_nodes(monkeypatch, facts)
    report = asyncio.run(engine.plan(spec, spec_path))
    assert report.secrets[0] == (
        "corosync authkey (the state dir's copy): node01 present, matches; "
        "node02 present, differs"
    )
    assert _secret_steps(report, spec_path) == [f"node02: update {AUTHKEY_PATH}"]
    assert "secrets" in report.as_dict()


def test_apply_reads_a_nodes_secret_only_to_adopt_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _state(tmp_path, monkeypatch)
    _, facts = deployed(tmp_path)
    reads: list[tuple[str, str]] = []
    on_node = {AUTHKEY_PATH: MINE.authkey, DRBD_MASTER_PATH: MINE.drbd_master_file,
               migration.KEY_PATH: MINE.migration_key}  # fmt: skip

    async def read(node: str, path: str) -> bytes:
        reads.append((node, path))
        return on_node[path]

    adopted = asyncio.run(resolve_secrets("lab", facts, read))
    assert reads == [("node01", kind.path) for kind in KINDS]
    assert (adopted.authkey, adopted.drbd_master, adopted.migration_key) == (
        MINE.authkey, MINE.drbd_master, MINE.migration_key)  # fmt: skip
    assert adopted.complete
    assert (directory / "drbd-master").read_bytes() == MINE.drbd_master.encode()
    reads.clear()
    again = asyncio.run(resolve_secrets("lab", facts, read))
    assert reads == [] and again.authkey == MINE.authkey  # the state dir matches: no read


SECRET_FILES = [AUTHKEY_PATH, DRBD_MASTER_PATH, migration.KEY_PATH, "/etc/drbd.d/vm-a.res",
                password_file_path("node02")]  # fmt: skip


@pytest.mark.parametrize("path", SECRET_FILES)
@pytest.mark.parametrize("drift", [{"mode": 0o644}, {"owner": "libvirt-qemu:root"}])
def test_a_secret_file_given_away_is_repaired(
    path: str, drift: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mode or owner that drifted: compared by hash, the file is still rewritten (0600
    or 0400, root's). Modes were repaired before hashes; owners were not compared."""
    _fill_state(_state(tmp_path, monkeypatch))
    spec_path, facts = deployed(tmp_path)
    spec = validate_file(spec_path).spec
    assert spec is not None
    drifted = facts["node01"].files[path]
    assert drifted is not None and drifted.sha256
    facts["node01"].files[path] = dataclasses.replace(drifted, **drift)
    _fake_nodes(monkeypatch, facts)
    report = asyncio.run(engine.plan(spec, spec_path))
    (step,) = [s for p in report.phases for s in p.steps if path in s.title]
    (write,) = step.actions
    assert step.node == "node01" and getattr(write, "mode", None) in (0o400, 0o600)


# --- SSH key files ------------------------------------------------------------------------------


def _bad_key(tmp_path: Path) -> dict[str, Callable[[Path], None]]:
    def passphrase(path: Path) -> None:
        path.write_bytes(KEY.export_private_key("pkcs8-pem", passphrase="pw"))

    return {
        "garbage": lambda p: p.write_bytes(b"garbage\n"),
        "empty": lambda p: p.write_bytes(b""),
        "passphrase": passphrase,
        "missing": lambda p: None,
    }


@pytest.mark.parametrize("what", ["garbage", "empty", "passphrase", "missing"])
def test_an_unusable_key_file_is_bad_input_in_one_line(
    what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before any connection (the spec points at a closed port: nothing is reached)."""
    import yaml

    from hakvm.cli import main

    spec_path = _spec_file(tmp_path, "lab")
    data = yaml.safe_load(spec_path.read_text())
    for node in data["nodes"]:
        node["ssh"].update(key_file=str(tmp_path / "id"), known_hosts=str(tmp_path / "kh"))
    spec_path.write_text(yaml.safe_dump(data))
    (tmp_path / "kh").write_text("")
    _bad_key(tmp_path)[what](tmp_path / "id")
    capsys.readouterr()
    code = main(["plan", str(spec_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert (code, len(err)) == (2, 1), err
    assert "nodes.node01.ssh.key_file" in err[0] and "Traceback" not in err[0]
