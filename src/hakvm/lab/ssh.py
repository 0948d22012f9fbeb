"""SSH to lab nodes with the lab's key and pinned host keys (never trust on first use)."""

from __future__ import annotations

import pathlib
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence

from hakvm.lab.state import LOOPBACK


def option_path(path: pathlib.Path) -> str:
    """A path as the value of an ``ssh -o`` option: ssh splits those values on whitespace
    unless double-quoted (a checkout under "/root/my labs" is fine)."""
    text = str(path)
    if '"' in text:
        raise ValueError(f"{text}: ssh cannot take a path with a double quote in an option")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def ssh_argv(
    port: int,
    key: pathlib.Path,
    known_hosts: pathlib.Path,
    remote: Sequence[str] = (),
    *,
    tty: bool = False,
    connect_timeout: int = 10,
    control_path: pathlib.Path | None = None,
) -> list[str]:
    """ssh command line for root@127.0.0.1:port; ``remote`` is passed as ssh would.

    ``control_path``: reuse a master connection there if one runs (see ensure_master);
    without one, ssh simply connects directly.
    """
    argv = [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={option_path(known_hosts)}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "LogLevel=ERROR",
        "-p",
        str(port),
        "-t" if tty else "-T",
    ]
    if control_path is not None:
        argv += ["-o", "ControlMaster=no", "-o", f"ControlPath={option_path(control_path)}"]
    argv.append(f"root@{LOOPBACK}")
    if remote:
        argv += ["--", *remote]
    return argv


def _quietly(argv: list[str], timeout: float) -> int | None:
    """argv's exit code with all stdio on /dev/null (a ControlPersist master keeps its stderr
    open, which would block a caller reading that pipe); None when it outlasts timeout."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    return done.returncode


def _ask_master(
    port: int, key: pathlib.Path, known_hosts: pathlib.Path, control_path: pathlib.Path, op: str
) -> int | None:
    """``ssh -O op`` to the master at control_path (check, exit)."""
    base = ssh_argv(port, key, known_hosts, control_path=control_path)
    return _quietly([*base[:-1], "-O", op, base[-1]], timeout=10)


def ensure_master(
    port: int, key: pathlib.Path, known_hosts: pathlib.Path, control_path: pathlib.Path
) -> bool:
    """Start a background master connection at control_path unless one answers.

    A login to a TCG node costs seconds (PAM, logind); a master makes each later command
    cost one channel instead.
    """
    checked = _ask_master(port, key, known_hosts, control_path, "check")
    if checked is None:  # a master that holds its socket but does not answer: say so
        raise subprocess.TimeoutExpired(["ssh", "-O", "check"], 10)
    if checked == 0:
        return True
    control_path.unlink(missing_ok=True)  # stale socket of a master whose node died
    plain = ssh_argv(port, key, known_hosts)  # ssh takes the first value of an option
    master = [
        *plain[:-1],
        "-o",
        "ControlMaster=yes",
        "-o",
        f"ControlPath={option_path(control_path)}",
        "-o",
        "ControlPersist=300",
        "-N",
        "-f",
        plain[-1],
    ]
    return _quietly(master, timeout=60) == 0


def stop_master(
    port: int, key: pathlib.Path, known_hosts: pathlib.Path, control_path: pathlib.Path
) -> None:
    """Close the master at control_path if one runs (its node was restored to a snapshot:
    the guest's side of that TCP connection went back in time). A master that does not
    answer keeps its socket: a new master there could lose it when the old one exits."""
    if _ask_master(port, key, known_hosts, control_path, "exit") is not None:
        control_path.unlink(missing_ok=True)


def remote_command(argv: Sequence[str]) -> list[str]:
    """Quote an argv so the remote shell runs exactly it (ssh joins words with spaces)."""
    return [shlex.join(argv)]


def wait_for_ssh(
    port: int,
    key: pathlib.Path,
    known_hosts: pathlib.Path,
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
) -> float:
    """Poll until ``ssh true`` succeeds with the pinned host key; returns seconds waited.

    ``alive`` stops the wait early when it returns False (the node died).
    """
    started = time.monotonic()
    last = ""
    while True:
        try:
            result = subprocess.run(
                ssh_argv(port, key, known_hosts, ["true"], connect_timeout=10),
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            # A booting TCG guest can accept the forwarded TCP connection long before
            # sshd answers; just try again.
            result = subprocess.CompletedProcess([], 255, "", "ssh timed out")
        if result.returncode == 0:
            return time.monotonic() - started
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else last
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr or (
            "Host key verification failed" in result.stderr
        ):
            raise TimeoutError(f"port {port}: host key does not match known_hosts")
        if alive is not None and not alive():
            raise TimeoutError(f"port {port}: node stopped while waiting for SSH")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"port {port}: no SSH after {timeout:.0f}s ({last})")
        time.sleep(1)
