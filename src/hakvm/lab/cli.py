"""`hakvm lab ...` commands (placeholder until the lab lands)."""

import click


@click.group()
def lab() -> None:
    """Two local QEMU cluster nodes with bonded links and virtual BMCs."""
