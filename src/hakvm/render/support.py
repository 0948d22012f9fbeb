"""Helper scripts apply installs next to the network files: the rollback that restores the
last network configuration that kept the management path, and the commit that records it.
They depend only on the OS family, never on user data."""

from __future__ import annotations

from hakvm.render.base import RenderContext, Rendered, RenderedFile
from hakvm.spec.models import OsFamily

ROLLBACK = "/usr/local/lib/hakvm/net-rollback"
COMMIT = "/usr/local/lib/hakvm/net-commit"
HEADER = "#!/bin/sh\n# Managed by hakvm: changes are overwritten.\n"

DEBIAN_ROLLBACK = (
    HEADER
    + """\
# Run by a transient systemd timer when a network change lost the management path: take the
# hakvm interfaces down, restore the last good file (none: remove ours), bring them up.
set -u
cur=/etc/network/interfaces.d/hakvm
prev=/var/lib/hakvm/net-previous/hakvm
if [ -f "$cur" ]; then
    for i in $(ifquery -i "$cur" --list -a 2>/dev/null); do ifdown --force -i "$cur" "$i"; done
fi
if [ -f "$prev" ]; then
    cp "$prev" "$cur"
    for i in $(ifquery -i "$cur" --list -a 2>/dev/null); do ifup -i "$cur" "$i"; done
else
    rm -f "$cur"
fi
"""
)
DEBIAN_COMMIT = (
    HEADER
    + """\
# The current hakvm network file kept the management path: remember it as the last good one.
set -eu
mkdir -p /var/lib/hakvm/net-previous
cp /etc/network/interfaces.d/hakvm /var/lib/hakvm/net-previous/hakvm
"""
)
RHEL_ROLLBACK = (
    HEADER
    + """\
set -u
dir=/etc/NetworkManager/system-connections
prev=/var/lib/hakvm/net-previous
for f in "$dir"/hakvm-*.nmconnection; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .nmconnection)
    nmcli connection down "$name" 2>/dev/null
    rm -f "$f"
done
if [ -d "$prev" ]; then cp -p "$prev"/hakvm-*.nmconnection "$dir"/ 2>/dev/null; fi
nmcli connection reload
for f in "$dir"/hakvm-*.nmconnection; do
    [ -e "$f" ] && nmcli connection up "$(basename "$f" .nmconnection)"
done
exit 0
"""
)
RHEL_COMMIT = (
    HEADER
    + """\
set -eu
rm -rf /var/lib/hakvm/net-previous
mkdir -p /var/lib/hakvm/net-previous
cp -p /etc/NetworkManager/system-connections/hakvm-*.nmconnection /var/lib/hakvm/net-previous/
"""
)


def render(ctx: RenderContext) -> Rendered:
    debian = ctx.spec.cluster.os is OsFamily.DEBIAN12
    files = [
        RenderedFile(ROLLBACK, DEBIAN_ROLLBACK if debian else RHEL_ROLLBACK, 0o755),
        RenderedFile(COMMIT, DEBIAN_COMMIT if debian else RHEL_COMMIT, 0o755),
    ]
    return {node.name: list(files) for node in ctx.spec.nodes}
