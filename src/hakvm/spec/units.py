"""Sizes in the spec: "40GiB", "512MiB", "1.5TiB" or a plain number of bytes."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KIB": 1024,
    "M": 1024**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GIB": 1024**3,
    "T": 1024**4,
    "TIB": 1024**4,
    # Decimal units exist on disk labels; accept them so a copied figure means what it says.
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
}
# ASCII digits only: `\d` would also take full-width and other scripts' digits.
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$", re.ASCII)
MAX_SIZE = 2**63 - 1  # bytes: what a 64-bit size holds, far beyond any disk or RAM
SIZE_PATTERN = r"^\d+(\.\d+)?\s*([KMGT]i?B?|[KMGT]B|B)?$"


def parse_size(value: object) -> int:
    """Return a size in bytes; raise ValueError with a fix hint for anything else."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 20GiB or 512MiB, got a boolean")
    size: int | None = None
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size must not be negative")
        size = value
    elif isinstance(value, str) and (match := _SIZE_RE.match(value)):
        number, unit = match.groups()
        factor = _UNITS.get(unit.upper())
        if factor is not None:  # float() of 400 digits is infinity: too large all the same
            size = int(float(number) * factor) if len(number) <= 30 else MAX_SIZE + 1
    shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:36]}...'"
    if size is None:
        raise ValueError(f"{shown} is not a size; write it like 20GiB, 512MiB or 1TiB")
    if size > MAX_SIZE:
        raise ValueError(f"{shown} is larger than any disk or RAM (at most 2^63-1 bytes)")
    return size


def format_size(size: int) -> str:
    """The shortest exact binary-unit spelling of a size (used in messages and renderers)."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": SIZE_PATTERN},
                {"type": "integer", "minimum": 0},
            ],
            "description": "A size: 20GiB, 512MiB, 1TiB, or bytes",
        }
    ),
]
