"""Taint masks decoded with Linux 6.1's table."""

from kmodd.core.modfile.taint import (
    TAINT_FLAGS,
    Taint,
    TaintError,
    decode_taint,
    module_taint_letters,
    parse_module_taint,
    parse_tainted,
)


def test_table_has_linux_6_1s_nineteen_flags_in_bit_order():
    assert [f.letter for f in TAINT_FLAGS] == list("PFSRMBUDAWCIOELKXTN")
    assert [f.bit for f in TAINT_FLAGS] == list(range(19))


def test_module_flags_are_the_ones_a_single_module_can_carry():
    assert "".join(f.letter for f in TAINT_FLAGS if f.module) == "PFCOEKXTN"


def test_zero_is_not_tainted():
    taint = decode_taint(0)
    assert taint.flags == ()
    assert taint.letters == ""
    assert taint.kernel_string == "Not tainted"


def test_proprietary_and_out_of_tree_decode_to_letters_and_meanings():
    taint = decode_taint(1 | 1 << 12)
    assert taint.letters == "PO"
    assert [f.meaning for f in taint.flags] == [
        "proprietary module was loaded",
        'externally-built ("out-of-tree") module was loaded',
    ]


def test_kernel_string_has_one_column_per_flag_with_G_for_a_gpl_kernel():
    assert decode_taint(1 << 12).kernel_string == "Tainted: G" + " " * 11 + "O" + " " * 6
    assert decode_taint(1).kernel_string == "Tainted: P" + " " * 18


def test_bits_newer_than_6_1_are_reported_as_unknown():
    taint = decode_taint(1 << 13 | 1 << 19 | 1 << 21)
    assert taint.letters == "E"
    assert taint.unknown_bits == (19, 21)


def test_proc_tainted_text_parses_with_its_newline():
    taint = parse_tainted("8192\n")
    assert isinstance(taint, Taint)
    assert taint.letters == "E"


def test_proc_tainted_garbage_is_an_error_naming_the_source():
    error = parse_tainted("12x\n")
    assert isinstance(error, TaintError)
    assert str(error) == "/proc/sys/kernel/tainted: not a taint mask: '12x\\n'"


def test_module_taint_file_letters_decode():
    taint = parse_module_taint("OE\n")
    assert isinstance(taint, Taint)
    assert taint.mask == 1 << 12 | 1 << 13


def test_module_taint_with_a_kernel_only_letter_is_an_error():
    assert isinstance(parse_module_taint("W\n"), TaintError)


def test_empty_module_taint_is_untainted():
    assert parse_module_taint("\n") == decode_taint(0)


def test_module_letters_follow_the_table_order():
    assert module_taint_letters(1 << 13 | 1 << 12 | 1) == "POE"
    assert module_taint_letters(1 << 3) == ""  # R is kernel-wide only
