"""hakvm's managed blocks: the lines it owns inside a file it does not own.

/etc/hosts, root's ssh_config and authorized_keys are shared with the admin: hakvm writes
only between `BEGIN` and `END` and keeps every other line byte for byte.
"""

from __future__ import annotations

import re

from hakvm.errors import StateError

BEGIN = "# BEGIN hakvm managed block"
END = "# END hakvm managed block"


class BlockMergeError(StateError, ValueError):
    """The existing file has unbalanced hakvm markers: a human must look at it."""


_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")


def lines(text: str) -> list[str]:
    """Lines with their terminators, split on '\\n' only (what the resolver does)."""
    return _LINE.findall(text)


def marker(line: str) -> str | None:
    stripped = line.strip()
    return stripped if stripped in (BEGIN, END) else None


def spans(text_lines: list[str]) -> list[tuple[int, int]]:
    """(begin, end) line indexes of every managed block; raise on unbalanced markers."""
    found = []
    start: int | None = None
    for i, line in enumerate(text_lines):
        kind = marker(line)
        if kind == BEGIN:
            if start is not None:
                raise BlockMergeError(
                    f"line {i + 1}: a second '{BEGIN}' before the '{END}' of the block opened "
                    f"on line {start + 1}; fix /etc/hosts by hand"
                )
            start = i
        elif kind == END:
            if start is None:
                raise BlockMergeError(
                    f"line {i + 1}: '{END}' without a '{BEGIN}' before it; fix /etc/hosts by hand"
                )
            found.append((start, i))
            start = None
    if start is not None:
        raise BlockMergeError(
            f"line {start + 1}: '{BEGIN}' is never closed by '{END}'; fix /etc/hosts by hand "
            f"(merging would otherwise eat the rest of the file)"
        )
    return found


def merge_block(existing: str, block: str) -> str:
    """`existing` with its managed block replaced in place by `block`, or `block` appended.

    Every line outside the block is kept byte for byte (only a missing final newline is added
    before an appended block). A second, stray managed block is removed. Idempotent:
    `merge_block(merge_block(x, b), b) == merge_block(x, b)`.
    """
    block_lines = lines(block)
    if (
        not block.endswith("\n")
        or len(block_lines) < 2
        or marker(block_lines[0]) != BEGIN
        or marker(block_lines[-1]) != END
        or any(marker(line) for line in block_lines[1:-1])
    ):
        raise ValueError("block must be one managed block: BEGIN line ... END line, newline-ended")
    text_lines = lines(existing)
    found = spans(text_lines)
    if not found:
        prefix = existing if not existing or existing.endswith("\n") else existing + "\n"
        return prefix + block
    out: list[str] = []
    pos = 0
    for number, (start, end) in enumerate(found):
        out.extend(text_lines[pos:start])
        if number == 0:
            out.append(block)
        pos = end + 1
    out.extend(text_lines[pos:])
    return "".join(out)
