"""Read a spec file safely and remember the line of every value, for file:line messages.

PyYAML's composer gives nodes with marks; we build plain Python data from those nodes
ourselves so that each field path maps to its line, duplicate keys are caught (PyYAML would
silently keep the last one) and alias bombs cannot blow up memory. Whatever the file holds,
the answer is a SpecLoadError of one line: a device or a huge file is not read, NUL and
other control characters, deep nesting and self-containing aliases are refused.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hakvm.errors import InputError

MAX_SPEC_BYTES = 1024 * 1024  # read at most this much: a spec is a few KiB
MAX_NODES = 100_000  # values after alias expansion (a billion laughs stops here)
MAX_DEPTH = 64  # nesting levels (a spec has about six)

PathKey = tuple[str | int, ...]


class SpecLoadError(InputError):
    """The file cannot be read as a spec at all; `line` is 1-based or None."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class LoadedSpec:
    path: Path
    data: Any
    lines: dict[PathKey, int]  # field path -> 1-based line of its value (or key)

    def line_of(self, path: PathKey) -> int | None:
        """The line of the deepest known prefix of `path` (a missing key: its parent)."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), None)


class _Builder:
    """Plain data from composed nodes, each value's line remembered. Aliases are expanded
    here (the composer shares nodes), so this is where expansion and nesting are bounded."""

    def __init__(self) -> None:
        self.lines: dict[PathKey, int] = {}
        self.count = 0
        self.open: set[int] = set()  # ids of the collections being built (self-reference)
        # One safe constructor for every scalar: a Loader per value would re-read the
        # value as a YAML stream (an escaped NUL in it then crashed the reader).
        self.constructor = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.count += 1
        line = node.start_mark.line + 1
        if self.count > MAX_NODES:
            raise SpecLoadError(
                f"too many YAML values (over {MAX_NODES}: an alias expanding into copies of "
                "copies?); simplify the file",
                line,
            )
        if len(path) > MAX_DEPTH:
            raise SpecLoadError(f"nested deeper than {MAX_DEPTH} levels; flatten the file", line)
        self.lines.setdefault(path, line)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if id(node) in self.open:
                raise SpecLoadError("an alias refers to a collection that contains it", line)
            self.open.add(id(node))
            try:
                return self._collection(node, path)
            finally:
                self.open.discard(id(node))
        return self._scalar(node, path)

    def _collection(self, node: yaml.MappingNode | yaml.SequenceNode, path: PathKey) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecLoadError(
                    "YAML merge keys (<<) are not supported in a spec; write the values out",
                    key_node.start_mark.line + 1,
                )
            key = self._scalar(key_node)
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise SpecLoadError(
                    f"keys must be plain names, got {key!r}", key_node.start_mark.line + 1
                )
            if key in out:
                where = ".".join(str(p) for p in (*path, key))
                raise SpecLoadError(
                    f"duplicate key {where!r}: keep only one", key_node.start_mark.line + 1
                )
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, (*path, key))
        return out

    def _scalar(self, node: yaml.Node, path: PathKey = ()) -> Any:
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.ScalarNode):
            raise SpecLoadError("a key must be a plain value", line)
        # Timestamps would turn dates into datetime objects; nothing in a spec is a date.
        if node.tag == "tag:yaml.org,2002:timestamp":
            value: Any = node.value
        else:
            try:
                value = self.constructor.construct_object(node)
            except yaml.YAMLError as exc:
                raise SpecLoadError(f"not valid YAML: {_one_line(exc)}", line) from None
        if isinstance(value, str) and (bad := _CONTROL.search(value)):
            field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
            raise SpecLoadError(
                f"{field.lstrip('.') + ': ' if field else ''}a control character "
                f"(U+{ord(bad[0]):04X}) in {value[:40]!r}; a spec is plain text: remove it",
                line,
            )
        return value


# What an escape ("\0", "\x07", ...) can put in a string and a spec must not hold: C0
# controls but tab and line breaks, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _one_line(exc: yaml.YAMLError) -> str:
    """A YAML error as one line (PyYAML's own text spans several)."""
    if isinstance(exc, yaml.reader.ReaderError):
        return f"unacceptable character #x{exc.character:04x}: special characters are not allowed"
    if isinstance(exc, yaml.MarkedYAMLError):
        return " ".join(str(exc.problem or exc.context or "unreadable YAML").split())
    return " ".join(str(exc).split()) or type(exc).__name__


def _line_of(exc: yaml.YAMLError, text: str) -> int | None:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        return mark.line + 1 if mark else None
    if isinstance(exc, yaml.reader.ReaderError):
        return text.count("\n", 0, exc.position) + 1
    return None


def _check_depth(text: str) -> None:
    """Refuse deep nesting before composing: PyYAML's composer recurses once per level."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise SpecLoadError(
                    f"nested deeper than {MAX_DEPTH} levels; flatten the file",
                    mark.line + 1 if mark else None,
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_spec_text(text: str, path: Path) -> LoadedSpec:
    try:
        _check_depth(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise SpecLoadError(f"not valid YAML: {_one_line(exc)}", _line_of(exc, text)) from None
    if root is None:
        raise SpecLoadError("the file is empty: a spec needs cluster, nodes and heartbeat", 1)
    builder = _Builder()
    data = builder.build(root, ())
    if not isinstance(data, dict):
        raise SpecLoadError(
            "the top level must be a mapping with cluster, nodes, heartbeat and vms", 1
        )
    return LoadedSpec(path=path, data=data, lines=builder.lines)


def _read_bounded(path: Path) -> bytes:
    """At most MAX_SPEC_BYTES from a regular file; never from a device, pipe or socket."""
    if path.is_dir():
        raise SpecLoadError("is a directory, not a spec file")
    if path.exists() and not path.is_file():
        raise SpecLoadError("not a regular file (a device, pipe or socket); a spec is a file")
    # O_NONBLOCK: a FIFO put there since the check must not hang the open.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SpecLoadError("not a regular file (a device, pipe or socket); a spec is a file")
        raw = handle.read(MAX_SPEC_BYTES + 1)
    if len(raw) > MAX_SPEC_BYTES:
        size = max(info.st_size, len(raw))
        raise SpecLoadError(
            f"the file is {size} bytes, larger than the {MAX_SPEC_BYTES} a spec may be"
        )
    return raw


def load_spec_file(path: Path) -> LoadedSpec:
    try:
        raw = _read_bounded(path)
    except FileNotFoundError:
        raise SpecLoadError("no such file") from None
    except IsADirectoryError:
        raise SpecLoadError("is a directory, not a spec file") from None
    except OSError as exc:
        raise SpecLoadError(f"cannot read the file: {exc.strerror}") from None
    if b"\x00" in raw:
        raise SpecLoadError("the file is binary, not a YAML spec")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecLoadError(f"not UTF-8 text (byte {exc.start}); save the spec as UTF-8") from None
    if not text.strip():
        raise SpecLoadError("the file is empty: a spec needs cluster, nodes and heartbeat", 1)
    return load_spec_text(text, path)
