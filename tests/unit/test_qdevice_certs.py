"""The quorum device's certificate chain with the real NSS tools (certutil, pk12util): the
lab's qnetd CA made as corosync-qnetd-certutil -i makes it, a node's request signed by
`hakvm.remote.qnetd.sign` without the wrapper (the lab's way), imported on one node,
carried to the other as PKCS#12, and judged "present" by plan's own check from what
`cert_commands` print. The node steps are corosync-qdevice-net-certutil's, spelled out
(its paths are fixed to /etc)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import subprocess

import pytest

from hakvm.lab import procs, qnetd
from hakvm.lab.state import Lab
from hakvm.remote.qnetd import LocalUser, QnetdCa, read_ca, sign
from hakvm.remote.quorum import NODE_DB, cert_commands, check_certs, node_certs, pem_body

pytestmark = pytest.mark.skipif(
    shutil.which("certutil") is None or shutil.which("pk12util") is None,
    reason="certutil/pk12util not installed (libnss3-tools)",
)


def _run(*argv: str, stdin: bytes | None = None) -> None:
    subprocess.run(argv, input=stdin, check=True, capture_output=True, timeout=120)


def _node_db(directory: pathlib.Path, ca_file: pathlib.Path) -> pathlib.Path:
    """corosync-qdevice-net-certutil -i -c CA, on `directory`."""
    db = directory / "nssdb"
    db.mkdir(parents=True)
    (db / "pwdfile.txt").write_text("")
    (db / "noise.txt").write_bytes(os.urandom(32))
    _run("certutil", "-N", "-d", str(db), "-f", str(db / "pwdfile.txt"))
    _run("certutil", "-d", str(db), "-A", "-t", "CT,c,c", "-n", "QNet CA",
         "-f", str(db / "pwdfile.txt"), "-i", str(ca_file))  # fmt: skip
    return db


def _facts(db: pathlib.Path) -> dict[str, tuple[int, bytes]]:
    """What plan's fact commands print on a node whose database is `db`."""
    out = {}
    for name, command in cert_commands():
        argv = [a.replace(NODE_DB, str(db)) for a in command]
        done = subprocess.run(argv, capture_output=True, check=False, timeout=60)
        out[name] = (done.returncode, done.stdout + done.stderr)
    return out


def test_lab_ca_signs_a_node_request_and_both_nodes_hold_the_certificate(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HAKVM_LAB_RUN_BASE", str(tmp_path / "run"))
    lab = Lab(tmp_path / "state")
    lab.claim()
    lab.run.dir.mkdir(parents=True)
    me = procs.current_user()
    qnetd.prepare(lab, me)  # as the lab user (here: whoever runs the test)
    assert os.readlink(qnetd.nss_db_link(lab)) == str(qnetd.nss_db(lab))

    ca = QnetdCa(os.path.realpath(qnetd.nss_db_link(lab)), wrapper=False)
    signer = LocalUser(me.name)
    ca_text = asyncio.run(read_ca(signer, ca))
    assert ca_text is not None and pem_body(ca_text)
    ca_file = tmp_path / "qnetd-cacert.crt"
    ca_file.write_text(ca_text)

    first = _node_db(tmp_path / "node01", ca_file)
    crq = first / "qdevice-net-node.crq"
    _run("certutil", "-R", "-s", "CN=lab", "-o", str(crq), "-d", str(first),
         "-f", str(first / "pwdfile.txt"), "-z", str(first / "noise.txt"))  # fmt: skip
    certificate = asyncio.run(sign(signer, ca, crq.read_bytes(), "lab"))
    assert (pathlib.Path(ca.nss_db) / "serial.txt").read_text().strip() == "103"
    crt = first / "cluster-lab.crt"
    crt.write_bytes(certificate)
    p12 = first / "qdevice-net-node.p12"
    _run("certutil", "-d", str(first), "-A", "-t", "u,u,u", "-n", "Cluster Cert", "-i", str(crt))
    _run("pk12util", "-d", str(first), "-o", str(p12), "-W", "", "-n", "Cluster Cert")

    second = _node_db(tmp_path / "node02", ca_file)
    before = {"node01": node_certs(_facts(first)), "node02": node_certs(_facts(second))}
    assert check_certs(before, "lab", pem_body(ca_text)).why == [
        "node02: no valid cluster certificate with its key"
    ]
    _run("pk12util", "-i", str(p12), "-d", str(second), "-W", "")
    after = {"node01": node_certs(_facts(first)), "node02": node_certs(_facts(second))}
    assert after["node02"].subject_cn == "lab" and after["node02"].has_key
    assert check_certs(after, "lab", pem_body(ca_text)).present
    # A fresh lab CA (lab up again) is another CA: the nodes' certificates are stale.
    qnetd.prepare(lab, me)
    renewed = asyncio.run(read_ca(signer, ca))
    assert renewed is not None
    assert not check_certs(after, "lab", pem_body(renewed)).present
