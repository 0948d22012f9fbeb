"""Secret hygiene in one place: what hakvm hides in every text it shows, and the placeholder
that stands in for a secret where none may be.

`redact` is applied where text leaves hakvm's hands: every `HakvmError` message (so every
error line, `--json` report and drill log built from one) and the stderr a node sends back
(`remote.connection`). It hides the secrets tools print themselves (drbdadm repeats a failed
`drbdsetup ... --shared-secret=...` command line; ipmitool and fence agents take `-P`/`-p`
passwords) and every value hakvm registered with `remember_secret` (the corosync authkey,
the DRBD master secret, the migration key, the BMC passwords), in any form it may be shown.

`PLACEHOLDER` marks text rendered without a secret (`hakvm render`, and `plan` where the
state directory has no copy of a secret the nodes hold): `contains_placeholder` is the
check that refuses to write such text to a node.
"""

from __future__ import annotations

import base64
import re

REDACTED = "<redacted>"
PLACEHOLDER = "REDACTED-"  # every placeholder starts so
GENERATED = f"{PLACEHOLDER}generated-at-apply"  # a secret that apply will generate
NOT_READ = f"{PLACEHOLDER}not-read"  # one derived from a node's secret that plan did not read
MIN_KNOWN = 8  # shorter registered values are not searched for (they would hide words)

_KNOWN: set[str] = set()

_VALUE = r"(\"[^\"]*\"|'[^']*'|[^\s;,'\"]+)"
_ANYWHERE = (
    # drbdadm's "Command 'drbdsetup-84 connect ... --shared-secret=SECRET ...' terminated"
    re.compile(r"(--shared-secret[= ]\s*)" + _VALUE),
    # the DRBD configuration itself: shared-secret "SECRET";
    re.compile(r"((?<![\w-])shared-secret\s+)" + _VALUE),
    # fence agents' and ipmitool's long options and stdin arguments, CIB-style parameters
    re.compile(r"(--password[= ]\s*|(?<![\w-])passwd=|(?<![\w-])password=)" + _VALUE),
    # ipmitool -P PASSWORD (also glued: -PPASSWORD)
    re.compile(r"((?<![\w-])-P\s*)" + _VALUE),
)
# On a line that runs ipmitool or a fence agent: -p is fence_ipmilan's password option,
# -k/-y ipmitool's Kg key (ipmitool's -p, the port, is hidden too: harmless).
_FENCE_LINE = re.compile(r"ipmitool|fence_\w+")
_FENCE_OPTIONS = re.compile(r"((?<![\w-])-[pky]\s*)" + _VALUE)


def remember_secret(value: bytes | str) -> None:
    """Register a secret this process holds: `redact` hides it from now on, as text, hex and
    base64, and for a multi-line value (an SSH private key) each of its lines."""
    raw = value.encode() if isinstance(value, str) else value
    forms = {raw.hex(), base64.b64encode(raw).decode()}
    text = raw.decode("utf-8", "replace")
    forms.add(text.strip())
    forms.update(line.strip() for line in text.splitlines() if not line.startswith("-----"))
    _KNOWN.update(f for f in forms if len(f) >= MIN_KNOWN)


def _known_values(text: str) -> str:
    for value in sorted(_KNOWN, key=len, reverse=True):  # longest first: no partial leftovers
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def _hide(match: re.Match[str]) -> str:
    value = match.group(2)
    if value.strip("\"'") == REDACTED:
        return match.group(0)
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match.group(1)}{quote}{REDACTED}{quote}"


def redact(text: str) -> str:
    """`text` with every secret it shows replaced by <redacted>."""
    text = _known_values(text)
    for pattern in _ANYWHERE:
        text = pattern.sub(_hide, text)
    if _FENCE_LINE.search(text):
        text = "\n".join(
            _FENCE_OPTIONS.sub(_hide, line) if _FENCE_LINE.search(line) else line
            for line in text.split("\n")
        )
    return text


def contains_placeholder(data: bytes) -> bool:
    """Whether `data` holds a render placeholder where a secret belongs."""
    return PLACEHOLDER.encode() in data


_STAND_IN = f"{PLACEHOLDER}sha256:".encode()


def stand_in(sha256: str) -> bytes:
    """What `plan` holds in place of a secret it did not read: a node's copy, known by its
    hash, or (no hash) one that apply generates. A placeholder: never written."""
    return _STAND_IN + sha256.encode() if sha256 else GENERATED.encode()


def stand_in_digest(data: bytes) -> str | None:
    """The hash a `stand_in` carries (None: `data` is not one)."""
    return data[len(_STAND_IN) :].decode() if data.startswith(_STAND_IN) else None
