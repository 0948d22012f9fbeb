"""All renderers together, and the on-disk tree `hakvm render` writes (plus its manifest)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from hakvm.errors import InputError
from hakvm.render import (
    agents,
    cib,
    corosync,
    drbd,
    export,
    firewall,
    hosts,
    libvirt,
    monitoring,
    network,
    support,
)
from hakvm.render.base import CLUSTER, RenderContext, Rendered, RenderedFile

Renderer = Callable[[RenderContext], Rendered]

# Order is the order of the manifest and of apply's phases; each module owns its files.
RENDERERS: tuple[tuple[str, Renderer], ...] = (
    ("network", network.render),
    ("network", support.render),
    ("hosts", hosts.render),
    ("firewall", firewall.render),
    ("drbd", drbd.render),
    ("corosync", corosync.render),
    ("pacemaker", agents.render),
    ("libvirt", libvirt.render),
    ("monitoring", monitoring.render),
    ("cib", cib.render),
    ("export", export.render),
)


class RenderConflictError(Exception):
    pass


def render_all(ctx: RenderContext) -> Rendered:
    """Every file for every node, keyed by node name (and CLUSTER), sorted by path."""
    out: dict[str, dict[str, RenderedFile]] = {n.name: {} for n in ctx.spec.nodes}
    out[CLUSTER] = {}
    for name, renderer in RENDERERS:
        for node, files in renderer(ctx).items():
            bucket = out.setdefault(node, {})
            for f in files:
                if f.path in bucket:
                    raise RenderConflictError(
                        f"{name} and {bucket[f.path].renderer} both render {node}:{f.path}"
                    )
                bucket[f.path] = RenderedFile(
                    f.path, f.content, f.mode, f.owner, f.group, f.renderer or name
                )
    return {node: [files[p] for p in sorted(files)] for node, files in out.items()}


def _relative(path: str) -> str:
    rel = path.lstrip("/")
    if not rel or ".." in Path(rel).parts:
        raise RenderConflictError(f"unsafe rendered path {path!r}")
    return rel


def manifest(rendered: Rendered) -> dict[str, object]:
    return {
        "format": 1,
        "files": [
            {
                "node": node,
                "path": f.path,
                "file": f"{node}/{_relative(f.path)}",
                "mode": f"{f.mode:04o}",
                "owner": f.owner,
                "group": f.group,
                "renderer": f.renderer,
                "sha256": f.sha256(),
            }
            for node in sorted(rendered)
            for f in rendered[node]
        ],
    }


MARKER = ".hakvm-rendered"
MARKER_HEADER = "# hakvm render: the files of the last render into this directory\n"


class UnsafeOutputError(InputError):
    """`render -o` refuses a directory where writing or cleaning up would follow a symlink
    or trust a file list hakvm did not write: nothing outside the tree may be touched."""


def _not_followed(shown: Path) -> UnsafeOutputError:
    return UnsafeOutputError(
        f"{shown} is a symlink or not a directory: render writes only into real directories; "
        "remove it or choose another output directory"
    )


def _open_dir(parent: int, name: str, shown: Path, *, create: bool) -> int:
    """The directory `name` under the open directory `parent`, never through a symlink."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=parent)
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _not_followed(shown) from None
        raise


def _open_tree(out_dir: Path) -> int:
    if not out_dir.is_symlink():
        out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _not_followed(out_dir) from None
        raise


class _Tree:
    """Files under one output directory, every path component opened with O_NOFOLLOW."""

    def __init__(self, out_dir: Path) -> None:
        self.root = out_dir
        self.fd = _open_tree(out_dir)

    def close(self) -> None:
        os.close(self.fd)

    def _parent(self, rel: str, *, create: bool) -> tuple[int, str]:
        *dirs, name = rel.split("/")
        fd = os.dup(self.fd)
        for i, part in enumerate(dirs):
            try:
                nxt = _open_dir(fd, part, self.root.joinpath(*dirs[: i + 1]), create=create)
            finally:
                os.close(fd)
            fd = nxt
        return fd, name

    def _regular(self, fd: int, name: str, rel: str) -> os.stat_result | None:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeOutputError(
                f"{self.root / rel} is a symlink or not a regular file: render never writes "
                "or deletes through one; remove it or choose another output directory"
            )
        return st

    def read(self, rel: str) -> bytes | None:
        fd, name = self._parent(rel, create=False)
        try:
            if self._regular(fd, name, rel) is None:
                return None
            file = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
            with os.fdopen(file, "rb") as handle:
                return handle.read()
        finally:
            os.close(fd)

    def write(self, rel: str, data: bytes, mode: int) -> None:
        """Replace by rename (a hard link to a file elsewhere is replaced, not written
        through); an unchanged file is left as it is but for its mode."""
        fd, name = self._parent(rel, create=True)
        try:
            if self._regular(fd, name, rel) is not None:
                file = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
                with os.fdopen(file, "rb") as handle:
                    same = handle.read() == data
                    if same:
                        os.fchmod(handle.fileno(), mode)
                if same:
                    return
            tmp = f".{name}.hakvm-tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=fd)
            file = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                           dir_fd=fd)  # fmt: skip
            with os.fdopen(file, "wb") as handle:
                handle.write(data)
                os.fchmod(handle.fileno(), mode)
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        finally:
            os.close(fd)

    def remove(self, rel: str) -> None:
        try:
            fd, name = self._parent(rel, create=False)
        except FileNotFoundError:
            return
        try:
            if self._regular(fd, name, rel) is not None:
                os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)


def _marker_entries(tree: _Tree) -> list[str]:
    """The files the last render wrote here, from a marker hakvm wrote: a regular file (not
    a symlink) with hakvm's header and only relative paths inside the tree."""
    data = tree.read(MARKER)
    if data is None:
        return []
    text = data.decode("utf-8", "replace")
    entries = text.removeprefix(MARKER_HEADER).splitlines()
    if not text.startswith(MARKER_HEADER) or not all(map(_safe_entry, entries)):
        raise UnsafeOutputError(
            f"{tree.root / MARKER} was not written by hakvm render (it lists the files render "
            "may delete): remove it, or choose another output directory"
        )
    return entries


def _safe_entry(entry: str) -> bool:
    parts = entry.split("/")
    return (
        entry.isprintable()
        and all(p not in ("", ".", "..") for p in parts)
        and not entry.startswith("/")
    )


def write_tree(rendered: Rendered, out_dir: Path) -> list[Path]:
    """Write node01/etc/..., cluster/..., manifest.json. Stale files from a previous run of
    this command are removed, so the tree always equals the spec (re-runs are identical).

    Nothing outside `out_dir` is ever written or deleted: `out_dir` must not be a symlink,
    no path component below it may be one (each is opened with O_NOFOLLOW), and stale files
    come only from a marker (`.hakvm-rendered`) that hakvm wrote."""
    tree = _Tree(out_dir)
    try:
        previous = _marker_entries(tree)
        written: list[Path] = []
        wanted: set[str] = set()
        for node, files in rendered.items():
            for f in files:
                rel = f"{node}/{_relative(f.path)}"
                wanted.add(rel)
                tree.write(rel, f.content.encode(), f.mode)
                written.append(out_dir / rel)
        text = json.dumps(manifest(rendered), indent=2, sort_keys=True) + "\n"
        tree.write("manifest.json", text.encode(), 0o644)
        wanted.add("manifest.json")
        for stale in previous:
            if stale not in wanted:
                tree.remove(stale)
        listing = MARKER_HEADER + "".join(f"{rel}\n" for rel in sorted(wanted))
        tree.write(MARKER, listing.encode(), 0o644)
    finally:
        tree.close()
    return written
