"""Virtual BMC for the QEMU lab: real IPMI 2.0 (lanplus) served by pyghmi.

The IPMI/RMCP+ protocol (RAKP auth, AES/SHA1 session) is entirely pyghmi's
``pyghmi.ipmi.bmc.Bmc``; this module only maps chassis control to a
:class:`PowerControl`, so ``ipmitool -I lanplus`` and ``fence_ipmilan --lanplus``
work against the lab exactly as against hardware.

Semantics (matching real BMCs and virtualbmc, which fence_ipmilan is tested against):

* ``power off``   -> ``control.power_off()`` (always, even if already off: a fence
  must never be skipped because of a stale ``is_on``).
* ``power on``    -> ``control.power_on()`` only if off (never a second QEMU).
* ``power cycle`` -> off (if on), then on.
* ``power reset`` -> ``control.reset()`` if on; completion code 0xD5 ("not in
  present state") if off, like hardware.
* ``power soft``  -> ``control.power_off()``: the lab has no ACPI guest agent to
  wait for, and a fence agent never uses soft.

Callbacks run synchronously in pyghmi's single server loop, before the reply is
sent. When one takes longer than the client's retransmit interval (~1 s for
ipmitool), the client resends the same request (same session and rqSeq); like a
real BMC we answer the duplicate with the first completion code instead of
acting twice (a repeated ``cycle`` would kill the node it just started). Still,
keep callbacks short: the BMC answers nobody else meanwhile.
A failing callback is logged and answered with completion code 0xFF, so the
client (and the fence agent) sees a failure instead of a fake success.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import typing
import uuid

import pyghmi.ipmi.bmc

__all__ = ["PowerControl", "serve_bmc"]

log = logging.getLogger(__name__)

# IPMI completion codes (IPMI 2.0 spec, table 5-2).
_CC_OK = 0x00
_CC_INVALID_DATA = 0xCC
_CC_NOT_IN_PRESENT_STATE = 0xD5
_CC_UNSPECIFIED = 0xFF
# RAKP's HMAC key (K_UID) is the password zero-padded to 20 bytes; ipmitool
# silently truncates longer ones, so refuse them rather than fail confusingly.
_MAX_PASSWORD_BYTES = 20
_MAX_USER_BYTES = 16
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
# How long after a chassis control its reply is replayed to client retransmits; those
# queue up while the callback runs and are handled right after it, so seconds suffice.
_DUPLICATE_WINDOW = 10.0
# Stable per-name system GUID, so `ipmitool mc guid` is reproducible across restarts.
_GUID_NAMESPACE = uuid.UUID("5b0b7f64-2d1e-4a43-9a55-3f1f3a6c0b1e")


class PowerControl(typing.Protocol):
    """Power of one lab node. Calls come from one thread, one at a time."""

    def is_on(self) -> bool: ...

    def power_on(self) -> None: ...

    def power_off(self) -> None:
        """Hard, immediate (pulled plug). Must be a no-op when already off."""

    def reset(self) -> None:
        """Hard reset of a running node."""


class _Credentials:
    """The single user's password, looked up by pyghmi: ``.get(username)`` in 1.6,
    ``username in creds`` then ``creds[username]`` in Debian 12's 1.5.

    Not a dict so that an accidental repr (log, traceback) never shows it.
    """

    def __init__(self, user: str, password: str) -> None:
        self._user = user
        self._password = password

    def get(self, username: str, default: str | None = None) -> str | None:
        return self._password if username == self._user else default

    def __contains__(self, username: object) -> bool:
        return username == self._user

    def __getitem__(self, username: str) -> str:
        if username != self._user:
            raise KeyError(username)
        return self._password

    def __repr__(self) -> str:
        return f"_Credentials(user={self._user!r}, password=<redacted>)"


class _LabBmc(pyghmi.ipmi.bmc.Bmc):  # type: ignore[misc]  # pyghmi is untyped
    def __init__(
        self, name: str, credentials: _Credentials, address: str, port: int, control: PowerControl
    ) -> None:
        super().__init__(
            credentials, port=port, bmcuuid=uuid.uuid5(_GUID_NAMESPACE, name), address=address
        )
        self.name = name
        self.control = control
        # ((session, rqSeq, directive), when, completion code) of the last chassis control.
        self._last_control: tuple[tuple[object, int, int], float, int] | None = None

    # --- read-only queries -------------------------------------------------------------
    def get_power_state(self) -> str:
        return "on" if self.control.is_on() else "off"

    def get_chassis_status(self, session: typing.Any) -> None:
        # Overridden only so a failing is_on() is logged (not just a bare traceback on
        # stderr from pyghmi's catch-all) and answered with 0xFF.
        try:
            state = self.get_power_state()
        except Exception:
            log.exception("%s: power status failed", self.name)
            session.send_ipmi_response(code=_CC_UNSPECIFIED)
            return
        session.send_ipmi_response(data=[1 if state == "on" else 0, 0, 0])

    def get_system_guid(self) -> uuid.UUID:
        return typing.cast(uuid.UUID, self.uuid)

    def handle_raw_request(self, request: dict[str, typing.Any], session: typing.Any) -> None:
        # Get System GUID (netfn 6, command 0x37): Debian 12's pyghmi 1.5 has no handler.
        if request.get("netfn") == 6 and request.get("command") == 0x37:
            session.send_ipmi_response(code=_CC_OK, data=self.get_system_guid().bytes_le)
            return
        super().handle_raw_request(request, session)

    def get_boot_device(self) -> str:
        return "default"  # boot device is fixed by the lab's QEMU command line

    # --- chassis control: return an IPMI completion code -------------------------------
    def control_chassis(self, request: dict[str, typing.Any], session: typing.Any) -> None:
        # Same dispatch as pyghmi's, plus duplicate detection (see module docstring).
        data = request["data"]
        directive = int(data[0]) if data else -1
        key = (session, int(session.seqlun), directive)
        last = self._last_control
        if last is not None and last[0] == key and time.monotonic() - last[1] < _DUPLICATE_WINDOW:
            log.info("%s: retransmitted chassis control %d, not repeated", self.name, directive)
            session.send_ipmi_response(code=last[2])
            return
        handler = {
            0: self.power_off,
            1: self.power_on,
            2: self.power_cycle,
            3: self.power_reset,
            5: self.power_shutdown,
        }.get(directive)
        code = handler() if handler is not None else _CC_INVALID_DATA  # 4 = NMI: no such thing
        self._last_control = (key, time.monotonic(), code)
        session.send_ipmi_response(code=code)

    def power_off(self) -> int:
        return self._act("power off", self.control.power_off)

    def power_shutdown(self) -> int:
        return self._act("soft off (as hard off)", self.control.power_off)

    def power_on(self) -> int:
        return self._act("power on", self._on_if_off)

    def power_cycle(self) -> int:
        return self._act("power cycle", self._cycle)

    def power_reset(self) -> int:
        try:
            on = self.control.is_on()
        except Exception:
            log.exception("%s: power status failed", self.name)
            return _CC_UNSPECIFIED
        if not on:
            log.info("%s: reset refused, node is off", self.name)
            return _CC_NOT_IN_PRESENT_STATE
        return self._act("reset", self.control.reset)

    def _on_if_off(self) -> None:
        if not self.control.is_on():
            self.control.power_on()

    def _cycle(self) -> None:
        if self.control.is_on():
            self.control.power_off()
        self.control.power_on()

    def _act(self, what: str, action: typing.Callable[[], None]) -> int:
        log.info("%s: %s", self.name, what)
        try:
            action()
        except Exception:
            log.exception("%s: %s failed", self.name, what)
            return _CC_UNSPECIFIED
        return _CC_OK


def _check_loopback(address: str) -> None:
    # Hard rule: lab BMC traffic stays on 127.0.0.0/8. Literal IPv4 only, so a
    # hostname or an IPv6/mapped form can never resolve to something else.
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"BMC address must be a literal IPv4 address, got {address!r}") from None
    if not isinstance(ip, ipaddress.IPv4Address) or ip not in _LOOPBACK:
        raise ValueError(f"BMC address must be in {_LOOPBACK} (loopback only), got {address!r}")


def serve_bmc(  # noqa: PLR0917 - signature fixed by the lab's interface contract
    name: str, address: str, port: int, user: str, password: str, control: PowerControl
) -> None:
    """Serve IPMI 2.0 lanplus for one node on ``address:port`` (UDP); never returns.

    Raises ValueError before binding for a non-loopback address or bad credentials,
    and OSError if the port cannot be bound. ``password`` is never logged.
    """
    _check_loopback(address)
    if not 1 <= port <= 65535:
        raise ValueError(f"BMC port must be 1..65535, got {port}")
    if not user or len(user.encode()) > _MAX_USER_BYTES:
        raise ValueError(f"BMC user must be 1..{_MAX_USER_BYTES} bytes")
    if not password or len(password.encode()) > _MAX_PASSWORD_BYTES:
        raise ValueError(f"BMC password must be 1..{_MAX_PASSWORD_BYTES} bytes")
    bmc = _LabBmc(name, _Credentials(user, password), address, port, control)
    log.info("%s: virtual BMC listening on %s:%d/udp (user %s)", name, address, port, user)
    bmc.listen()
