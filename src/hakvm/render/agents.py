"""A carried upstream fix for the resource agents' shell library, for Debian 12 only.

Debian 12's resource-agents (4.12) runs `systemctl daemon-reload` twice on every
VirtualDomain start and live-migration arrival (`systemd_drop_in`, even when its drop-in
file already says the same). Measured on a lab node (2026-12-02): 7-18 s per reload, about
17 s of a 45 s VM start. resource-agents 4.16 writes the file and reloads only when it
differs (ClusterLabs/resource-agents PR #1983, commit 82958dc).

The packaged library is diverted the Debian way (`dpkg-divert --local`): the packaged file
lives on as `ocf-shellfuncs.distrib`, where package upgrades keep writing it, and an
override in its place sources it, then redefines that one function as 4.16 has it. Every
agent keeps its environment and its `OCF_FUNCTIONS_DIR` (an earlier version pointed that
variable elsewhere: the ocf:pacemaker agents then failed to find `ocf-binaries`). Nothing in
the CIB changes (a changed agent type would restart every VM), nothing restarts: the next
agent run sources the override. docs/operating.md says how to audit and remove it.
"""

from __future__ import annotations

from hakvm.render.base import RenderContext, Rendered, RenderedFile
from hakvm.spec.models import OsFamily

LIBRARY = "/usr/lib/ocf/lib/heartbeat/ocf-shellfuncs"
PACKAGED = f"{LIBRARY}.distrib"
# The override's first line: how the diversion script tells it from the packaged library.
MARK = "# Managed by hakvm: changes are overwritten."

# Divert once, never moving the packaged file away (an agent starting meanwhile must find a
# whole library at LIBRARY): copy it to PACKAGED (synced: a fence right after apply must not
# leave an empty copy), register the diversion without a rename, then apply writes the
# override over LIBRARY atomically. Already diverted to PACKAGED, with a copy there: nothing.
# Anything else stops with an error before any change: a diversion elsewhere, dpkg-divert
# failing, or an override at LIBRARY without the diversion (its copy would make the override
# source itself, and every shell agent would fail).
DIVERT_SCRIPT = (
    "set -eu; p=$1; t=$(dpkg-divert --truename \"$p\"); "
    'if [ "$t" = "$p.distrib" ] && [ -s "$p.distrib" ]; then exit 0; fi; '
    'if [ "$t" != "$p" ]; then echo "$p: diverted to $t, not $p.distrib" >&2; exit 1; fi; '
    f'if grep -q "^{MARK}" "$p"; then '
    'echo "$p is hakvm\'s override but not diverted: restore the packaged file first" >&2; '
    "exit 1; fi; "
    'cp -p -- "$p" "$p.distrib.hakvm-new"; sync -- "$p.distrib.hakvm-new"; '
    'mv -- "$p.distrib.hakvm-new" "$p.distrib"; sync -- "${p%/*}"; '
    'dpkg-divert --quiet --local --no-rename --divert "$p.distrib" --add "$p"'
)

# The body between the markers is upstream's (4.16.0, heartbeat/ocf-shellfuncs.in, whose
# first lines indent with spaces), tabs and all (`<<-EOF` strips leading tabs only).
OVERRIDE_TEXT = f"""\
{MARK} See `dpkg-divert --list '*ocf-shellfuncs'`.
# Debian 12's library ({PACKAGED}, where resource-agents upgrades write it)
# with resource-agents 4.16's systemd_drop_in (ClusterLabs/resource-agents PR #1983, commit
# 82958dc): the drop-in is written, and systemd reloaded, only when the file does not
# already say so. Removed by: dpkg-divert --local --no-rename --remove {LIBRARY}
# && mv {PACKAGED} {LIBRARY}
. {PACKAGED}

# --- upstream 4.16.0 ---
systemd_drop_in()
{{
\tlocal conf_file
\tif [ $# -ne 3 ]; then
          ocf_log err "Incorrect number of arguments [$#] for systemd_drop_in."
        fi

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


def carried(ctx: RenderContext) -> bool:
    """Whether the spec's OS gets the carried fix (Debian 12: resource-agents 4.12)."""
    return ctx.spec.cluster.os is OsFamily.DEBIAN12


def render(ctx: RenderContext) -> Rendered:
    if not carried(ctx):
        return {}
    return {node.name: [RenderedFile(LIBRARY, OVERRIDE_TEXT, 0o644)] for node in ctx.spec.nodes}
