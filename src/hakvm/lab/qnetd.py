"""The lab's quorum device server: corosync-qnetd on the host's loopback, run by the lab user.

qnetd must run on a third machine, never on a cluster node: in the lab that is the host
itself, which the guests reach as 10.0.2.2 (QEMU's user-mode network maps it to the host's
loopback), as they reach the BMCs. Everything qnetd touches is in the runtime dir's
``qnetd/`` (the lab user's, 0700)::

    nssdb/            its NSS database: the CA ("QNet CA") and the server certificate
                      ("QNetd Cert", CN=Qnetd Server), made with plain certutil as
                      corosync-qnetd-certutil -i makes them (the script has /etc hard-coded)
    qnetd.pid         its lock file;  qnetd.sock  its local socket (corosync-qnetd-tool -p)

`lab up` makes a fresh database with the fresh nodes, and links it into the state dir as
``qnetd-nssdb``: examples/lab-qdevice.yaml names that link (quorum_device.local), so that
`hakvm apply` signs the cluster's certificate with this CA, as the lab user.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

from hakvm.lab import procs
from hakvm.lab.state import GUEST_HOST_ADDRESS, LOOPBACK, Lab, write_atomic

KIND = "qnetd"
# corosync-qnetd-certutil -i, step by step, on the database given as $1 (validity in months,
# serial numbers from 101, the next one kept in serial.txt as the script keeps it).
INIT_SCRIPT = (
    'set -eu; db=$1; umask 077; mkdir "$db"; : > "$db/pwdfile.txt"; '
    'head -c 64 /dev/urandom > "$db/noise.txt"; '
    'certutil -N -d "$db" -f "$db/pwdfile.txt"; '
    "printf 'y\\n0\\ny\\n' | certutil -S -n 'QNet CA' -s 'CN=QNet CA' -x -t 'CT,,' -m 101 "
    '-v 1200 -d "$db" -z "$db/noise.txt" -f "$db/pwdfile.txt" -2 >/dev/null; '
    'certutil -L -d "$db" -n \'QNet CA\' > "$db/qnetd-cacert.crt"; '
    'certutil -L -d "$db" -n \'QNet CA\' -a >> "$db/qnetd-cacert.crt"; '
    "certutil -S -n 'QNetd Cert' -s 'CN=Qnetd Server' -c 'QNet CA' -t 'u,u,u' -m 102 "
    '-v 1200 -d "$db" -z "$db/noise.txt" -f "$db/pwdfile.txt" >/dev/null; '
    'echo 102 > "$db/serial.txt"'
)


class QnetdError(Exception):
    """The lab's qnetd could not be prepared or started."""


def qnetd_dir(lab: Lab) -> pathlib.Path:
    return lab.run.dir / KIND


def nss_db(lab: Lab) -> pathlib.Path:
    return qnetd_dir(lab) / "nssdb"


def nss_db_link(lab: Lab) -> pathlib.Path:
    """The state dir's link to the database (what a lab spec's quorum_device.local names)."""
    return lab.dir / "qnetd-nssdb"


def socket_path(lab: Lab) -> pathlib.Path:
    return qnetd_dir(lab) / "qnetd.sock"


def prepare(lab: Lab, user: procs.LabUser) -> None:
    """A fresh qnetd directory and CA for fresh nodes, owned by the lab user."""
    directory = qnetd_dir(lab)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(directory, user.uid, user.gid)
    argv = procs.as_lab_user(["sh", "-c", INIT_SCRIPT, "sh", str(nss_db(lab))], user)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise QnetdError(f"qnetd: creating its CA in {nss_db(lab)} failed: {detail}")
    link = nss_db_link(lab)
    link.unlink(missing_ok=True)
    link.symlink_to(nss_db(lab))


def argv(lab: Lab, port: int) -> list[str]:
    directory = qnetd_dir(lab)
    settings = (
        f"nss_db_dir={nss_db(lab)},lock_file={directory}/qnetd.pid,"
        f"local_socket_file={socket_path(lab)}"
    )
    # -f: foreground (logs to the lab's log file); loopback only: the guests come in as
    # 10.0.2.2 through their user-mode NIC, nothing else can reach it.
    return [procs.QNETD_BINARY, "-f", "-l", LOOPBACK, "-p", str(port), "-S", settings]


def pid(lab: Lab) -> int | None:
    found = procs.find_process(lab, KIND, KIND)
    return found.pid if found else None


def set_wanted(lab: Lab, state: str) -> None:
    write_atomic(lab.want_file(KIND, KIND), state + "\n", mode=0o600)


def wanted(lab: Lab) -> str:
    try:
        return lab.want_file(KIND, KIND).read_text().strip() or "stopped"
    except OSError:
        return "stopped"


def prepared(lab: Lab) -> bool:
    """Whether `lab up` made the qnetd database (a lab from before qnetd has none)."""
    return (nss_db(lab) / "cert9.db").is_file()


def start(lab: Lab, user: procs.LabUser) -> int:
    """Start qnetd (detached) unless it runs; its pid once it listens."""
    running = pid(lab)
    if running is not None:
        return running
    if not prepared(lab):
        raise QnetdError(f"qnetd: no database in {nss_db(lab)} (run `hakvm lab up`)")
    port = lab.load().qnetd_port
    set_wanted(lab, "running")
    try:
        return procs.spawn_daemon(
            lab, KIND, KIND, argv(lab, port), user, port=port, proto="tcp",
            cwd=str(qnetd_dir(lab)), timeout=15.0,
        )  # fmt: skip
    except procs.DaemonError as exc:
        raise QnetdError(str(exc)) from None


def stop(lab: Lab) -> bool:
    """Stop qnetd (the quorum device loses its vote); whether it ran."""
    set_wanted(lab, "stopped")
    running = pid(lab)
    if running is None:
        return False
    procs.kill_hard(running)
    return True


def status(lab: Lab, port: int) -> dict[str, object]:
    running = pid(lab)
    state = "running" if running else "dead" if wanted(lab) == "running" else "stopped"
    return {
        "pid": running,
        "state": state,
        "address": f"{LOOPBACK}:{port}/tcp",
        "guest_address": f"{GUEST_HOST_ADDRESS}:{port}",
        "nss_db": str(nss_db_link(lab)),
        "log": str(lab.log_file(KIND, KIND)),
    }
