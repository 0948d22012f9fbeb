"""The Pacemaker alert agent: Pacemaker runs it (as hacluster) once per recipient of the CIB's
`hakvm-events` alert for every fencing, node, resource and attribute event, with the event in
CRM_alert_* environment variables.

Recipient /var/log/hakvm/events/events.jsonl: one JSON object per line is appended, so the
timeline survives hakvm not running:

    {"t": 1764150854.123456, "node": "node01", "kind": "resource", "target": "node01",
     "task": "start", "rc": 0, "status": 0, "desc": "ok", "rsc": "vm-a", ...}

`t` is CRM_alert_timestamp_epoch + CRM_alert_timestamp_usec (Unix seconds, a float), `node`
the node that recorded it, `kind` fencing|node|resource|attribute, `target` the node the
event is about (CRM_alert_node); `task`, `rc`, `status`, `desc`, `rsc` are Pacemaker's
(null when it gives none); resource events add `interval_ms` and `target_rc`, node events
`nodeid`, attribute events `attribute` and `value`. The format is documented in
docs/metrics.md (hakvm serve reads it).

Written safely: one write(2) per line on an O_APPEND descriptor (concurrent agents never
interleave), rotated at 1 MiB to events.jsonl.1 (one old file kept) under an flock.

Recipient ending in `.url`: a file holding a URL (http or https); the same JSON object is
POSTed to it (Content-Type application/json, 10 s timeout). The URL stays out of the CIB.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from . import layout

KINDS = ("fencing", "node", "resource", "attribute")
MAX_FIELD = 1024  # characters kept of any one value (a long exit reason, say)
WEBHOOK_TIMEOUT_S = 10.0
_INT_RE = re.compile(r"^-?\d{1,18}$")


def _value(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(f"CRM_alert_{name}")
    if value is None or value == "":
        return None
    # os.environ holds bytes that are not UTF-8 (an agent's exit reason, say) as lone
    # surrogates, which JSON would carry as "\udcXX": written as U+FFFD instead.
    try:
        raw = value[:MAX_FIELD].encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value[:MAX_FIELD].encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def _number(env: Mapping[str, str], name: str) -> int | str | None:
    value = _value(env, name)
    return int(value) if value is not None and _INT_RE.match(value) else value


def event(env: Mapping[str, str], recorder: str) -> dict[str, Any]:
    """The JSON object of one alert (`recorder`: this node's name)."""
    try:
        t = int(env.get("CRM_alert_timestamp_epoch", "")) + int(
            env.get("CRM_alert_timestamp_usec", "0") or 0
        ) / 1e6
    except ValueError:
        t = time.time()
    kind = _value(env, "kind") or "unknown"
    out: dict[str, Any] = {
        "t": t,
        "node": recorder,
        "kind": kind,
        "target": _value(env, "node"),
        "task": _value(env, "task"),
        "rc": _number(env, "rc"),
        "status": _number(env, "status"),
        "desc": _value(env, "desc"),
        "rsc": _value(env, "rsc"),
    }
    if kind == "resource":
        out["interval_ms"] = _number(env, "interval")
        out["target_rc"] = _number(env, "target_rc")
    elif kind == "node":
        out["nodeid"] = _value(env, "nodeid")
    elif kind == "attribute":
        out["attribute"] = _value(env, "attribute_name")
        out["value"] = _value(env, "attribute_value")
    return out


def line(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), sort_keys=False) + "\n").encode()


def append(path: str, data: bytes, max_bytes: int = layout.EVENTS_MAX_BYTES) -> None:
    """Append one line; first rotate the file to PATH.1 when it reached `max_bytes`."""
    lock_path = os.path.join(os.path.dirname(path), ".lock")
    lock = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_size >= max_bytes:
                os.replace(path, path + ".1")
        except FileNotFoundError:
            pass
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    finally:
        os.close(lock)


class BadUrlError(ValueError):
    pass


def check_url(text: str) -> str:
    """A webhook URL, strictly: http or https, a host, no credentials, no whitespace or
    control characters, at most 2048 characters. BadUrlError says what is wrong (without
    repeating the URL: it may hold a token)."""
    url = text.strip()
    if not url or len(url) > 2048:
        raise BadUrlError("empty or longer than 2048 characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise BadUrlError("contains whitespace or control characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BadUrlError("must start with https:// (or http://)")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise BadUrlError("needs a host and no user:password@")
    try:
        parts.port  # noqa: B018 - urllib checks the port only when asked
    except ValueError:
        raise BadUrlError("has a bad port") from None
    return url


def post(url: str, data: bytes, timeout: float = WEBHOOK_TIMEOUT_S) -> int:
    request = urllib.request.Request(
        url, data=data, method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "hakvm-alert-agent"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=timeout) as response:  # a checked http(s) URL
        return int(response.status)


def main(env: Mapping[str, str] | None = None) -> int:
    """One alert. 0 when recorded (or forwarded); 1 otherwise (Pacemaker logs the failure)."""
    env = os.environ if env is None else env
    recipient = env.get("CRM_alert_recipient", layout.EVENTS_PATH) or layout.EVENTS_PATH
    record = event(env, socket.gethostname().split(".")[0])
    try:
        if recipient.endswith(".url"):
            with open(recipient, encoding="utf-8") as handle:
                url = check_url(handle.read(4096))
            post(url, line(record))
        else:
            append(recipient, line(record))
    except BadUrlError as exc:
        sys.stderr.write(f"hakvm alert agent: webhook URL in {recipient}: {exc}\n")
        return 1
    except (OSError, urllib.error.URLError) as exc:
        sys.stderr.write(f"hakvm alert agent: {recipient}: {exc}\n")
        return 1
    return 0
