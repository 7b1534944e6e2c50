"""errno -> outcome and cause, and kmod 30's message texts."""

import errno as E
import re

from kmodd.core.autoload.outcome import (
    DECLINED_CAUSE,
    INSERT_OUTCOMES,
    Outcome,
    classify_insert,
    classify_remove,
    insmod_insert_error,
    insmod_strerror,
    libkmod_remove_error,
    modprobe_insert_error,
    rmmod_remove_error,
)


def test_success_and_already_loaded_count_as_ok():
    assert classify_insert(0).outcome is Outcome.LOADED
    assert classify_insert(E.EEXIST).outcome is Outcome.ALREADY_LOADED
    assert classify_insert(E.EEXIST).ok


def test_enoent_means_an_unknown_symbol():
    diagnosis = classify_insert(E.ENOENT)
    assert diagnosis.outcome is Outcome.UNKNOWN_SYMBOL
    assert diagnosis.errno_name == "ENOENT"
    assert not diagnosis.ok


def test_each_failure_class_has_its_outcome():
    expected = {
        E.ENOEXEC: Outcome.BAD_FORMAT,
        E.EINVAL: Outcome.INVALID,
        E.EPERM: Outcome.NOT_PERMITTED,
        E.EKEYREJECTED: Outcome.SIGNATURE_REJECTED,
        E.ENODEV: Outcome.NO_DEVICE,
        E.EBUSY: Outcome.BUSY,
        E.ENOSYS: Outcome.NOT_SUPPORTED,
    }
    assert {errno: classify_insert(errno).outcome for errno in expected} == expected


def test_an_errno_outside_the_table_is_the_init_function_failing():
    diagnosis = classify_insert(E.ETIMEDOUT)
    assert diagnosis.outcome is Outcome.INIT_FAILED
    assert diagnosis.cause == "the module's init function failed with Connection timed out"


def test_eexist_with_the_module_absent_afterwards_is_the_module_declining():
    diagnosis = classify_insert(E.EEXIST, declined=True)
    assert (diagnosis.errno_name, diagnosis.outcome, diagnosis.cause, diagnosis.ok) == (
        "EEXIST", Outcome.DECLINED, DECLINED_CAUSE, False)


def test_declined_is_only_said_of_eexist():
    assert classify_insert(E.ENODEV, declined=True).outcome is Outcome.NO_DEVICE
    assert classify_insert(E.EEXIST).outcome is Outcome.ALREADY_LOADED


def test_every_cause_is_plain_words_without_errno_names():
    for outcome, cause in [*INSERT_OUTCOMES.values(), (Outcome.DECLINED, DECLINED_CAUSE)]:
        assert cause and not re.search(r"\bE[A-Z]{3,}\b", cause), outcome


def test_remove_outcomes():
    assert classify_remove(0).outcome is Outcome.REMOVED
    assert classify_remove(E.EWOULDBLOCK).outcome is Outcome.IN_USE
    assert classify_remove(E.ENOENT).outcome is Outcome.NOT_LOADED
    assert classify_remove(E.EBUSY).outcome is Outcome.BUSY


def test_modprobe_texts_are_kmods():
    assert modprobe_insert_error("e1000", E.EEXIST) == \
        "could not insert 'e1000': Module already in kernel\n"
    assert modprobe_insert_error("e1000", E.ENOENT) == (
        "could not insert 'e1000': Unknown symbol in module, or unknown parameter "
        "(see dmesg)\n")
    assert modprobe_insert_error("e1000", E.EPERM) == \
        "could not insert 'e1000': Operation not permitted\n"


def test_insmod_has_its_own_wording_for_four_errnos():
    assert [insmod_strerror(e) for e in (E.ENOEXEC, E.ENOENT, E.ESRCH, E.EINVAL, E.ENODEV)] == [
        "Invalid module format", "Unknown symbol in module", "Module has wrong symbol version",
        "Invalid parameters", "No such device"]
    assert insmod_insert_error("x.ko", E.ENOEXEC) == \
        "could not insert module x.ko: Invalid module format\n"


def test_removal_texts():
    assert rmmod_remove_error("fat", E.ENOSYS) == \
        "could not remove module fat: Function not implemented\n"
    assert libkmod_remove_error("fat", E.EWOULDBLOCK) == \
        "could not remove 'fat': Resource temporarily unavailable\n"
