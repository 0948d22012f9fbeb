"""Edit the spec file for `hakvm vm add/remove`: one VM entry at a time, the rest of the
file byte for byte.

The file is edited as text: the new entry is inserted after the last VM (in that entry's
style and indentation), a removed entry's own lines are cut, and every other byte of the file
(comments, blank lines, key order, quoting) stays as it was. A YAML round-trip dumper cannot
promise that: ruamel.yaml attaches a comment to the node before it, so deleting a VM there
also deletes the comment above the next VM, or one below the list. Each edit is checked
before it is written: the edited text must load to exactly the old data with that one VM
added or removed, and pass the whole-spec validator; then it replaces the file atomically.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from hakvm.errors import InputError
from hakvm.locks import local_lock, spec_lock_path
from hakvm.spec.loader import SpecLoadError, load_spec_file, load_spec_text
from hakvm.spec.models import ClusterSpec
from hakvm.spec.validate import validate_loaded


class SpecEditError(InputError):
    """The edited spec would be invalid or the file cannot be edited safely; nothing was
    written. `lines` are the validator's problems, one line each."""

    def __init__(self, message: str, lines: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.lines = list(lines)


def new_entry(
    name: str,
    memory: str,
    disk: str,
    *,
    vcpus: int = 1,
    preferred_node: str | None = None,
    bridges: Sequence[str] = (),
    mode: str | None = None,
    autostart: bool = True,
    force_stop: bool = False,
) -> dict[str, Any]:
    """A VM entry as the spec spells it; sizes stay as typed (the validator judges them)."""
    entry: dict[str, Any] = {"name": name, "vcpus": vcpus, "memory": memory, "disk": {"size": disk}}
    if mode is not None:
        entry["disk"]["mode"] = mode
    if preferred_node is not None:
        entry["preferred_node"] = preferred_node
    if bridges:
        entry["networks"] = [{"bridge": b} for b in bridges]
    if not autostart:
        entry["autostart"] = False
    if force_stop:
        entry["force_stop"] = True
    return entry


def _flow(value: object) -> str:
    """One line of YAML flow style; safe_dump quotes whatever would not read back as given."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=2**31 - 1)
    return text.removesuffix("\n...\n").rstrip("\n")


def _entry_lines(entry: dict[str, Any], dash_col: int, key_col: int, flow: bool) -> list[str]:
    dash = " " * dash_col + "- "
    if flow:
        return [dash + _flow(entry)]
    # Block keys with one-line values: no nested indentation to match the file's.
    pairs = [_flow({key: value})[1:-1] for key, value in entry.items()]
    return [dash + pairs[0], *(" " * key_col + pair for pair in pairs[1:])]


def _vms_pair(text: str) -> tuple[yaml.Node, yaml.Node] | None:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        raise SpecEditError("the spec's top level is not a mapping")
    for key, value in root.value:
        if key.value == "vms":
            return key, value
    return None


def _content_end(node: yaml.Node) -> int:
    """Where a node's text ends: a block collection's own end mark lies past the comments
    and blank lines that follow it, so take its last value's."""
    block = isinstance(node, yaml.MappingNode | yaml.SequenceNode) and not node.flow_style
    if block and node.value:
        last = node.value[-1]
        return _content_end(last[1] if isinstance(node, yaml.MappingNode) else last)
    return int(node.end_mark.index)


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _line_end(text: str, pos: int) -> int:
    """Index of the end-of-line after `pos` (its '\\r' for CRLF), or the end of the text."""
    if pos > 0 and text[pos - 1] == "\n":
        pos -= 1  # a block scalar's end mark is past its newline
    end = text.find("\n", pos)
    if end == -1:
        return len(text)
    return end - 1 if end > 0 and text[end - 1] == "\r" else end


def _dash_index(text: str, item: yaml.Node) -> int:
    pos = int(item.start_mark.index) - 1
    while pos >= 0 and text[pos] in " \t\r\n":
        pos -= 1
    if pos < 0 or text[pos] != "-" or text[_line_start(text, pos) : pos].strip():
        raise SpecEditError("cannot find the '-' of a VM entry; edit the file by hand")
    return pos


def spec_with_vm(text: str, entry: dict[str, Any]) -> str:
    """`text` with `entry` appended to `vms`, everything else byte for byte."""
    nl = "\r\n" if "\r\n" in text else "\n"
    pair = _vms_pair(text)
    if pair is None:
        # No VMs yet: a block list at the end of the file.
        lines = ["vms:", *_entry_lines(entry, 2, 4, flow=False)]
        sep = "" if not text or text.endswith("\n") else nl
        return text + sep + nl.join(lines) + nl
    _, seq = pair
    if not isinstance(seq, yaml.SequenceNode):
        raise SpecEditError("vms is not a list; edit the file by hand")
    if seq.flow_style:
        if not seq.value:
            at = int(seq.start_mark.index) + 1  # just inside '['
            return text[:at] + _flow(entry) + text[at:]
        at = int(seq.value[-1].end_mark.index)
        return text[:at] + ", " + _flow(entry) + text[at:]
    last = seq.value[-1]
    dash = _dash_index(text, last)
    dash_col = dash - _line_start(text, dash)
    block = isinstance(last, yaml.MappingNode) and not last.flow_style
    key_col = int(last.start_mark.column) if block else dash_col + 2
    at = _line_end(text, _content_end(last))
    return text[:at] + nl + nl.join(_entry_lines(entry, dash_col, key_col, not block)) + text[at:]


def spec_without_vm(text: str, name: str) -> str:
    """`text` without the entry of VM `name`: its own lines (with their inline comments)
    are cut; comment lines around it stay, as they may well be about something else."""
    key, seq = _vms_pair(text) or (None, None)
    items = seq.value if isinstance(seq, yaml.SequenceNode) else []
    index = next((i for i, item in enumerate(items) if _item_name(item) == name), None)
    if key is None or not isinstance(seq, yaml.SequenceNode) or index is None:
        raise SpecEditError(f"vms: no VM named {name!r}")
    item = items[index]
    if seq.flow_style:
        start, end = int(item.start_mark.index), int(item.end_mark.index)
        if index + 1 < len(items):
            end = int(items[index + 1].start_mark.index)
        elif index > 0:
            start = int(items[index - 1].end_mark.index)
        return text[:start] + text[end:]
    start = _line_start(text, _dash_index(text, item))
    end = _line_end(text, _content_end(item))
    end = min(len(text), end + (2 if text[end : end + 2] == "\r\n" else 1))
    out = text[:start] + text[end:]
    if len(items) == 1:
        # `vms:` with nothing under it would read as null: say "no VMs" instead.
        colon = text.index(":", int(key.end_mark.index))
        out = out[: colon + 1] + " []" + out[colon + 1 :]
    return out


def _item_name(item: yaml.Node) -> object:
    if isinstance(item, yaml.MappingNode):
        for key, value in item.value:
            if key.value == "name" and isinstance(value, yaml.ScalarNode):
                return value.value
    return None


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        loaded = load_spec_file(path)
    except SpecLoadError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise SpecEditError(f"{where}: {exc}") from None
    return path.read_text(encoding="utf-8"), loaded.data


def _vm_names(data: dict[str, Any]) -> list[object]:
    vms = data.get("vms") or []
    return [v.get("name") for v in vms if isinstance(v, dict)] if isinstance(vms, list) else []


def _commit(
    path: Path, new_text: str, expected: dict[str, Any], *, write: bool = True
) -> ClusterSpec:
    """Write `new_text` (unless not `write`) if it loads to `expected` and the whole spec
    validates."""
    try:
        loaded = load_spec_text(new_text, path)
    except SpecLoadError as exc:
        raise SpecEditError(f"{path}: the edit would not parse ({exc}); edit it by hand") from None
    if loaded.data != expected:
        raise SpecEditError(f"{path}: cannot edit this file's layout safely; edit it by hand")
    report = validate_loaded(loaded, str(path))
    if not report.ok or report.spec is None:
        lines = [p.format(str(path)) for p in report.errors]
        raise SpecEditError(
            f"{path}: {len(lines)} error(s) with that change; the file was not changed", lines
        )
    if write:
        write_atomic(path, new_text)
    return report.spec


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """The spec lock (hakvm.locks); a file that is not there is the loader's to report."""
    if not path.is_file():
        _read(path)
    with local_lock(spec_lock_path(path), f"the spec file {path}"):
        yield


def add_to_spec(path: Path, entry: dict[str, Any], *, check_only: bool = False) -> ClusterSpec:
    """Append `entry` to the spec file; raise SpecEditError (file untouched) on any problem.
    `check_only`: the same checks, nothing written (bad input found before any node is asked).

    The spec lock is held from reading the file to writing it back: two edits at once would
    otherwise both start from the same text, and the second write would drop the first VM."""
    with _locked(path):
        text, data = _read(path)
        if entry["name"] in _vm_names(data):
            raise SpecEditError(f"{path}: vms: a VM named {entry['name']!r} already exists")
        expected = {**data, "vms": [*(data.get("vms") or []), entry]}
        return _commit(path, spec_with_vm(text, entry), expected, write=not check_only)


def remove_from_spec(path: Path, name: str) -> ClusterSpec:
    """Drop VM `name` from the spec file; raise SpecEditError (file untouched) otherwise.
    Under the spec lock, as add_to_spec."""
    with _locked(path):
        text, data = _read(path)
        if name not in _vm_names(data):
            raise SpecEditError(f"{path}: vms: no VM named {name!r}")
        remaining = [v for v in data["vms"] if not (isinstance(v, dict) and v.get("name") == name)]
        return _commit(path, spec_without_vm(text, name), {**data, "vms": remaining})


def write_atomic(path: Path, text: str) -> None:
    """Replace the file by rename (never half-written), keeping its mode and, where the
    user may, its owner; a symlinked spec is written through the link."""
    target = path.resolve()
    old = target.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, stat.S_IMODE(old.st_mode))
        with contextlib.suppress(PermissionError):
            os.chown(tmp, old.st_uid, old.st_gid)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
