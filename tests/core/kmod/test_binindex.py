"""Reading kmod's `.bin` indexes: exact and wildcard lookups, and damaged files."""

from __future__ import annotations

import os
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmodd.core.depmod.binindex_write import IndexBuilder
from kmodd.core.kmod.aliasindex import AliasIndex, MappedAliasIndex
from kmodd.core.kmod.binindex import BinIndex, IndexFileError
from tests.kobuild import KoSpec, write_ko

KVER = "4.4.4"

ALIASES = {
    "mod-a": ["pci:v00008086d*sv*sd*bc*sc*i*", "usb:v1234p*", "foo-bar", "of:N*T*Cacme,x"],
    "mod-b": ["pci:v*d*sv*sd*bc02sc00i*", "usb:v1234p00[0-4]?", "of:N*T*Cacme,xC*", "foo*"],
    "mod-c": ["mdio:0000????1111", "pci:v00008086d0000100Esv*sd*bc*sc*i*", "foo-bar"],
}


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("tree"))
    kdir = os.path.join(root, "lib/modules", KVER, "kernel")
    os.makedirs(kdir)
    for name, aliases in ALIASES.items():
        write_ko(os.path.join(kdir, f"{name}.ko"),
                 KoSpec(name.replace("-", "_"), modinfo=[f"alias={a}" for a in aliases]
                        + ["license=GPL"], exports=[f"sym_{name[-1]}"]))
    with open(os.path.join(root, "lib/modules", KVER, "modules.order"), "w") as f:
        f.writelines(f"kernel/{name}.ko\n" for name in ALIASES)
    subprocess.run(["depmod", "-b", root, KVER], check=True, capture_output=True)
    return os.path.join(root, "lib/modules", KVER)


def load(moddir: str, name: str) -> BinIndex:
    with open(os.path.join(moddir, name), "rb") as f:
        return BinIndex(f.read(), name)


def test_exact_search_finds_module_dependency_lines(small_tree: str) -> None:
    dep = load(small_tree, "modules.dep.bin")
    assert dep.search("mod_a") == "kernel/mod-a.ko:"
    assert dep.search("mod_") is None
    assert dep.search("mod_a_x") is None


def test_wildcard_search_returns_every_match_by_priority(small_tree: str) -> None:
    alias = load(small_tree, "modules.alias.bin")
    query = "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"
    assert [v for _, v in alias.search_wild(query)] == ["mod_a", "mod_b", "mod_c"]
    assert [v for _, v in alias.search_wild("usb:v1234p0042")] == ["mod_a", "mod_b"]
    assert [v for _, v in alias.search_wild("usb:v1234p0052")] == ["mod_a"]
    assert [v for _, v in alias.search_wild("foo_bar")] == ["mod_a", "mod_b", "mod_c"]
    assert alias.search_wild("nothing") == []


def test_the_same_module_through_two_patterns_is_listed_twice(small_tree: str) -> None:
    alias = load(small_tree, "modules.alias.bin")
    # of:N*T*Cacme,x and of:N*T*Cacme,xC* both match; kmod returns both values.
    assert [v for _, v in alias.search_wild("of:NxTyCacme,xCacme,x")] == ["mod_a", "mod_b"]
    assert [v for _, v in alias.search_wild("of:NxTyCacme,xCother")] == ["mod_b"]


def test_dump_lists_keys_in_byte_order(small_tree: str) -> None:
    alias = load(small_tree, "modules.alias.bin")
    keys = [k for k, _ in alias.dump()]
    assert keys == sorted(keys, key=lambda k: k.encode())
    assert len(keys) == sum(len(a) for a in ALIASES.values())


def test_memory_index_answers_like_the_file(small_tree: str) -> None:
    raw = load(small_tree, "modules.alias.bin")
    mem = AliasIndex(raw.items(), raw)
    for q in ["pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", "usb:v1234p0042",
              "foo_bar", "foox", "mdio:0000abcd1111", "mdio:0000abcd1110",
              "of:NxTyCacme,xCacme,x", "of:NxTyCacme,x", "usb:v1234p0*", "nothing"]:
        assert mem.search_wild(q) == raw.search_wild(q), q


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[:8], "shorter than the header"),
        (lambda b: b"\x12\x34\x56\x78" + b[4:], "bad magic"),
        (lambda b: b[:4] + struct.pack(">I", 0x00030001) + b[8:], "unsupported index version"),
        (lambda b: b[:8] + struct.pack(">I", 0x20000000 | 0x0FFFFFF0) + b[12:],
         "outside the file"),
    ],
)
def test_damaged_files_are_reported_with_file_and_offset(
    small_tree: str, damage: object, reason: str
) -> None:
    with open(os.path.join(small_tree, "modules.alias.bin"), "rb") as f:
        data = f.read()
    with pytest.raises(IndexFileError) as e:
        ix = BinIndex(damage(data), "modules.alias.bin")  # type: ignore[operator]
        ix.items()
    assert reason in str(e.value)
    assert str(e.value).startswith("modules.alias.bin: offset 0x")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_truncated_or_flipped_indexes_never_raise_anything_but_index_errors(
    small_tree: str, data: st.DataObject
) -> None:
    with open(os.path.join(small_tree, "modules.alias.bin"), "rb") as f:
        blob = bytearray(f.read())
    cut = data.draw(st.integers(0, len(blob)))
    blob = blob[:cut]
    for _ in range(data.draw(st.integers(0, 4))):
        if blob:
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] = data.draw(st.integers(0, 255))
    try:
        ix = BinIndex(bytes(blob), "x.bin")
        ix.items()
        ix.search("mod_a")
        ix.search_wild("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00")
        AliasIndex(ix.items(), ix).search_wild("foo_bar")
    except IndexFileError:
        pass


@pytest.mark.oracle
def test_memory_index_equals_file_walk_on_the_debian_tree(debian_tree: object) -> None:
    import random
    import re

    moddir = debian_tree.moddir  # type: ignore[attr-defined]
    raw = load(moddir, "modules.alias.bin")
    items = raw.items()
    mem = AliasIndex(items, raw)
    mapped = MappedAliasIndex(raw)
    rnd = random.Random(5)
    fills = ["", "0", "00008086", "ABC", "C", "T", ":", "pa", "in01", "v", "d", ":PNP0C09:"]
    for key, _, _ in rnd.sample(items, 1500):
        q = re.sub(r"\*", lambda _m: rnd.choice(fills), key)
        q = re.sub(r"\?", lambda _m: rnd.choice("01a"), q)
        q = re.sub(r"\[([^\]]*)\]", lambda m: rnd.choice(m.group(1).replace("-", "") or "x"), q)
        if rnd.random() < 0.2 and q:
            i = rnd.randrange(len(q))
            q = q[:i] + rnd.choice("0aZ:") + q[i + 1 :]
        want = raw.search_wild(q)
        assert mem.search_wild(q) == want, q
        assert mapped.search_wild(q) == want, q


def test_mapped_index_keeping_subtrees_answers_like_the_file_every_time(
        small_tree: str) -> None:
    raw = load(small_tree, "modules.alias.bin")
    mapped = MappedAliasIndex(load(small_tree, "modules.alias.bin"))
    queries = ["pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", "usb:v1234p0042",
               "foo_bar", "foox", "mdio:0000abcd1111", "mdio:0000abcd1110",
               "of:NxTyCacme,xCacme,x", "of:NxTyCacme,x", "usb:v1234p0*", "nothing"]
    for _ in range(2):  # the second round is answered from the subtrees the first decoded
        for q in queries:
            assert mapped.search_wild(q) == raw.search_wild(q), q


_ALIAS_CHARS = "ab*?[]-:"


@settings(max_examples=200, deadline=None)
@given(
    aliases=st.lists(st.tuples(st.text(_ALIAS_CHARS, min_size=1, max_size=7),
                               st.sampled_from(["m1", "m2", "m3"])), min_size=1, max_size=30),
    queries=st.lists(st.text("ab-:", max_size=8), min_size=1, max_size=10),
)
def test_mapped_index_keeping_subtrees_orders_matches_as_libkmods_walk(
        aliases: list[tuple[str, str]], queries: list[str]) -> None:
    """Wildcards at every depth, in node prefixes and as `*`, `?`, `[` children side by
    side, several modules per pattern with their priorities: the same hits, same order."""
    builder = IndexBuilder()
    for n, (pattern, module) in enumerate(aliases):
        builder.add(pattern, module, n % 3)
    data = builder.to_bytes()
    raw = BinIndex(data, "alias.bin")
    mapped = MappedAliasIndex(BinIndex(data, "alias.bin"))
    for q in queries + queries:
        assert mapped.search_wild(q) == raw.search_wild(q), q
