"""Logical lines are read as kmod's freadline_wrapped reads them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kmodd.core.kmod.lines import logical_lines


def test_a_backslash_newline_joins_lines_and_counts_both() -> None:
    assert list(logical_lines(b"install x /bin/true \\\n  --cont\nnext\n")) == [
        (2, "install x /bin/true   --cont"),
        (3, "next"),
    ]


def test_a_backslash_before_another_character_is_dropped() -> None:
    assert list(logical_lines(b"wrapped by one \\\\\n")) == [(1, "wrapped by one \\")]
    assert list(logical_lines(b"a\\bc\n")) == [(1, "abc")]


def test_a_backslash_at_end_of_file_is_kept_as_byte_0xff() -> None:
    assert list(logical_lines(b"options a b\\")) == [(1, "options a b\xff")]


def test_last_line_without_newline_is_read_and_empty_file_has_no_lines() -> None:
    assert list(logical_lines(b"a\nb")) == [(1, "a"), (2, "b")]
    assert list(logical_lines(b"")) == []
    assert list(logical_lines(b"\n\n")) == [(1, ""), (2, "")]


def test_a_continuation_at_end_of_file_counts_the_extra_line() -> None:
    assert list(logical_lines(b"a\\\nb")) == [(2, "ab")]


def test_a_nul_byte_ends_the_text_of_its_line() -> None:
    assert list(logical_lines(b"alias a\0b c\nx\n")) == [(1, "alias a"), (2, "x")]


def test_long_lines_survive_whole() -> None:
    long = "x" * 2015
    assert list(logical_lines((long + "\n").encode())) == [(1, long)]


@given(st.binary(max_size=200))
def test_any_bytes_give_lines_whose_numbers_never_decrease(data: bytes) -> None:
    numbers = [n for n, _ in logical_lines(data)]
    assert numbers == sorted(numbers)
    assert all(n <= data.count(b"\n") + 1 for n in numbers)
