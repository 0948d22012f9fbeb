"""/etc/hosts managed block: content, merge rules, properties (hypothesis) and glibc's answer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hakvm.render import hosts
from hakvm.render.base import RenderContext
from tests.render.checkers.hosts import resolve
from tests.render.examples import example_data, render_context

DEBIAN_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "127.0.1.1\tnode01.example.org\tnode01\n"
    "\n"
    "# The following lines are desirable for IPv6 capable hosts\n"
    "::1     localhost ip6-localhost ip6-loopback\n"
    "ff02::1 ip6-allnodes\n"
    "ff02::2 ip6-allrouters\n"
)


def _ctx(example: str) -> RenderContext:
    return render_context(example_data(example))


def _entries(block: str) -> list[list[str]]:
    return [
        line.split() for line in block.splitlines() if line.strip() and not line.startswith("#")
    ]


def test_block_lab() -> None:
    block = hosts.hosts_block(_ctx("lab"))
    lines = block.splitlines()
    assert lines[0] == hosts.BEGIN and lines[-1] == hosts.END
    assert _entries(block) == [
        ["10.88.1.1", "node01", "node01-link0"],
        ["10.88.1.2", "node02", "node02-link0"],
        ["10.88.0.1", "node01-link1"],
        ["10.88.0.2", "node02-link1"],
        ["10.88.2.1", "node01-migration"],  # the replication network (bond0.20)
        ["10.88.2.2", "node02-migration"],
    ]
    data = example_data("lab")  # replication on a heartbeat link: the alias goes there
    del data["replication"]
    assert _entries(hosts.hosts_block(render_context(data)))[2:] == [
        ["10.88.0.1", "node01-link1", "node01-migration"],
        ["10.88.0.2", "node02-link1", "node02-migration"],
    ]


def test_block_seed_one_address_per_name() -> None:
    entries = _entries(hosts.hosts_block(_ctx("seed")))
    names = [name for entry in entries for name in entry[1:]]
    assert len(names) == len(set(names))
    assert ["10.0.20.1", "node01", "node01-link0"] in entries
    assert ["10.0.40.2", "node02-migration"] in entries


def test_render_fragment_same_on_both_nodes() -> None:
    ctx = _ctx("lab")
    rendered = hosts.render(ctx)
    files = [f for node in ("node01", "node02") for f in rendered[node]]
    assert {(f.path, f.mode) for f in files} == {(hosts.FRAGMENT_PATH, 0o644)}
    assert files[0].content == files[1].content == hosts.hosts_block(ctx)
    assert hosts.FRAGMENT_PATH != hosts.HOSTS_PATH  # never the whole /etc/hosts


def test_merge_appends_and_replaces_in_place() -> None:
    block = hosts.hosts_block(_ctx("lab"))
    merged = hosts.merge_hosts(DEBIAN_HOSTS, block)
    assert merged == DEBIAN_HOSTS + block
    # An old block in the middle is replaced where it is; the rest is untouched.
    old = f"{hosts.BEGIN}\n10.0.0.1 node01\n{hosts.END}\n"
    existing = "127.0.0.1 localhost\n" + old + "10.1.1.1 other\n"
    assert hosts.merge_hosts(existing, block) == (
        "127.0.0.1 localhost\n" + block + "10.1.1.1 other\n"
    )


def test_merge_edge_cases() -> None:
    block = hosts.hosts_block(_ctx("lab"))
    assert hosts.merge_hosts("", block) == block
    assert hosts.merge_hosts("127.0.0.1 localhost", block) == "127.0.0.1 localhost\n" + block
    crlf = "127.0.0.1 localhost\r\n10.1.1.1 x\r\n"
    assert hosts.merge_hosts(crlf, block) == crlf + block
    # An old block ending the file without a newline, and a stray second block.
    old = f"{hosts.BEGIN}\nold\n{hosts.END}"
    assert hosts.merge_hosts("a\n" + old, block) == "a\n" + block
    twice = f"a\n{old}\nb\n{old}\nc\n"
    assert hosts.merge_hosts(twice, block) == "a\n" + block + "b\nc\n"


@pytest.mark.parametrize(
    "existing",
    [
        f"{hosts.BEGIN}\n10.0.0.1 a\n",  # never closed: would eat the rest of the file
        f"10.0.0.1 a\n{hosts.END}\n",
        f"{hosts.BEGIN}\n{hosts.BEGIN}\n{hosts.END}\n",
    ],
)
def test_merge_refuses_unbalanced_markers(existing: str) -> None:
    with pytest.raises(hosts.HostsMergeError):
        hosts.merge_hosts(existing, hosts.hosts_block(_ctx("lab")))


def test_merge_refuses_a_bad_block() -> None:
    with pytest.raises(ValueError, match="one managed block"):
        hosts.merge_hosts("", "10.0.0.1 node01\n")


def test_conflicts() -> None:
    block = hosts.hosts_block(_ctx("lab"))
    existing = DEBIAN_HOSTS + "10.0.10.254 node02 node02.localdomain\n10.9.9.9 unrelated\n"
    merged = hosts.merge_hosts(existing, block)
    assert hosts.hosts_conflicts(merged, block) == [
        "127.0.1.1\tnode01.example.org\tnode01",
        "10.0.10.254 node02 node02.localdomain",
    ]
    assert hosts.hosts_conflicts("127.0.0.1 localhost\n" + block, block) == []


# --- properties ----------------------------------------------------------------------------

_MARKERS = {hosts.BEGIN, hosts.END}
FOREIGN_LINE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n"),
    max_size=40,
).filter(lambda line: line.strip() not in _MARKERS)
# Lines that look like ours but are not markers must be kept too.
TRICKY_LINE = st.sampled_from(
    [f"{hosts.BEGIN} x", f"#{hosts.END}", "# BEGIN hakvm", "\r", "10.0.0.1 node01\r"]
)
LINES = st.lists(st.one_of(FOREIGN_LINE, TRICKY_LINE), max_size=12)


@st.composite
def existing_files(draw: st.DrawFn) -> tuple[str, list[str]]:
    """An /etc/hosts text (maybe with an old block at a random place, maybe no final
    newline) and its foreign lines."""
    foreign = draw(LINES)
    lines = [line + "\n" for line in foreign]
    if draw(st.booleans()):
        old = [hosts.BEGIN + "\n", *(line + "\n" for line in draw(LINES)), hosts.END + "\n"]
        at = draw(st.integers(0, len(lines)))
        lines[at:at] = old
    text = "".join(lines)
    if lines and lines[-1] != "\n" and draw(st.booleans()):
        text = text[:-1]  # no final newline (an empty last line cannot lose it)
    return text, foreign


def _foreign_lines(text: str, block: str) -> list[str]:
    start = text.index(block)
    rest = text[:start] + text[start + len(block) :]
    if not rest:
        return []
    return rest.split("\n")[:-1] if rest.endswith("\n") else rest.split("\n")


BLOCK = hosts.hosts_block(_ctx("lab"))


@settings(max_examples=300, deadline=None)
@given(existing_files())
def test_merge_is_idempotent_and_keeps_foreign_lines(case: tuple[str, list[str]]) -> None:
    existing, foreign = case
    merged = hosts.merge_hosts(existing, BLOCK)
    assert hosts.merge_hosts(merged, BLOCK) == merged
    assert [ln.strip() for ln in merged.split("\n")].count(hosts.BEGIN) == 1
    assert _foreign_lines(merged, BLOCK) == foreign
    # Byte for byte: everything before the old block's place is an unchanged prefix.
    if all(ln.strip() != hosts.BEGIN for ln in existing.split("\n")):
        assert merged.startswith(existing)


# --- glibc's answer (realtool) ---------------------------------------------------------------


@pytest.mark.realtool
def test_glibc_resolves_names_through_the_block() -> None:
    block = hosts.hosts_block(_ctx("lab"))
    merged = hosts.merge_hosts(DEBIAN_HOSTS, block)
    got = resolve(merged, ["node02", "node01-link1", "node02-link1", "localhost"])
    # The peer's name: its link 0 address and nothing else (libvirt migrates over it).
    assert got["node02"] == ["10.88.1.2"]
    assert got["node01-link1"] == ["10.88.0.1"]
    assert got["node02-link1"] == ["10.88.0.2"]
    assert got["localhost"] == ["127.0.0.1"]


@pytest.mark.realtool
def test_resolver_check_can_fail() -> None:
    """A foreign line ahead of the block wins: the check sees it (hosts_conflicts reports it)."""
    block = hosts.hosts_block(_ctx("lab"))
    merged = hosts.merge_hosts("10.0.10.254 node02\n", block)
    got = resolve(merged, ["node02"])
    assert got["node02"][0] == "10.0.10.254"
    assert hosts.hosts_conflicts(merged, block) == ["10.0.10.254 node02"]
