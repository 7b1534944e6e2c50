"""The outcomes and how loud and in which words each is told, errno -> cause, and kmod 30's
message texts."""

import errno as E
import re

import pytest

from kmodd.core.autoload.outcome import (
    DECLINED_EXPLANATION,
    INSERT_CAUSES,
    TELLING,
    Cause,
    Outcome,
    Request,
    classify_insert,
    classify_remove,
    insert_outcome,
    insmod_insert_error,
    insmod_strerror,
    libkmod_remove_error,
    log_level,
    message,
    modprobe_insert_error,
    rmmod_remove_error,
)
from kmodd.core.kmod.libkmodlog import Priority


def test_success_and_already_loaded_count_as_ok():
    assert classify_insert(0).cause is Cause.LOADED
    assert classify_insert(E.EEXIST).cause is Cause.ALREADY_LOADED
    assert classify_insert(E.EEXIST).ok


def test_enoent_means_an_unknown_symbol():
    diagnosis = classify_insert(E.ENOENT)
    assert diagnosis.cause is Cause.UNKNOWN_SYMBOL
    assert diagnosis.errno_name == "ENOENT"
    assert not diagnosis.ok


def test_each_failure_class_has_its_cause():
    expected = {
        E.ENOEXEC: Cause.BAD_FORMAT,
        E.EINVAL: Cause.INVALID,
        E.EPERM: Cause.NOT_PERMITTED,
        E.EKEYREJECTED: Cause.SIGNATURE_REJECTED,
        E.ENODEV: Cause.NO_DEVICE,
        E.EBUSY: Cause.BUSY,
        E.ENOSYS: Cause.NOT_SUPPORTED,
    }
    assert {errno: classify_insert(errno).cause for errno in expected} == expected


def test_an_errno_outside_the_table_is_the_init_function_failing():
    diagnosis = classify_insert(E.ETIMEDOUT)
    assert diagnosis.cause is Cause.INIT_FAILED
    assert diagnosis.explanation == "the module's init function failed with Connection timed out"


def test_eexist_with_the_module_absent_afterwards_is_the_module_declining():
    diagnosis = classify_insert(E.EEXIST, declined=True)
    assert (diagnosis.errno_name, diagnosis.cause, diagnosis.explanation, diagnosis.ok) == (
        "EEXIST", Cause.DECLINED, DECLINED_EXPLANATION, False)


def test_declined_is_only_said_of_eexist():
    assert classify_insert(E.ENODEV, declined=True).cause is Cause.NO_DEVICE
    assert classify_insert(E.EEXIST).cause is Cause.ALREADY_LOADED


def test_every_explanation_is_plain_words_without_errno_names():
    for cause, explanation in [*INSERT_CAUSES.values(), (Cause.DECLINED, DECLINED_EXPLANATION)]:
        assert explanation and not re.search(r"\bE[A-Z]{3,}\b", explanation), cause


def test_remove_causes():
    assert classify_remove(0).cause is Cause.REMOVED
    assert classify_remove(E.EWOULDBLOCK).cause is Cause.IN_USE
    assert classify_remove(E.ENOENT).cause is Cause.NOT_LOADED
    assert classify_remove(E.EBUSY).cause is Cause.BUSY


@pytest.mark.parametrize("errno,joined,denied,outcome", [
    (0, False, False, Outcome.INSERTED),
    (0, True, False, Outcome.ALREADY_LOADED),
    (E.EEXIST, False, False, Outcome.ALREADY_LOADED),
    (E.EPERM, False, True, Outcome.BLACKLISTED),
    (E.EPERM, False, False, Outcome.FAILED),
    (E.ENOEXEC, False, False, Outcome.FAILED),
])
def test_insert_outcomes(errno: int, joined: bool, denied: bool, outcome: Outcome) -> None:
    assert insert_outcome(errno, joined=joined, kernel_denied=denied) is outcome


def test_levels_are_quiet_for_autoload_loud_for_requests_and_failures_always_warn() -> None:
    assert log_level(Outcome.INSERTED, Request.AUTOLOAD) is Priority.INFO
    assert log_level(Outcome.ALREADY_LOADED, Request.AUTOLOAD) is Priority.DEBUG
    assert log_level(Outcome.ALREADY_LOADED, Request.EXPLICIT) is Priority.INFO
    assert log_level(Outcome.NOT_FOUND, Request.AUTOLOAD) is Priority.DEBUG
    assert log_level(Outcome.NOT_FOUND, Request.EXPLICIT) is Priority.ERR
    assert log_level(Outcome.FAILED, Request.AUTOLOAD, Cause.BAD_FORMAT) is \
        Priority.WARNING
    assert log_level(Outcome.FAILED, Request.EXPLICIT, Cause.BAD_FORMAT) is Priority.ERR
    assert log_level(Outcome.FAILED, Request.AUTOLOAD, Cause.NO_DEVICE) is Priority.INFO
    assert log_level(Outcome.FAILED, Request.EXPLICIT, Cause.NO_DEVICE) is Priority.NOTICE


def test_messages_are_systemds_sentences() -> None:
    assert message(Outcome.INSERTED, "foo") == "Inserted module 'foo'"
    assert message(Outcome.BLACKLISTED, "foo") == "Module 'foo' is deny-listed (by kmod)"
    assert message(Outcome.BLACKLISTED, "foo", kernel_denied=True) == \
        "Module 'foo' is deny-listed (by kernel)"
    assert message(Outcome.NOT_FOUND, "", "pci:v1") == "Failed to find module 'pci:v1'"


def test_every_outcome_has_a_sentence_and_levels() -> None:
    assert set(TELLING) == set(Outcome)


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


@pytest.mark.parametrize(("outcome", "level"), [
    (Outcome.INSERTED, Priority.INFO),
    (Outcome.ALREADY_LOADED, Priority.INFO),
    (Outcome.BLACKLISTED, Priority.NOTICE),
    (Outcome.NOT_FOUND, Priority.WARNING),
    (Outcome.FAILED, Priority.WARNING),
])
def test_a_listed_module_is_told_loudly_deny_listed_at_notice_and_failures_at_warning(
        outcome: Outcome, level: Priority) -> None:
    assert log_level(outcome, Request.LISTED) is level


def test_a_listed_driver_that_found_no_device_is_a_notice_not_a_warning() -> None:
    assert log_level(Outcome.FAILED, Request.LISTED, Cause.NO_DEVICE) is Priority.NOTICE
