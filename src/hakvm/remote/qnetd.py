"""The quorum device's certificates, made as crmsh makes them (crmsh/qdevice.py, 4.4.1), without
pcsd: the qnetd host's CA signs one client certificate per cluster (CN = the corosync
cluster_name, which qnetd checks), and every node holds it with its key in its qdevice NSS
database, beside the CA it trusts.

The qnetd host is a third machine: reached over SSH as root (a standard qnetd host, its
database where `corosync-qnetd-certutil` keeps it), or, in the lab, this very machine, where
the database belongs to the unprivileged user qnetd runs as and is worked on with plain NSS
`certutil` as that user (the wrapper script has /etc hard-coded). The nodes always use
`corosync-qdevice-net-certutil` (their paths are the standard ones). Certificates and keys
travel through hakvm's memory (base64 on the wire), never through argv or a log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import pwd
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hakvm.redact import remember_secret
from hakvm.remote.connection import Remote, RemoteError, Result, command_failed
from hakvm.remote.quorum import CA_NICKNAME, NODE_DB, NODE_DIR, pem_body

QNETD_DB = "/etc/corosync/qnetd/nssdb"  # corosync-qnetd-certutil's fixed database
CA_FILE = "qnetd-cacert.crt"  # the CA as qnetd-certutil exports it: a text dump, then PEM
CRT_VALIDITY_MONTHS = "1200"  # as corosync-qnetd-certutil signs

# Signing without the wrapper (its steps, on a database given as $1): the next serial number
# from serial.txt, as the wrapper keeps it, then certutil -C with the CA. The request comes
# on stdin; the certificate is left as cluster-NAME.crt (binary DER) beside it.
SIGN_SCRIPT = (
    "set -eu; db=$1; name=$2; crq=$db/qdevice-net-node.crq.$name; umask 077; "
    'cat > "$crq"; serial=$(cat "$db/serial.txt" 2>/dev/null || echo 100); '
    'serial=$((serial + 1)); echo "$serial" > "$db/serial.txt"; '
    f'certutil -C -v {CRT_VALIDITY_MONTHS} -m "$serial" -i "$crq" -o "$db/cluster-$name.crt" '
    f'-c "{CA_NICKNAME}" -d "$db" -f "$db/pwdfile.txt"'
)


@dataclass(frozen=True)
class QnetdCa:
    """Where the qnetd host keeps its CA; `wrapper`: a standard host, whose
    corosync-qnetd-certutil creates and uses it (else plain certutil, the lab)."""

    nss_db: str
    wrapper: bool

    @property
    def ca_file(self) -> str:
        return f"{self.nss_db}/{CA_FILE}"

    def cert_file(self, cluster: str) -> str:
        return f"{self.nss_db}/cluster-{cluster}.crt"


STANDARD = QnetdCa(QNETD_DB, wrapper=True)


async def _read_bytes(host: Remote, path: str) -> bytes:
    out = await host.run(["base64", "-w0", path], check=True)
    try:
        return base64.b64decode(out.stdout.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise RemoteError(f"{host.name}: {path}: unreadable answer") from None


# --- the qnetd host --------------------------------------------------------------------------


async def read_ca(qnetd: Remote, ca: QnetdCa) -> str | None:
    """The CA file's text (None: the qnetd host has no CA yet)."""
    found = await qnetd.run(["cat", ca.ca_file])
    return found.stdout if found.ok and pem_body(found.stdout) else None


async def ensure_ca(qnetd: Remote, ca: QnetdCa) -> str:
    """The CA file's text; a standard qnetd host without one gets it now
    (`corosync-qnetd-certutil -i`: Debian's package does that at install already)."""
    text = await read_ca(qnetd, ca)
    if text is not None:
        return text
    if not ca.wrapper:
        raise RemoteError(
            f"{qnetd.name}: no qnetd CA in {ca.nss_db} (the lab's is made by `hakvm lab up`)"
        )
    await qnetd.run(["corosync-qnetd-certutil", "-i"], check=True, timeout=120)
    text = await read_ca(qnetd, ca)
    if text is None:
        raise RemoteError(f"{qnetd.name}: corosync-qnetd-certutil -i made no {ca.ca_file}")
    return text


async def sign(qnetd: Remote, ca: QnetdCa, request: bytes, cluster: str) -> bytes:
    """The cluster certificate (DER) the qnetd CA signs for `request` (CN=`cluster`)."""
    if ca.wrapper:
        crq = f"{ca.nss_db}/qdevice-net-node.crq.{cluster}"  # where crmsh puts it
        await qnetd.write_file(crq, request, 0o600)
        sign_argv = ["corosync-qnetd-certutil", "-s", "-c", crq, "-n", cluster]
        await qnetd.run(sign_argv, check=True, timeout=120)
    else:
        script = ["sh", "-c", SIGN_SCRIPT, "sh", ca.nss_db, cluster]
        await qnetd.run(script, stdin=request, check=True, timeout=120)
    return await _read_bytes(qnetd, ca.cert_file(cluster))


# --- the nodes (corosync-qdevice-net-certutil) -------------------------------------------------

NODE_CA = f"{NODE_DIR}/{CA_FILE}"
NODE_CRQ = f"{NODE_DB}/qdevice-net-node.crq"
NODE_P12 = f"{NODE_DB}/qdevice-net-node.p12"


async def init_node(node: Remote, ca_text: str) -> None:
    """A fresh qdevice database on `node` trusting the qnetd CA (an old one is removed first,
    as crmsh does: certutil refuses to initialise over one)."""
    await node.run(["rm", "-rf", NODE_DB], check=True)
    await node.write_file(NODE_CA, ca_text.encode(), 0o644)
    await node.run(["corosync-qdevice-net-certutil", "-i", "-c", NODE_CA], check=True)


async def request(node: Remote, cluster: str) -> bytes:
    """A certificate request for CN=`cluster`, its key kept in `node`'s database."""
    await node.run(["corosync-qdevice-net-certutil", "-r", "-n", cluster], check=True)
    return await _read_bytes(node, NODE_CRQ)


async def import_signed(node: Remote, certificate: bytes, cluster: str) -> bytes:
    """Import the signed certificate where its request was made; returns it with its key as
    PKCS#12 (the bundle the other node imports)."""
    path = f"{NODE_DB}/cluster-{cluster}.crt"
    await node.write_file(path, certificate, 0o600)
    await node.run(["corosync-qdevice-net-certutil", "-M", "-c", path], check=True)
    return await _node_bundle(node)


async def read_bundle(node: Remote) -> tuple[str, bytes]:
    """The qnetd CA `node` trusts and its cluster certificate with its key (PKCS#12), as
    init_node and import_signed/import_bundle left them: what a new node is given (crmsh's
    join fetches the same file from a cluster node)."""
    found = await node.run(["cat", NODE_CA], check=True)
    return found.stdout, await _node_bundle(node)


async def _node_bundle(node: Remote) -> bytes:
    """The node's PKCS#12 bundle: the cluster's private key for qnetd, under no password
    (certutil's pk12util call sets none), so a secret to every text hakvm shows."""
    bundle = await _read_bytes(node, NODE_P12)
    remember_secret(bundle)
    return bundle


async def import_bundle(node: Remote, bundle: bytes) -> None:
    await node.write_file(NODE_P12, bundle, 0o600)
    await node.run(["corosync-qdevice-net-certutil", "-m", "-c", NODE_P12], check=True)


# --- this machine as the qnetd host (the lab) ----------------------------------------------------

CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class LocalUser:
    """A `Remote` on this machine that runs commands as `user` (qnetd's), never as root:
    the lab's qnetd database belongs to its unprivileged user."""

    def __init__(self, user: str, name: str = "qnetd (this machine)") -> None:
        self.name = name
        self.user = user

    def _prefix(self) -> list[str]:
        try:
            entry = pwd.getpwnam(self.user)
        except KeyError:
            raise RemoteError(
                f"{self.name}: quorum_device.local.user {self.user!r} does not exist here"
            ) from None
        if entry.pw_uid == os.geteuid():
            return []
        if os.geteuid() != 0:
            raise RemoteError(
                f"{self.name}: certutil must run as {self.user!r}: run hakvm as root (the lab "
                "needs root anyway) or as that user"
            )
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        return [
            setpriv, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups",
            "--inh-caps=-all", "--no-new-privs", "--",
        ]  # fmt: skip

    async def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | bytes | None = None,
        check: bool = False,
        timeout: float = 600.0,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._prefix(), *argv,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd="/",
                env={"PATH": CLEAN_PATH, "LC_ALL": "C", **(env or {})},
            )  # fmt: skip
        except OSError as exc:
            raise RemoteError(f"{self.name}: cannot run {argv[0]}: {exc.strerror}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(data), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RemoteError(f"{self.name}: {argv[0]} timed out after {timeout:.0f}s") from None
        result = Result(
            tuple(argv), proc.returncode or 0, out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )  # fmt: skip
        if check and not result.ok:
            raise command_failed(self.name, shlex.join(argv[:2]), result)
        return result

    async def write_file(
        self, path: str, content: bytes, mode: int, owner: str = "root", group: str = "root"
    ) -> None:
        script = 'umask 077; cat > "$1" && chmod "$2" "$1"'
        await self.run(["sh", "-c", script, "sh", path, f"{mode:04o}"], stdin=content, check=True)
