"""hakvm's command line (`hakvm`, `python -m hakvm.cli`): the only part that prints or exits."""

from hakvm.cli.main import cli, main

__all__ = ["cli", "main"]
