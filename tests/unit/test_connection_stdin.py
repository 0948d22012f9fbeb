"""NodeConnection.run against a real SSH server (asyncssh's, on 127.0.0.1): what a command
reads on stdin is what the caller passed, str or bytes. A str once raised TypeError inside
asyncssh (output is read as bytes, encoding=None) and broke `hakvm drill --heal`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from hakvm.remote.connection import NodeConnection
from hakvm.spec.models import SshTarget


@dataclass(frozen=True)
class _Node:
    name: str
    ssh: SshTarget


async def _echo_stdin(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """A node whose commands print what they read on stdin (`true` reads none, as the real
    one), then their command line."""
    data = b"" if process.command == "true" else await process.stdin.read()
    process.stdout.write(data + b"|" + (process.command or "").encode())
    process.exit(0)


@contextlib.asynccontextmanager
async def _connected(tmp_path: Path) -> AsyncIterator[NodeConnection]:
    """A NodeConnection to an echoing SSH server, host key pinned as in a spec."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key.write_private_key(str(tmp_path / "id"))
    (tmp_path / "id").chmod(0o600)
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[host_key], authorized_client_keys=authorized,
        process_factory=_echo_stdin, encoding=None,
    )  # fmt: skip
    port = server.sockets[0].getsockname()[1]
    known = host_key.export_public_key().decode().strip()
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {known}\n")
    target = SshTarget(
        host="127.0.0.1", port=port, key_file=Path("id"), known_hosts=Path("known_hosts")
    )
    try:
        async with NodeConnection(_Node("node01", target), tmp_path) as conn:
            yield conn
    finally:
        server.close()
        await server.wait_closed()


def test_run_passes_str_and_bytes_stdin(tmp_path: Path) -> None:
    async def go() -> tuple[str, str]:
        async with _connected(tmp_path) as conn:
            text = await conn.run(["nft", "-f", "-"], stdin="delete table inet t\n", check=True)
            raw = await conn.run(["cat"], stdin=b"\x00\xffbytes", check=True)
            return text.stdout, raw.stdout

    text, raw = asyncio.run(go())
    assert text == "delete table inet t\n|nft -f -"
    assert raw.startswith("\x00") and raw.endswith("bytes|cat")


@pytest.mark.parametrize("stdin", [None, ""])
def test_run_without_input(tmp_path: Path, stdin: str | None) -> None:
    async def go() -> str:
        async with _connected(tmp_path) as conn:
            return (await conn.run(["true"], stdin=stdin)).stdout

    assert asyncio.run(go()) == "|true"


def test_a_failed_command_names_the_reason_a_wrapper_line_hides() -> None:
    """drbdadm's last line only says drbdsetup failed; the kernel's reason is the line above."""
    from hakvm.remote.connection import Result, command_failed

    err = (
        "0: Failure: (119) No valid meta-data signature found.\n\n"
        "\t==> Use 'drbdadm create-md res' to initialize meta-data area. <==\n\n"
        "Command 'drbdsetup-84 attach 0 /dev/hakvm/vm-a /dev/hakvm/vm-a internal' terminated "
        "with exit code 10\n"
    )
    failed = Result(("drbdadm",), 10, "", err)
    message = str(command_failed("node02", "drbdadm attach vm-a", failed))
    assert message == (
        "node02: drbdadm attach vm-a failed: 0: Failure: (119) No valid meta-data signature "
        "found.; Command 'drbdsetup-84 attach 0 /dev/hakvm/vm-a /dev/hakvm/vm-a internal' "
        "terminated with exit code 10"
    )
    plain = command_failed("node01", "false", Result(("false",), 1, "", ""))
    assert str(plain) == "node01: false failed: exit 1"
