"""Find the Debian mirror the host already uses.

The mirror is never hard-coded: the image is built from whatever the host's apt
configuration points at (deb822 ``*.sources`` files or one-line ``sources.list``).
"""

from __future__ import annotations

import dataclasses
import pathlib

APT_DIR = pathlib.Path("/etc/apt")


class MirrorError(Exception):
    """The host apt configuration names no usable Debian mirror."""


@dataclasses.dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_deb822(text: str) -> list[AptSource]:
    """Parse deb822 stanzas (``Types: deb`` only; ``Enabled: no`` skipped)."""
    sources: list[AptSource] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            if raw[0] in " \t" and key:  # continuation line
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            sources.append(
                AptSource(
                    uri=uri.rstrip("/"),
                    suites=tuple(fields.get("suites", "").split()),
                    components=tuple(fields.get("components", "").split()),
                )
            )
    return sources


def parse_one_line(text: str) -> list[AptSource]:
    """Parse ``deb [options] URI SUITE COMPONENT...`` lines."""
    sources: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        if rest.startswith("["):
            rest = rest.split("]", 1)[1].strip() if "]" in rest else ""
        parts = rest.split()
        if len(parts) < 2:
            continue
        sources.append(
            AptSource(uri=parts[0].rstrip("/"), suites=(parts[1],), components=tuple(parts[2:]))
        )
    return sources


def host_sources(apt_dir: pathlib.Path = APT_DIR) -> list[AptSource]:
    """All ``deb`` sources configured on the host, in apt's reading order."""
    sources: list[AptSource] = []
    main_list = apt_dir / "sources.list"
    if main_list.is_file():
        sources += parse_one_line(main_list.read_text(errors="replace"))
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".sources":
                sources += parse_deb822(path.read_text(errors="replace"))
            elif path.suffix == ".list":
                sources += parse_one_line(path.read_text(errors="replace"))
    return sources


def pick_mirror(sources: list[AptSource], suite: str) -> str:
    """The URI serving ``suite`` (e.g. bookworm) with the ``main`` component."""
    for source in sources:
        if suite in source.suites and (not source.components or "main" in source.components):
            return source.uri
    raise MirrorError(f"no apt source for suite {suite!r} found in the host apt configuration")


def pick_security(sources: list[AptSource], suite: str) -> str | None:
    """The URI serving ``<suite>-security``, if the host has one."""
    try:
        return pick_mirror(sources, f"{suite}-security")
    except MirrorError:
        return None


def chroot_sources_list(sources: list[AptSource], suite: str) -> str:
    """A one-line sources.list for the build chroot, mirroring the host's choice."""
    mirror = pick_mirror(sources, suite)
    lines = [f"deb {mirror} {suite} main", f"deb {mirror} {suite}-updates main"]
    security = pick_security(sources, suite)
    if security:
        lines.append(f"deb {security} {suite}-security main")
    return "\n".join(lines) + "\n"
