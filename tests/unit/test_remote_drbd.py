"""The DRBD questions the node adapter asks (remote/drbd.py), against the shared fake node."""

from __future__ import annotations

import asyncio

import pytest

from hakvm.remote import drbd
from hakvm.remote.connection import RemoteError
from tests.unit.fakes import FakeNode


@pytest.mark.parametrize(("dstate", "ok"), [("Unconfigured", True), ("UpToDate", False)])
def test_drbd_down_accepts_only_a_resource_already_down(dstate: str, ok: bool) -> None:
    node = FakeNode("node01").on("drbdadm", out=dstate + "\n")
    node.on("drbdadm", "down", rc=10, err="State change failed: Device is held open")
    if ok:
        asyncio.run(drbd.down(node, "vm-a"))
    else:
        with pytest.raises(RemoteError, match="held open"):
            asyncio.run(drbd.down(node, "vm-a"))
