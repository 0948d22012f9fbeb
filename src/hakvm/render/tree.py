"""All renderers together, and the on-disk tree `hakvm render` writes (plus its manifest)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from hakvm.render import (
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


def write_tree(rendered: Rendered, out_dir: Path) -> list[Path]:
    """Write node01/etc/..., cluster/..., manifest.json. Stale files from a previous run of
    this command are removed, so the tree always equals the spec (re-runs are identical)."""
    written: list[Path] = []
    wanted: set[Path] = set()
    for node, files in rendered.items():
        for f in files:
            target = out_dir / node / _relative(f.path)
            wanted.add(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = f.content.encode()
            if not target.exists() or target.read_bytes() != data:
                target.write_bytes(data)
            os.chmod(target, f.mode)
            written.append(target)
    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest(rendered), indent=2, sort_keys=True) + "\n")
    wanted.add(manifest_path)
    old_manifest = out_dir / ".hakvm-rendered"
    previous = old_manifest.read_text().splitlines() if old_manifest.exists() else []
    for stale in previous:
        stale_path = out_dir / stale
        if stale_path not in wanted and stale_path.is_file():
            stale_path.unlink()
    old_manifest.write_text(
        "".join(f"{p.relative_to(out_dir)}\n" for p in sorted(wanted)),
    )
    return written
