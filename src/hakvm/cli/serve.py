"""`hakvm serve`: a read-only web view of the cluster (web/), refreshed in the background on
one SSH session (ops/view.py), until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from pathlib import Path

import click

from hakvm.cli.common import SPEC_ARG, Seconds, load_spec, say
from hakvm.errors import ExitCode, StateError
from hakvm.ops import drills, view
from hakvm.web.server import WebApp, listen_address, make_server, read_token

DEFAULT_PORT = 8480


@click.command("serve")
@SPEC_ARG
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--bind", "bind", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="address to listen on; any but a loopback one needs --token-file")  # fmt: skip
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="file (mode 0600) holding the token every request must present")  # fmt: skip
@click.option("--every", type=Seconds(2), default=10.0, show_default=True,
              metavar="SECONDS", help="seconds between two refreshes")  # fmt: skip
def serve_cmd(spec: Path, port: int, bind: str, token_file: Path | None, every: float) -> int:
    """Serve a read-only web view of SPEC's cluster: health, nodes, VMs, a timeline of
    fencing, failovers, migrations, failed actions and drills; /status.json, /metrics.

    Exit: 0 stopped (Ctrl-C, SIGTERM), 2 bad input, 3 the address cannot be listened on."""
    cluster = load_spec(spec)
    address = listen_address(bind)
    token = read_token(token_file) if token_file is not None else None
    if token is None and not address.is_loopback:
        raise click.UsageError(
            f"--bind {bind}: anyone who reaches it would see the cluster; give --token-file "
            "(or keep the default, 127.0.0.1)"
        )
    app = WebApp(cluster.cluster.name, token, say, str(address))
    try:
        server = make_server(app, str(address), port)
    except OSError as exc:
        raise StateError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
    host = f"[{address}]" if address.version == 6 else str(address)
    thread = threading.Thread(target=server.serve_forever, name="hakvm-serve", daemon=True)
    thread.start()
    say(f"serving {cluster.cluster.name} on http://{host}:{port}/ "
        f"({'token required' if token else 'no token'}; refreshed every {every:g}s; "
        "Ctrl-C stops)")  # fmt: skip
    name = cluster.cluster.name

    async def until_stopped() -> None:
        # SIGTERM (systemd, kill) and SIGINT stop it cleanly, SIGINT even when inherited
        # ignored: a shell's background job gets SIGINT ignored, and the e2e teardown's
        # Ctrl-C then went unheard for 60 s (lab run of 2026-12-02).
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        assert task is not None
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await view.poll(cluster, spec, every, app.publish, lambda: drills.records(name))

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(until_stopped())
    finally:
        server.shutdown()
        server.server_close()
    return ExitCode.OK


COMMANDS = [serve_cmd]
