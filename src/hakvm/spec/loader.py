"""Read a spec file safely and remember the line of every value, for file:line messages.

PyYAML's composer gives nodes with marks; we build plain Python data from those nodes
ourselves so that each field path maps to its line, duplicate keys are caught (PyYAML would
silently keep the last one) and alias bombs cannot blow up memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hakvm.errors import InputError

MAX_SPEC_BYTES = 1024 * 1024
MAX_NODES = 100_000

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
    def __init__(self) -> None:
        self.lines: dict[PathKey, int] = {}
        self.count = 0

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecLoadError("too many YAML values (alias expansion?); simplify the file")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
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
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    @staticmethod
    def _scalar(node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise SpecLoadError("a key must be a plain value", node.start_mark.line + 1)
        # Timestamps would turn dates into datetime objects; nothing in a spec is a date.
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value
        constructor = yaml.SafeLoader(node.value)
        try:
            return constructor.construct_object(node)
        finally:
            constructor.dispose()


def load_spec_text(text: str, path: Path) -> LoadedSpec:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "unreadable YAML"
        raise SpecLoadError(f"not valid YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise SpecLoadError(f"not valid YAML: {exc}") from None
    if root is None:
        raise SpecLoadError("the file is empty: a spec needs cluster, nodes and heartbeat", 1)
    builder = _Builder()
    data = builder.build(root, ())
    if not isinstance(data, dict):
        raise SpecLoadError(
            "the top level must be a mapping with cluster, nodes, heartbeat and vms", 1
        )
    return LoadedSpec(path=path, data=data, lines=builder.lines)


def load_spec_file(path: Path) -> LoadedSpec:
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecLoadError(
                f"the file is {size} bytes, larger than the {MAX_SPEC_BYTES} a spec may be"
            )
        raw = path.read_bytes()
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
