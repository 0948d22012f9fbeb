"""Host mirror discovery for the node image (the mirror is never hard-coded)."""

from __future__ import annotations

import pathlib

import pytest

from hakvm.lab import mirror

DEB822 = """\
Types: deb deb-src
# a comment
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""


def test_deb822_picks_main_and_security() -> None:
    sources = mirror.parse_deb822(DEB822)
    assert [s.uri for s in sources] == [
        "http://mirror.example/debian",
        "http://security.example/debian-security",
    ]
    assert mirror.pick_mirror(sources, "bookworm") == "http://mirror.example/debian"
    assert mirror.pick_security(sources, "bookworm") == "http://security.example/debian-security"


def test_one_line_with_options() -> None:
    text = (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    )
    sources = mirror.parse_one_line(text)
    assert mirror.pick_mirror(sources, "bookworm") == "http://mirror.example/debian"
    assert mirror.pick_security(sources, "bookworm") is None


def test_no_mirror_is_an_error() -> None:
    with pytest.raises(mirror.MirrorError, match="bookworm"):
        mirror.pick_mirror(mirror.parse_one_line("deb http://x.example/debian trixie main\n"),
                           "bookworm")


def test_host_sources_reads_both_formats(tmp_path: pathlib.Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://one.example/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    sources = mirror.host_sources(tmp_path)
    assert sources[0].uri == "http://one.example/debian"
    chroot = mirror.chroot_sources_list(sources, "bookworm")
    assert chroot.splitlines() == [
        "deb http://one.example/debian bookworm main",
        "deb http://one.example/debian bookworm-updates main",
        "deb http://security.example/debian-security bookworm-security main",
    ]
