"""A carried upstream fix for the resource agents' shell library, for Debian 12 only.

Debian 12's resource-agents (4.12) runs `systemctl daemon-reload` twice on every
VirtualDomain start and live-migration arrival (`systemd_drop_in`, even when its drop-in
file already says the same). Measured on a lab node (2026-12-02): 7-18 s per reload, i.e.
17 s of a 45 s VM start. resource-agents 4.16 writes the file and reloads only when the file
differs (ClusterLabs/resource-agents PR #1983, commit 82958dc).

The fix is carried without touching a packaged file or the CIB (a changed agent type would
restart every VM): Pacemaker's unit gets `OCF_FUNCTIONS_DIR` pointing at a one-function shim
that sources the packaged library, then redefines `systemd_drop_in` as 4.16 has it. Every
agent that sources `${OCF_FUNCTIONS_DIR}/ocf-shellfuncs` gets the packaged library with that
one function replaced; the shim sets `OCF_FUNCTIONS_DIR` back, so whatever an agent sources
next comes from the package. It takes effect when Pacemaker (re)starts on the node.
docs/operating.md says how to audit it and remove it once resource-agents >= 4.16.
"""

from __future__ import annotations

from hakvm.render.base import RenderContext, Rendered, RenderedFile
from hakvm.spec.models import OsFamily

PACKAGED_DIR = "/usr/lib/ocf/lib/heartbeat"
SHIM_DIR = "/usr/local/lib/hakvm/ocf"
SHIM = f"{SHIM_DIR}/ocf-shellfuncs"
PACEMAKER_DROP_IN = "/etc/systemd/system/pacemaker.service.d/hakvm-ocf-functions.conf"

# The body between the markers is upstream's (4.16.0, heartbeat/ocf-shellfuncs.in), tabs
# and all (`<<-EOF` strips leading tabs only).
SHIM_TEXT = f"""\
# Managed by hakvm: changes are overwritten.
# resource-agents 4.16's systemd_drop_in (ClusterLabs/resource-agents PR #1983, commit
# 82958dc) over the packaged library: the drop-in is written, and systemd reloaded, only
# when the file does not already say so. Used through {PACEMAKER_DROP_IN};
# remove both (and restart Pacemaker) once resource-agents >= 4.16 is installed.
OCF_FUNCTIONS_DIR={PACKAGED_DIR}
. {PACKAGED_DIR}/ocf-shellfuncs

# --- upstream 4.16.0 ---
systemd_drop_in()
{{
\tlocal conf_file
\tif [ $# -ne 3 ]; then
\t\tocf_log err "Incorrect number of arguments [$#] for systemd_drop_in."
\tfi

\tsystemdrundir="/run/systemd/system/resource-agents-deps.target.d"
\tmkdir -p "$systemdrundir"
\tconf_file="$systemdrundir/$1.conf"
\tconf_line="$2=$3"
\tif ! {{ [ -f "$conf_file" ] && grep -q "^$conf_line$" "$conf_file" ; }} ; then
\t\tcat > "$conf_file" <<-EOF
\t\t\t[Unit]
\t\t\t$conf_line
\t\t\tEOF
\t\t# The information is accessible through systemd API and systemd would
\t\t# complain about improper permissions.
\t\tchmod o+r "$conf_file"
\t\tsystemctl daemon-reload
\tfi
}}
# --- end of upstream ---
"""

DROP_IN_TEXT = f"""\
# Managed by hakvm: changes are overwritten.
# The resource agents source {SHIM} (resource-agents 4.16's systemd_drop_in,
# carried for Debian 12's 4.12); remove with that file once resource-agents >= 4.16.
[Service]
Environment=OCF_FUNCTIONS_DIR={SHIM_DIR}
"""


def carried(ctx: RenderContext) -> bool:
    """Whether the spec's OS gets the carried fix (Debian 12: resource-agents 4.12)."""
    return ctx.spec.cluster.os is OsFamily.DEBIAN12


def render(ctx: RenderContext) -> Rendered:
    if not carried(ctx):
        return {}
    files = [RenderedFile(SHIM, SHIM_TEXT, 0o644), RenderedFile(PACEMAKER_DROP_IN, DROP_IN_TEXT)]
    return {node.name: list(files) for node in ctx.spec.nodes}
