"""Every kind of journal record kmodd writes, and its MESSAGE_ID.

A record's MESSAGE_ID names its kind, so that `journalctl MESSAGE_ID=...` finds every record
of a kind and `journalctl -x` shows the explanation that `catalog/kmodd.catalog` gives for it
(a test keeps the catalog and `MESSAGE_IDS` equal). The ids were drawn once with
`uuid.uuid4().hex` and never change: a new kind gets a new id, a retired id is not reused.

A failed insert has one id per cause (`FAILURE_MESSAGES`), not one id with the cause in a
field: the catalog text is all that `journalctl -x` shows, and what an administrator can do
differs with the cause (rebuild the module for this kernel, sign it, load its dependency,
fix a parameter, leave a driver without a device alone), so one text for all would be a list
of every cause's advice. KMODD_DIAGNOSIS still names the cause, for filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from kmodd.core.autoload.outcome import Cause, Outcome


class Message(StrEnum):
    """Closed set of kinds of journal records."""

    # One per load outcome (KMODD_OUTCOME=) ...
    INSERTED = "inserted"
    COMMAND_RAN = "command-ran"
    BLACKLISTED = "blacklisted"
    NOT_FOUND = "not-found"
    SKIPPED = "skipped"  # nothing to do: already loaded, built in, not loaded, dry run
    REMOVED = "removed"
    FAILED = "failed"  # a failure without a kernel errno's cause: see FAILURE_MESSAGES
    # ... and one per cause of a failed insert (KMODD_DIAGNOSIS=).
    FAILED_UNKNOWN_SYMBOL = "failed-unknown-symbol"
    FAILED_BAD_FORMAT = "failed-bad-format"
    FAILED_INVALID = "failed-invalid"
    FAILED_NOT_PERMITTED = "failed-not-permitted"
    FAILED_SIGNATURE_REJECTED = "failed-signature-rejected"
    FAILED_NO_DEVICE = "failed-no-device"
    FAILED_BUSY = "failed-busy"
    FAILED_NO_MEMORY = "failed-no-memory"
    FAILED_NOT_SUPPORTED = "failed-not-supported"
    FAILED_FILE_ERROR = "failed-file-error"
    FAILED_INTERRUPTED = "failed-interrupted"
    FAILED_INIT_FAILED = "failed-init-failed"
    FAILED_DECLINED = "failed-declined"
    # The daemon's own life.
    READY = "ready"
    START_FAILED = "start-failed"
    STOPPING = "stopping"
    STOP_TIMEOUT = "stop-timeout"
    INDEX_READY = "index-ready"  # mapped at start, decoded after coldplug
    RELOAD_STARTED = "reload-started"
    RELOAD_DONE = "reload-done"
    RELOAD_FAILED = "reload-failed"
    DEGRADED_ENTERED = "degraded-entered"
    DEGRADED_LEFT = "degraded-left"
    INDEX_DAMAGED = "index-damaged"  # a device's lookup met damage
    COLDPLUG_DONE = "coldplug-done"
    RESYNC = "resync"
    PREVIOUS_INSTANCE = "previous-instance"  # what the instances before this one did
    LOADED_BEFORE = "loaded-before"  # a live module another instance was loading
    LOADED_ELSEWHERE = "loaded-elsewhere"  # a module went live, not loaded by kmodd
    KERNEL_REQUEST = "kernel-request"  # the kernel asked for an alias; what it got
    KERNEL_REQUEST_REFUSED = "kernel-request-refused"  # denied by the autoload policy
    TRACE_UNAVAILABLE = "trace-unavailable"  # kernel requests cannot be recorded
    AUTOLOAD_POLICY = "autoload-policy"  # the policy file written, removed, or not
    REPROBED = "reprobed"
    REPROBE_FAILED = "reprobe-failed"  # still unbound after its re-probe
    RECORDS_FAILED = "records-failed"  # the record file cannot be kept
    CONFIG_IGNORED = "config-ignored"  # a setting or modprobe.d line, "..., ignoring"
    WATCH_FAILED = "watch-failed"
    UEVENT_SOCKET = "uevent-socket"
    UEVENT_REJECTED = "uevent-rejected"
    CLIENT_OVER_LIMITS = "client-over-limits"
    INTERNAL_ERROR = "internal-error"


#: Kind -> MESSAGE_ID (128 bits, 32 lowercase hex digits). Fixed forever.
MESSAGE_IDS: Mapping[Message, str] = {
    Message.INSERTED: "ccefa955537e4fb59672032ea3911d82",
    Message.COMMAND_RAN: "972967721dab42b7a0afacad8f65bede",
    Message.BLACKLISTED: "0be0a617dc61499c8993068086b3a0d8",
    Message.NOT_FOUND: "bc6d8e8b281043bfb69997bd00dc81f2",
    Message.SKIPPED: "bc555c6ac0ac401c9f4c1e37a8ba4fed",
    Message.REMOVED: "524ca2ae8a6c45edbd5f49dd461a7e88",
    Message.FAILED: "710cda62757844a192539d91663c62d7",
    Message.FAILED_UNKNOWN_SYMBOL: "3b5a3f5b74d44cbf810ad3f0fbdcc5c9",
    Message.FAILED_BAD_FORMAT: "9a45bf42246b41ad88dcaa2619b7d1e3",
    Message.FAILED_INVALID: "a3cda455e4924178b57ca6e2eee6942f",
    Message.FAILED_NOT_PERMITTED: "683e4843b2cd49f3863015b18973ba47",
    Message.FAILED_SIGNATURE_REJECTED: "b057b685e90b44a1be1df40dc9f6f807",
    Message.FAILED_NO_DEVICE: "49701ec9b827452497a6d2f0e765fc65",
    Message.FAILED_BUSY: "ab295fc0038c4ff49d0a27a352349f51",
    Message.FAILED_NO_MEMORY: "311a1752e805481cb93ca7ca2d7e7043",
    Message.FAILED_NOT_SUPPORTED: "41e5537298304a7b9bbf58a538253cc3",
    Message.FAILED_FILE_ERROR: "3a564ebaf8ed4f76b9fb7dae1bdb0edb",
    Message.FAILED_INTERRUPTED: "e6ed9042dcad474aa3e6149f3c6b8441",
    Message.FAILED_INIT_FAILED: "3292f38052cb4f818a1ad9b3ca097ca9",
    Message.FAILED_DECLINED: "110b33674eea4d02a55d1c19b8aa745b",
    Message.READY: "ef3c3b0f624b4a9facd59a70cc8669f4",
    Message.START_FAILED: "e5a336d44a2e45b284134fef834aa0c3",
    Message.STOPPING: "a0412ee6f2e64bbd90a5d34ec7d54c51",
    Message.STOP_TIMEOUT: "06b1bc1b88d844fa998f4781fab43c34",
    Message.INDEX_READY: "f607218923204eb6bc34615245880ad0",
    Message.RELOAD_STARTED: "95435b1fb51f45038a0a109bce70dc3f",
    Message.RELOAD_DONE: "5411f371f5ef4607b820915233c1ebb0",
    Message.RELOAD_FAILED: "bf6d4c87c9424d488d48ce8c4f5ac88a",
    Message.DEGRADED_ENTERED: "fb24c63eb52e4039b76d2939cc39a7ab",
    Message.DEGRADED_LEFT: "a30cf164c41c4441a0b8e87a4f77a5d6",
    Message.INDEX_DAMAGED: "6ac34f02a4ed4ecca2fa9e4ef47ff0bc",
    Message.COLDPLUG_DONE: "3c1758ed9579495c916238ed8dbb1bd1",
    Message.RESYNC: "a2fe41619d79406fb07c16cb224d5feb",
    Message.PREVIOUS_INSTANCE: "929b1cb3a22d44aab57c13d81e760405",
    Message.LOADED_BEFORE: "40495851f6b340fc99d15fea10f5bb7f",
    Message.LOADED_ELSEWHERE: "64efd72814e84606bac57aea7493f04f",
    Message.KERNEL_REQUEST: "98e6aa38afe14a92ad76816550d9843e",
    Message.KERNEL_REQUEST_REFUSED: "5ecf239acbe3496c8047dd3681a40fbb",
    Message.TRACE_UNAVAILABLE: "2c241df2aa6748199471540cdbd7c81b",
    Message.AUTOLOAD_POLICY: "fb213bf252994fafbcfded82c91cbc7d",
    Message.REPROBED: "2b9b8c93573243d797d686077cf2f949",
    Message.REPROBE_FAILED: "132556c895b34d499396d6bb4f31f3f2",
    Message.RECORDS_FAILED: "9e6220e7b2d140c992637d7416dcdffe",
    Message.CONFIG_IGNORED: "59174e8c47fa441e8a063bdc21519a87",
    Message.WATCH_FAILED: "12e980bf054f4ae1859616fdffea2e6d",
    Message.UEVENT_SOCKET: "46713fc8c38349868244fa9db51530df",
    Message.UEVENT_REJECTED: "f195c010e8d045ac99e55d98bd054b3d",
    Message.CLIENT_OVER_LIMITS: "6f92df2995d7468794aac4e08c882401",
    Message.INTERNAL_ERROR: "f016f1f3c8874f10b59b9bef739a89f8",
}

#: Load outcome -> kind of its record (a failure with a cause: FAILURE_MESSAGES).
OUTCOME_MESSAGES: Mapping[Outcome, Message] = {
    Outcome.INSERTED: Message.INSERTED,
    Outcome.COMMAND_RAN: Message.COMMAND_RAN,
    Outcome.ALREADY_LOADED: Message.SKIPPED,
    Outcome.BUILTIN: Message.SKIPPED,
    Outcome.BLACKLISTED: Message.BLACKLISTED,
    Outcome.NOT_FOUND: Message.NOT_FOUND,
    Outcome.PLANNED: Message.SKIPPED,
    Outcome.FAILED: Message.FAILED,
    Outcome.REMOVED: Message.REMOVED,
    Outcome.NOT_LOADED: Message.SKIPPED,
}

#: Cause of a failed insert (`core.autoload.outcome.classify_insert`) -> kind of its record.
FAILURE_MESSAGES: Mapping[Cause, Message] = {
    Cause.UNKNOWN_SYMBOL: Message.FAILED_UNKNOWN_SYMBOL,
    Cause.BAD_FORMAT: Message.FAILED_BAD_FORMAT,
    Cause.INVALID: Message.FAILED_INVALID,
    Cause.NOT_PERMITTED: Message.FAILED_NOT_PERMITTED,
    Cause.SIGNATURE_REJECTED: Message.FAILED_SIGNATURE_REJECTED,
    Cause.NO_DEVICE: Message.FAILED_NO_DEVICE,
    Cause.BUSY: Message.FAILED_BUSY,
    Cause.NO_MEMORY: Message.FAILED_NO_MEMORY,
    Cause.NOT_SUPPORTED: Message.FAILED_NOT_SUPPORTED,
    Cause.FILE_ERROR: Message.FAILED_FILE_ERROR,
    Cause.INTERRUPTED: Message.FAILED_INTERRUPTED,
    Cause.INIT_FAILED: Message.FAILED_INIT_FAILED,
    Cause.DECLINED: Message.FAILED_DECLINED,
}


def outcome_message(outcome: Outcome, diagnosis: Cause | None) -> Message:
    """The kind of an outcome's record: a failure's cause picks its own kind."""
    if outcome is Outcome.FAILED and diagnosis is not None:
        return FAILURE_MESSAGES.get(diagnosis, Message.FAILED)
    return OUTCOME_MESSAGES[outcome]
