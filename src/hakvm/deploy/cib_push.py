"""One CIB change, the way apply and `vm remove` make it: a `crm_diff` patch from the CIB as
read to the CIB wanted, checked by `crm_verify` and applied with one `cibadmin --patch`.

The patch is computed against the CIB as it was read, so if the cluster changed it in the
meantime the patch no longer applies and the caller re-reads and tries again: a live change
is never overwritten by a blind replace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hakvm.remote.connection import RemoteError, Result

LIVE = "/run/hakvm/cib-live.xml"
DESIRED = "/run/hakvm/cib-desired.xml"
PATCH = "/run/hakvm/cib.patch"


class CibHost(Protocol):
    """What a CIB patch needs of a node connection (NodeConnection, or a test's fake)."""

    name: str

    async def run(
        self, argv: Sequence[str], *, check: bool = ..., timeout: float = ...
    ) -> Result: ...

    async def write_file(self, path: str, content: bytes, mode: int) -> None: ...


async def patch_cib(conn: CibHost, live: str, desired: str) -> bool:
    """Move the CIB from `live` to `desired`; False if the CIB moved under us (re-read)."""
    await conn.write_file(LIVE, live.encode(), 0o600)
    await conn.write_file(DESIRED, desired.encode(), 0o600)
    await conn.run(["crm_verify", "--xml-file", DESIRED], check=True, timeout=120)
    diff = await conn.run(
        ["crm_diff", "--original", LIVE, "--new", DESIRED, "--no-version"], timeout=60
    )
    if diff.returncode not in (0, 1):
        raise RemoteError(f"{conn.name}: crm_diff failed: {diff.stderr.strip()}")
    if diff.returncode == 0:
        return True  # nothing to change
    await conn.write_file(PATCH, diff.stdout.encode(), 0o600)
    patched = await conn.run(["cibadmin", "--patch", "--xml-file", PATCH], timeout=120)
    return patched.ok
