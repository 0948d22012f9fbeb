"""What every field of every spec model is checked for before its own type's check."""

from __future__ import annotations

import types
import typing
import unicodedata
from typing import Annotated, Union

from pydantic.fields import FieldInfo

# Control (Cc), format (Cf: zero-width, bidi overrides) and line/paragraph separators.
_UNPRINTABLE = ("Cc", "Cf", "Zl", "Zp")


def _takes_bool(annotation: object) -> bool:
    """Whether a field's type has bool in it (``bool``, ``bool | None``, an Annotated bool)."""
    if annotation is bool:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _takes_bool(typing.get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return any(_takes_bool(arg) for arg in typing.get_args(annotation))
    return False


def plain_value(value: object, field: FieldInfo | None) -> object:
    """`value` unless it is one no field should take:
    - text with a control character: a newline or an escape in a value ends up in generated
      files and scripts (an `EOF` line ends the crmsh export's here-document);
    - YAML's true or false in a field that takes no yes/no: pydantic's lax mode reads `true`
      as 1 in a number field (`token_ms: true` would be a 1 ms token)."""
    if isinstance(value, str):
        bad = next((c for c in value if unicodedata.category(c) in _UNPRINTABLE), None)
        if bad is not None:
            raise ValueError(
                f"holds the control character U+{ord(bad):04X}; spec values are plain "
                "printable text: remove it"
            )
    if isinstance(value, bool) and field is not None and not _takes_bool(field.annotation):
        raise ValueError(f"is {str(value).lower()}, a yes/no: this field takes none")
    return value
