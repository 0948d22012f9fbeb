"""What every field of every spec model is checked for before its own type's check."""

from __future__ import annotations

import types
import typing
import unicodedata
from typing import Annotated, Union

from pydantic.fields import FieldInfo

# Control (Cc), format (Cf: zero-width, bidi overrides) and line/paragraph separators.
_UNPRINTABLE = ("Cc", "Cf", "Zl", "Zp")


def _stray_bool(value: object, annotation: object) -> bool:
    """Whether value is, or holds among a list's items or a dict's values, a bool where
    annotation takes none (``int``, a Literal of words, ``list[IPv4Interface]``: pydantic's
    lax mode made `true` 1, and 0.0.0.1/32 of an address list)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _stray_bool(value, typing.get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        options = typing.get_args(annotation)
        if isinstance(value, bool):
            return all(_stray_bool(value, option) for option in options)
        containers = [o for o in options if typing.get_origin(o) in (list, dict)]
        return any(_stray_bool(value, option) for option in containers)
    if isinstance(value, bool):
        return annotation is not bool
    if origin is list and isinstance(value, list):
        return any(_stray_bool(item, typing.get_args(annotation)[0]) for item in value)
    if origin is dict and isinstance(value, dict):
        return any(_stray_bool(item, typing.get_args(annotation)[1]) for item in value.values())
    return False


def plain_value(value: object, field: FieldInfo | None) -> object:
    """`value` unless it is one no field should take:
    - text with a control character: a newline or an escape in a value ends up in generated
      files and scripts (an `EOF` line ends the crmsh export's here-document);
    - a yes/no where the field's type takes none (`token_ms: true` would be a 1 ms token)."""
    if isinstance(value, str):
        bad = next((c for c in value if unicodedata.category(c) in _UNPRINTABLE), None)
        if bad is not None:
            raise ValueError(
                f"holds the control character U+{ord(bad):04X}; spec values are plain "
                "printable text: remove it"
            )
    if field is not None and _stray_bool(value, field.annotation):
        raise ValueError(
            f"{'is' if isinstance(value, bool) else 'holds'} a yes/no (YAML reads an unquoted "
            "yes, no, on, off, true or false so) where none belongs: quote the word if you "
            "meant it"
        )
    return value
