"""Renderers: pure functions spec -> files. No I/O, no sockets, byte-identical on re-run."""
