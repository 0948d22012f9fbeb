"""Files a spec names (SSH keys, known_hosts, BMC password files) are relative to the spec."""

from __future__ import annotations

from pathlib import Path


def resolve(base: Path, file: Path) -> Path:
    """`file` as named in a spec whose directory is `base` (`~` expanded)."""
    file = file.expanduser()
    return file if file.is_absolute() else base / file


def spec_dir(spec_path: Path) -> Path:
    """The directory the spec's relative file names are resolved against."""
    return spec_path.resolve().parent
