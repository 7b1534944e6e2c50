"""Names and aliases are normalised as kmod's three normalisers do."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kmodd.core.kmod.normalize import (
    BadAlias,
    alias_normalize,
    modname_normalize,
    path_ends_with_kmod_ext,
    path_to_modname,
    underscores,
)


@pytest.mark.parametrize(
    ("key", "expected"),
    [("-aa[-bb-]cc-", "_aa[-bb-]cc_"), ("-aa-[b-b]-cc-", "_aa_[b-b]_cc_"), ("a.b-c", "a.b_c")],
)
def test_dashes_become_underscores_except_inside_brackets(key: str, expected: str) -> None:
    assert underscores(key) == expected
    assert alias_normalize(key) == expected


@pytest.mark.parametrize("key", ["a]b", "a[b", "[", "]"])
def test_unpaired_brackets_are_rejected(key: str) -> None:
    with pytest.raises(BadAlias):
        underscores(key)
    with pytest.raises(BadAlias):
        alias_normalize(key)


def test_module_names_stop_at_the_first_dot_and_keep_their_case() -> None:
    assert modname_normalize("snd-hda-intel") == "snd_hda_intel"
    assert modname_normalize("iTCO_wdt") == "iTCO_wdt"
    assert modname_normalize("mod-simple.ko.xz") == "mod_simple"
    assert path_to_modname("/lib/modules/x/kernel/fs/ext4.ko.zst") == "ext4"
    assert path_to_modname("") is None


def test_long_names_are_cut_at_path_max() -> None:
    assert len(modname_normalize("a" * 5000)) == 4095
    assert len(alias_normalize("a" * 5000)) == 4095


@pytest.mark.parametrize(
    ("path", "ok"),
    [("a.ko", True), ("a.ko.gz", True), ("a.ko.xz", True), ("a.ko.zst", True),
     ("a.ko.x", False), ("a.ko.", False), ("a.koz", False)],
)
def test_module_file_extensions(path: str, ok: bool) -> None:
    assert path_ends_with_kmod_ext(path) is ok


@given(st.text(alphabet="ab-_[]:.*", max_size=30))
def test_alias_normalize_only_ever_turns_dashes_into_underscores(key: str) -> None:
    try:
        out = alias_normalize(key)
    except BadAlias:
        return
    assert len(out) == len(key)
    assert all(a == b or (a == "-" and b == "_") for a, b in zip(key, out, strict=True))
    assert alias_normalize(out) == out


@given(st.text(max_size=40))
def test_modname_normalize_has_no_dashes_or_dots(name: str) -> None:
    out = modname_normalize(name)
    assert "-" not in out and "." not in out
