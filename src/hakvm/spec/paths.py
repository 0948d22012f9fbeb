"""Files a spec names (SSH keys, known_hosts, BMC password files) are relative to the spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator


def _named_here(file: Path) -> Path:
    """A file on this machine as a spec names it: not empty (`Path("")` is the spec's own
    directory), and a `~user` that names a user here (checked once, when the spec is read)."""
    if str(file) in ("", "."):
        raise ValueError("empty: name a file")
    resolve(Path("/"), file)
    return file


def resolve(base: Path, file: Path) -> Path:
    """`file` as named in a spec whose directory is `base` (`~` expanded). ValueError when
    `~user` names no user here."""
    try:
        file = file.expanduser()
    except RuntimeError:  # Path.expanduser's "Could not determine home directory"
        raise ValueError(f"{file}: no such user's home directory on this machine") from None
    return file if file.is_absolute() else base / file


def spec_dir(spec_path: Path) -> Path:
    """The directory the spec's relative file names are resolved against."""
    return spec_path.resolve().parent


LocalPath = Annotated[Path, AfterValidator(_named_here)]
