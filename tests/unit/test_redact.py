"""Secrets never leave hakvm in a text (issue 16 item 4b): the real drbdadm failure line,
ipmitool and fence agent passwords and every registered secret are redacted where errors
and a node's stderr are made, so neither the terminal, a --json report nor a log shows them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hakvm.errors import FailedError
from hakvm.redact import REDACTED, redact, remember_secret
from hakvm.remote import qnetd as qnetd_remote
from hakvm.remote.connection import NodeConnection, RemoteError, Result

REPO = Path(__file__).resolve().parents[2]


def drbdadm_failure(secret: str) -> str:
    """What drbdadm 8.4 (drbd-utils 9.22, Debian 12) prints on stderr when `drbdadm adjust`
    or `connect` fails: the kernel's answer, then the whole drbdsetup command line (its
    format is drbdadm's m_system(); the command is `drbdadm-84 -d connect vm-a`'s output
    for the lab's vm-a.res)."""
    return (
        "vm-a: Failure: (102) Local address(port) already in use.\n"
        "additional info from kernel:\nlocal address already in use\n"
        "Command 'drbdsetup-84 connect vm-a ipv4:10.88.0.1:7789 ipv4:10.88.0.2:7789 "
        f"--protocol=C --cram-hmac-alg=sha256 --shared-secret={secret} "
        "--allow-two-primaries=yes --after-sb-0pri=discard-zero-changes "
        "--after-sb-1pri=discard-secondary --after-sb-2pri=disconnect "
        "--rr-conflict=disconnect --max-buffers=8000 --max-epoch-size=8000 "
        "--verify-alg=crc32c' terminated with exit code 10\n"
    )


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("--shared-secret=s3cr3tvalue --x", "s3cr3tvalue"),
        ("--shared-secret 's3cr3tvalue'", "s3cr3tvalue"),
        ('    shared-secret "s3cr3tvalue";', "s3cr3tvalue"),
        ("ipmitool -I lanplus -H 10.0.0.9 -U fence -P s3cr3tvalue power status", "s3cr3tvalue"),
        ("ipmitool -I lanplus -H 10.0.0.9 -Ps3cr3tvalue chassis power on", "s3cr3tvalue"),
        ("fence_ipmilan --ip=10.0.0.9 --username=fence --password=s3cr3tvalue", "s3cr3tvalue"),
        ("fence_ipmilan -a 10.0.0.9 -l fence -p s3cr3tvalue -o status", "s3cr3tvalue"),
        ("action=status\npassword=s3cr3tvalue\n", "s3cr3tvalue"),
        ('<nvpair name="passwd" value="x"/> passwd=s3cr3tvalue', "s3cr3tvalue"),
    ],
)
def test_known_secret_forms_are_redacted(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert REDACTED in out
    assert redact(out) == out  # idempotent: redacting twice changes nothing more


def test_text_without_secrets_is_unchanged() -> None:
    text = "node01: ssh -p 2201 root@127.0.0.1: connection refused (password_script set)"
    assert redact(text) == text


def test_registered_secrets_are_redacted_in_every_form() -> None:
    authkey = secrets.token_bytes(256)
    password = "bmc-" + secrets.token_hex(8)
    remember_secret(authkey)
    remember_secret(password + "\n")
    for shown in (authkey.hex(), password, f"got {password!r} back"):
        assert password not in redact(shown) and authkey.hex() not in redact(shown)


def test_the_drbdadm_failure_line_is_redacted_in_the_error() -> None:
    secret = secrets.token_hex(24)
    error = FailedError(f"node01: storage: DRBD vm-a: adjust: {drbdadm_failure(secret)}")
    assert secret not in str(error)
    assert f"--shared-secret={REDACTED}" in str(error)


class FakeSsh:
    """An asyncssh connection whose every command ends with `rc` and `stderr`."""

    def __init__(self, rc: int, stderr: str) -> None:
        self.rc, self.stderr = rc, stderr

    async def run(self, command: str, **kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(exit_status=self.rc, stdout=b"", stderr=self.stderr.encode())

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None


def _nodes_fail_with(monkeypatch: pytest.MonkeyPatch, stderr: str) -> None:
    """Every NodeConnection "connects" to a node whose commands all fail with `stderr`."""

    async def connect(self: NodeConnection) -> NodeConnection:
        self._conn = FakeSsh(10, stderr)  # type: ignore[assignment]
        return self

    monkeypatch.setattr(NodeConnection, "connect", connect)
    # The node lock is tested in test_locks.py; here every command must reach the failing node.
    for module in ("deploy", "moves", "vm", "demo"):
        monkeypatch.setattr(
            f"hakvm.cli.{module}.node_locks", lambda *a, **k: contextlib.nullcontext()
        )


def test_a_nodes_stderr_is_redacted_as_it_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secrets.token_hex(24)
    _nodes_fail_with(monkeypatch, drbdadm_failure(secret))
    spec = SimpleNamespace(name="node01", ssh=None)
    conn = asyncio.run(NodeConnection(spec, REPO).connect())  # type: ignore[arg-type]
    result = asyncio.run(conn.run(["drbdadm", "adjust", "vm-a"]))
    assert secret not in result.stderr and "--shared-secret=" in result.stderr
    with pytest.raises(RemoteError) as failed:
        asyncio.run(conn.run(["drbdadm", "adjust", "vm-a"], check=True))
    assert secret not in str(failed.value)


COMMANDS = [["apply"], ["apply", "--json"], ["plan", "--json"], ["status", "--json"],
            ["doctor", "--json"]]  # fmt: skip


@pytest.mark.parametrize("argv", COMMANDS)
def test_no_secret_reaches_the_terminal_or_a_json_report(
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real drbdadm failure line from both nodes, through the real connection, engine,
    status and doctor code and the command line: stdout (the --json report) and stderr."""
    from hakvm.cli import main

    secret = secrets.token_hex(24)
    _nodes_fail_with(monkeypatch, drbdadm_failure(secret))
    monkeypatch.setenv("HAKVM_STATE_DIR", str(tmp_path / "state"))
    spec = tmp_path / "lab.yaml"
    shutil.copy(REPO / "examples" / "lab.yaml", spec)
    capsys.readouterr()
    code = main([argv[0], str(spec), *argv[1:]])
    out, err = capsys.readouterr()
    assert code != 0
    assert "--shared-secret=" in out + err  # the line itself was shown ...
    assert secret not in out + err  # ... without its secret


class _BundleNode:
    """A node whose qdevice database holds `bundle` (what `base64 -w0` prints of it)."""

    name = "node01"

    def __init__(self, bundle: bytes) -> None:
        self.bundle = bundle

    async def run(self, argv: Sequence[str], **_: object) -> Result:
        out = base64.b64encode(self.bundle).decode() if argv[0] == "base64" else ""
        return Result(tuple(argv), 0, out, "")

    async def write_file(self, path: str, data: bytes, mode: int) -> None:
        return None


def test_the_qdevice_bundle_is_a_secret_once_read() -> None:
    """The PKCS#12 bundle carries the cluster's qnetd client key under no password: from the
    moment hakvm reads it, no text it shows holds it (as read: base64; or hex)."""
    bundle = os.urandom(64)
    node = _BundleNode(bundle)
    shown = f"answer: {base64.b64encode(bundle).decode()} / {bundle.hex()}"
    assert redact(shown) == shown  # not known yet
    asyncio.run(qnetd_remote.import_signed(node, b"certificate", "lab"))
    assert redact(shown) == f"answer: {REDACTED} / {REDACTED}"
