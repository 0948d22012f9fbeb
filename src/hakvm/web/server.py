"""The HTTP side of `hakvm serve`: the standard library's threading HTTP server, read-only
(GET and HEAD), serving the latest view that the poller published.

Routes: `/` (the page; `?window=15m|1h|6h|24h|7d`), `/status.json` (exactly `hakvm status
--json`), `/metrics` (Prometheus), `/timeline.svg`, `/view.json` (the whole view).

Access: on a loopback address anyone on this machine may read it, as they may run
`hakvm status`. With a token (required on any other address), every request must present
it: `Authorization: Bearer TOKEN`, or the cookie that `GET /?token=TOKEN` sets (it then
redirects to the same page without the token, so it stays out of the address bar and
history). The token is compared in constant time and never logged: the access log has the
path without its query, its control characters escaped. Without a token, a request must name
this machine in its Host header (`localhost`, a loopback address, the bound one): a web page
whose name was rebound to 127.0.0.1 (DNS rebinding) gets 403, not the cluster.
"""

from __future__ import annotations

import hmac
import http.server
import ipaddress
import socket
import stat
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST

from hakvm.errors import InputError
from hakvm.ops.view import ClusterView
from hakvm.web.metrics import exposition
from hakvm.web.page import render_page, window_of
from hakvm.web.svg import WINDOWS, timeline_svg

COOKIE = "hakvm_token"
MIN_TOKEN = 16
MAX_TOKEN_FILE = 4096
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
SECURITY_HEADERS = {
    # No script at all; styles inline; nothing fetched from anywhere else.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src 'self'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def read_token(path: Path) -> str:
    """The token in `path` (its first line). InputError when the file is missing, readable by
    others than its owner, or holds fewer than MIN_TOKEN characters."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_TOKEN_FILE:
            raise InputError(f"--token-file {path}: not a small regular file")
        if info.st_mode & 0o077:
            raise InputError(
                f"--token-file {path}: readable by others (mode {info.st_mode & 0o777:04o}); "
                f"chmod 600 {path}"
            )
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except (OSError, UnicodeError) as exc:
        raise InputError(f"--token-file {path}: cannot read it: {exc}") from None
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN or any(c.isspace() or not c.isprintable() for c in token):
        raise InputError(
            f"--token-file {path}: the token must be at least {MIN_TOKEN} printable characters "
            "without spaces (e.g. `openssl rand -hex 24 > FILE`)"
        )
    return token


def listen_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InputError(f"--bind {text}: not an IP address (e.g. 127.0.0.1)") from None


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class WebApp:
    """What the handler serves: the latest published view (replaced whole, under a lock)."""

    cluster: str
    token: str | None = None
    log: Callable[[str], None] = lambda line: None
    bind: str = "127.0.0.1"  # the address listened on: a Host the page may be asked by
    _view: ClusterView | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, view: ClusterView) -> None:
        with self._lock:
            self._view = view

    @property
    def view(self) -> ClusterView | None:
        with self._lock:
            return self._view

    def _presented(self, given: str | None) -> bool:
        return given is not None and self.token is not None and hmac.compare_digest(
            given.encode(), self.token.encode()
        )  # fmt: skip

    def authorized(self, headers: Mapping[str, str]) -> bool:
        if self.token is None:
            return True
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer ") and self._presented(auth.removeprefix("Bearer ").strip()):
            return True
        try:
            jar = SimpleCookie(headers.get("Cookie", ""))
        except CookieError:
            return False
        return COOKIE in jar and self._presented(urllib.parse.unquote(jar[COOKIE].value))

    def respond(self, target: str, headers: Mapping[str, str]) -> Response:
        """The answer to `GET target` (path and query)."""
        url = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(url.query)
        if self.token is None and not self._local(headers.get("Host")):
            return Response(HTTPStatus.FORBIDDEN, TEXT,
                            b"this view answers requests for localhost only\n")  # fmt: skip
        if "token" in query:
            return self._login(url.path, query)
        if not self.authorized(headers):
            return _refused()
        return self._route(url.path, query)

    def _local(self, host: str | None) -> bool:
        """A Host header naming this machine (none at all: not a browser, so no rebinding)."""
        if host is None:
            return True
        if any(c in host for c in "@/\\?#"):  # userinfo or a path: not a Host a browser sends
            return False
        try:
            parts = urllib.parse.urlsplit(f"//{host}")
            name, _ = parts.hostname, parts.port
        except ValueError:  # a port that is not a number, an unclosed bracket
            return False
        return name is not None and name.rstrip(".") in LOCAL_HOSTS | {self.bind.lower()}

    def _login(self, path: str, query: dict[str, list[str]]) -> Response:
        if self.token is None or not self._presented(query["token"][0]):
            return _refused()
        rest = urllib.parse.urlencode({k: v[0] for k, v in query.items() if k != "token"})
        # Percent-encoded: a token's ';', ',', '"' or '\\' would end or break a bare cookie.
        value = urllib.parse.quote(self.token, safe="")
        cookie = f"{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/"
        location = path + (f"?{rest}" if rest else "")
        return Response(HTTPStatus.SEE_OTHER, HTML, b"", {"Location": location,
                                                          "Set-Cookie": cookie})  # fmt: skip

    def _route(self, path: str, query: dict[str, list[str]]) -> Response:
        view = self.view
        window = window_of(query.get("window", [None])[0])
        if path in ("/", "/index.html"):
            return Response(HTTPStatus.OK, HTML, render_page(self.cluster, view, window).encode())
        if path == "/metrics":
            return Response(HTTPStatus.OK, CONTENT_TYPE_LATEST, exposition(view))
        if view is None and path in ("/status.json", "/view.json", "/timeline.svg"):
            body = b'{"error": "no answer from the nodes yet"}\n'
            return Response(HTTPStatus.SERVICE_UNAVAILABLE, "application/json", body,
                            {"Retry-After": "2"})  # fmt: skip
        if view is not None and path == "/status.json":
            return Response(HTTPStatus.OK, "application/json",
                            view.report.model_dump_json(indent=2).encode())  # fmt: skip
        if view is not None and path == "/view.json":
            return Response(HTTPStatus.OK, "application/json",
                            view.model_dump_json(indent=2).encode())  # fmt: skip
        if view is not None and path == "/timeline.svg":
            svg = timeline_svg(view, WINDOWS[window])
            return Response(HTTPStatus.OK, "image/svg+xml; charset=utf-8", svg.encode())
        return Response(HTTPStatus.NOT_FOUND, TEXT, b"not found\n")


def _refused() -> Response:
    body = (
        b"<!DOCTYPE html><title>token required</title><p>This view needs its token: open "
        b"<code>/?token=TOKEN</code> once (a cookie keeps it), or send "
        b"<code>Authorization: Bearer TOKEN</code>.</p>\n"
    )
    return Response(HTTPStatus.UNAUTHORIZED, HTML, body, {"WWW-Authenticate": "Bearer"})


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "hakvm-serve"
    sys_version = ""
    timeout = 30  # seconds a connection may sit idle: each holds a thread
    app: WebApp  # set on the server's handler class by make_server

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        try:
            response = self.app.respond(self.path, dict(self.headers.items()))
        except Exception as exc:  # a bug: one line in the log, a 500, the server goes on
            # The exception's type only: its text may quote a whole page or a node's data.
            self.app.log(f"error answering {self.command} {_path(self.path)}: "
                         f"{type(exc).__name__}")  # fmt: skip
            response = Response(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", b"error\n")
        self._send(response, head)

    def _send(self, response: Response, head: bool = False) -> None:
        self.send_response(response.status)
        for name, value in {**SECURITY_HEADERS, **response.headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if not head:
            self.wfile.write(response.body)

    def do_POST(self) -> None:
        self._send(Response(HTTPStatus.METHOD_NOT_ALLOWED, TEXT,
                            b"read-only\n", {"Allow": "GET, HEAD"}))  # fmt: skip

    do_PUT = do_DELETE = do_PATCH = do_POST

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, an unknown method, an
        oversized header) with this server's headers, and no echo of what was sent."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        status = HTTPStatus(code)
        body = f"{status.value} {status.phrase}\n".encode()
        self._send(Response(status, TEXT, body, {"Connection": "close"}),
                   head=getattr(self, "command", None) == "HEAD")  # fmt: skip

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        command = getattr(self, "command", None) or "-"
        path = _path(getattr(self, "path", ""))  # unset when the request line was unreadable
        self.app.log(f'{self.client_address[0]} "{command} {path}" {code}')

    def log_message(self, format: str, *args: object) -> None:
        """http.server's other lines (errors): their message may quote the request line, so
        only the code is kept."""
        command = getattr(self, "command", None) or "-"
        code = args[0] if args and isinstance(args[0], int) else "-"
        self.app.log(f"{self.client_address[0]} {command} {_path(getattr(self, 'path', ''))}: "
                     f"error {code}")  # fmt: skip


def _path(target: str) -> str:
    """The path of a request target, without its query (which may hold the token), and
    printable: escape sequences in a request line would otherwise reach the terminal."""
    path = urllib.parse.urlsplit(target or "").path or "-"
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in path)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """One line in the app's log instead of a traceback on stderr."""
        handler = self.RequestHandlerClass
        if isinstance(handler, type) and issubclass(handler, Handler):
            handler.app.log(f"error serving {client_address}: {type(sys.exc_info()[1]).__name__}")


class ServerV6(Server):
    address_family = socket.AF_INET6


def make_server(app: WebApp, host: str, port: int) -> Server:
    """A server bound to host:port (OSError if it cannot be), not yet serving."""
    handler = type("BoundHandler", (Handler,), {"app": app})
    v6 = ipaddress.ip_address(host).version == 6
    return (ServerV6 if v6 else Server)((host, port), handler)
