"""/dev/kmsg records: parsing, formatting, picking a module's lines, watching the log."""

import os

from hypothesis import given
from hypothesis import strategies as st

from kmodd.core.autoload.kmsg import (
    KmsgError,
    KmsgRecord,
    format_record,
    module_lines,
    parse_record,
    split_records,
)
from kmodd.core.priority import Priority
from kmodd.system.kmsg import DevKmsg
from kmodd.system.root import Root


def test_a_kernel_record_with_dictionary_parses():
    record = parse_record(b"6,339,5140900,-;NET: Registered protocol family 10\n"
                          b" SUBSYSTEM=net\n DEVICE=+net:lo\n")
    assert record == KmsgRecord(seq=339, level=Priority.INFO, facility=0, usec=5140900, flag="-",
                                text="NET: Registered protocol family 10",
                                fields=(("SUBSYSTEM", "net"), ("DEVICE", "+net:lo")))


def test_extra_header_fields_such_as_caller_are_accepted():
    record = parse_record(b"4,12,99,-,caller=T431;e1000: Unknown symbol x (err -2)\n")
    assert isinstance(record, KmsgRecord)
    assert (record.level, record.text) == (Priority.WARNING, "e1000: Unknown symbol x (err -2)")


def test_user_records_keep_their_facility():
    record = parse_record(b"12,5,7,-;kmodd: hello\n")
    assert isinstance(record, KmsgRecord)
    assert (record.facility, record.level) == (1, Priority.WARNING)


def test_escapes_decode_to_the_original_bytes():
    record = parse_record(b"3,1,2,-;Invalid ELF header magic: != \\x7fELF\n")
    assert isinstance(record, KmsgRecord)
    assert record.text == "Invalid ELF header magic: != \x7fELF"


def test_formatting_escapes_control_bytes_and_backslashes():
    record = KmsgRecord(1, Priority.ERR, 0, 2, "-", "a\\b\nc\x7f")
    assert format_record(record) == b"3,1,2,-;a\\x5cb\\x0ac\\x7f\n"


def test_malformed_records_are_errors_with_a_reason():
    cases = {
        b"no header\n": "no ';' after the header",
        b"1,2;x\n": "header has fewer than 4 fields",
        b"a,b,c,-;x\n": "non-numeric header field",
        b"6,1,1,-;x\nKEY=v\n": "dictionary line does not start with a space",
        b"": "empty",
    }
    for raw, reason in cases.items():
        error = parse_record(raw)
        assert isinstance(error, KmsgError) and error.reason == reason, raw


@given(st.binary(max_size=200))
def test_any_bytes_give_a_record_or_an_error(raw):
    assert isinstance(parse_record(raw), KmsgRecord | KmsgError)


@given(st.text(max_size=80), st.integers(0, 7), st.integers(0, 2**40))
def test_format_then_parse_gives_the_record_back(text, level, seq):
    record = KmsgRecord(seq, Priority(level), 0, seq * 3, "-", text, (("SUBSYSTEM", text),))
    assert parse_record(format_record(record)) == record


def test_a_saved_log_splits_at_records_not_at_dictionary_lines():
    data = b"6,1,1,-;a\n SUBSYSTEM=x\n6,2,2,-;b\n"
    assert split_records(data) == [b"6,1,1,-;a\n SUBSYSTEM=x\n", b"6,2,2,-;b\n"]


def test_module_lines_are_those_prefixed_with_the_name_and_the_blacklist_line():
    records = [parse_record(raw) for raw in (
        b"4,1,1,-;snd_hda_intel: Unknown symbol snd_pcm_new (err -2)\n",
        b"4,2,2,-;snd_hda_codec: something else\n",
        b"3,3,3,-;Module snd_hda_intel is blacklisted\n",
        b"6,4,4,-;usb 1-1: new device\n",
    )]
    picked = module_lines(records, "snd-hda-intel")  # type: ignore[arg-type]
    assert [r.seq for r in picked] == [1, 3]


def test_watch_on_a_log_file_returns_only_records_added_meanwhile(tmp_path):
    root = Root(str(tmp_path))
    os.makedirs(tmp_path / "dev")
    log = tmp_path / "dev" / "kmsg"
    log.write_bytes(b"6,1,1,-;old line\n")
    with DevKmsg(root).watch() as watch:
        with open(log, "ab") as f:
            f.write(b"4,2,2,-;mod: Unknown symbol x (err -2)\n 4,bad\n6,3,3,-;mod: y\n")
        records = watch.records()
    assert [r.text for r in records] == ["mod: y"]
    assert [e.reason for e in watch.errors] == ["dictionary line has no '='"]


def test_watch_without_a_log_yields_nothing_and_says_why(tmp_path):
    with DevKmsg(Root(str(tmp_path))).watch() as watch:
        assert watch.records() == []
    assert watch.problem == f"{tmp_path}/dev/kmsg: No such file or directory"


def test_watch_reads_the_real_dev_kmsg_record_by_record():
    if not os.access("/dev/kmsg", os.R_OK | os.W_OK):
        import pytest
        pytest.skip("/dev/kmsg is not readable and writable here")
    marker = f"kmodd-test-{os.getpid()}: watch"
    with DevKmsg(Root()).watch() as watch:
        with open("/dev/kmsg", "w") as f:
            f.write(f"<12>{marker}\n")
        records = watch.records()
    mine = [r for r in records if r.text == marker]
    assert len(mine) == 1
    assert (mine[0].facility, mine[0].level) == (1, Priority.WARNING)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _log_file(tmp_path, content: bytes = b""):
    """A plain-file /dev/kmsg under a test root: (root, the file)."""
    os.makedirs(tmp_path / "dev")
    log = tmp_path / "dev" / "kmsg"
    log.write_bytes(content)
    return Root(str(tmp_path)), log


def _append(log, record: bytes) -> None:
    with open(log, "ab") as f:
        f.write(record)


def test_a_kept_log_is_opened_once_and_each_watch_sees_only_its_own_records(tmp_path):
    root, log = _log_file(tmp_path, b"6,1,1,-;old line\n")
    kmsg = DevKmsg(root, keep=True)
    before = _open_fds()
    seen = []
    for seq, text in ((2, "first insert"), (3, "second insert")):
        with kmsg.watch() as watch:
            _append(log, f"6,{seq},{seq},-;{text}\n".encode())
            seen.append([r.text for r in watch.records()])
    assert seen == [["first insert"], ["second insert"]]
    assert len(_open_fds() - before) == 1
    kmsg.close()
    assert _open_fds() - before == set()


def test_a_log_not_kept_closes_its_descriptor_after_each_watch(tmp_path):
    os.makedirs(tmp_path / "dev")
    (tmp_path / "dev" / "kmsg").write_bytes(b"")
    before = _open_fds()
    with DevKmsg(Root(str(tmp_path))).watch() as watch:
        assert watch.records() == []
    assert _open_fds() - before == set()


def test_a_watch_reads_nothing_once_left_and_its_descriptor_serves_the_next(tmp_path):
    root, log = _log_file(tmp_path)
    kmsg = DevKmsg(root, keep=True)
    before = _open_fds()
    with kmsg.watch() as first:
        pass
    _append(log, b"6,1,1,-;written after the first watch ended\n")
    with kmsg.watch() as second:
        _append(log, b"6,2,2,-;during the second\n")
        texts = [r.text for r in second.records()]
    assert first.records() == []
    assert texts == ["during the second"]
    assert len(_open_fds() - before) == 1
    kmsg.close()
