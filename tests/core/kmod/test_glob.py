"""kmodd's fnmatch is glibc's fnmatch(pattern, string, 0) in the C locale, exactly."""

from __future__ import annotations

import ctypes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmodd.core.kmod.glob import compile_pattern, fnmatch, match

_libc = ctypes.CDLL("libc.so.6")
_libc.newlocale.restype = ctypes.c_void_p
_libc.newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
_libc.uselocale.restype = ctypes.c_void_p
_libc.uselocale.argtypes = [ctypes.c_void_p]
_LC_ALL_MASK = 0x1FBF  # glibc: every category
# modprobe never calls setlocale, so it matches in the "C" locale; use it for this thread only.
_C_LOCALE = _libc.newlocale(_LC_ALL_MASK, b"C", None)


def libc_fnmatch(pattern: str, string: str) -> bool:
    old = _libc.uselocale(_C_LOCALE)
    try:
        return bool(_libc.fnmatch(pattern.encode("latin-1"), string.encode("latin-1"), 0) == 0)
    finally:
        _libc.uselocale(old)


# Pieces that exercise every branch of glibc's bracket parser.
_PATTERN_PIECES = [
    "[", "]", "!", "^", "-", "\\", "*", "?", "a", "b", "z", "0", "9", ":", ".", "=", "A", "Z",
    " ", "\x80", "\xff", "[:alpha:]", "[:digit:]", "[:space:]", "[:foo:]", "[.a.]", "[.ab.]",
    "[=a=]", "[:", "[.", "[=", "[!", "[^", "[]",
]
_STRING_CHARS = "ab-]![^:.=\\zA\x80\xff 09Z["


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(st.sampled_from(_PATTERN_PIECES), max_size=8).map("".join),
    st.text(alphabet=_STRING_CHARS, max_size=6),
)
def test_fnmatch_agrees_with_glibc_on_arbitrary_patterns(pattern: str, string: str) -> None:
    want = libc_fnmatch(pattern, string)
    assert fnmatch(pattern, string) == want
    assert compile_pattern(pattern)(string) == want
    assert match(pattern, string) == want


@settings(max_examples=800, deadline=None)
@given(
    st.text(alphabet="ab*?:-", max_size=10),
    st.text(alphabet="ab:-", max_size=10),
)
def test_star_and_question_patterns_agree_with_glibc(pattern: str, string: str) -> None:
    want = libc_fnmatch(pattern, string)
    assert compile_pattern(pattern)(string) == want
    assert match(pattern, string) == want


@pytest.mark.parametrize(
    ("pattern", "string", "expected"),
    [
        ("pci:v*d*sv*sd*bc0Csc03i30*", "pci:v00008086d00002934sv00001AF4sd00001100bc0Csc03i00",
         False),
        ("pci:v*d*sv*sd*bc0Csc03i00*", "pci:v00008086d00002934sv00001AF4sd00001100bc0Csc03i00",
         True),
        ("usb:v13FDp3940d0[0-2]*dc*", "usb:v13FDp3940d0150dc00", True),
        ("usb:v13FDp3940d0[0-2]*dc*", "usb:v13FDp3940d0350dc00", False),
        ("*", "a/b.c\n", True),  # no FNM_PATHNAME, no FNM_PERIOD
        ("a\\*b", "a*b", True),  # backslash escapes
        ("a\\", "a\\", False),  # a trailing backslash never matches
        ("[a", "[a", True),  # an unterminated bracket is a plain `[`
        ("[[:foo:]]", "a", False),  # an unknown class fails the whole pattern
        ("[z-a]", "m", False),  # a reversed range matches nothing
    ],
)
def test_fnmatch_examples(pattern: str, string: str, expected: bool) -> None:
    assert fnmatch(pattern, string) is expected
    assert libc_fnmatch(pattern, string) is expected
