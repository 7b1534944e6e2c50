"""The one vocabulary of outcomes: what became of a module, what the kernel's answer meant,
how loud each is told, and kmod's own texts.

* `Outcome`: what became of one module the daemon decided about or acted on, a decision not
  to load it (built in, already loaded, blacklisted) as much as the result of an insert. It is
  the journal's `KMODD_OUTCOME`, the control interface's `outcome` fields and the counts of
  GetStatus.
* `Cause`: what the kernel's answer to one insert or removal means. One table per syscall
  family maps an errno to a cause and its explanation in plain words, taken from what Linux
  6.1's module loader does on that errno (`kernel/module/main.c`, `signing.c`, `version.c`,
  `kernel/params.c`). A failure's cause is the journal's `KMODD_DIAGNOSIS` and picks its
  MESSAGE_ID (`core.autoload.messages`); `kmodctl explain` reports it.
* How each outcome is told (`TELLING`): systemd's wording of it and its log levels, softened
  for the `MILD_FAILURES` causes. The levels follow systemd's module_load_and_warn,
  quiet for autoload and loud for explicit requests, with one change: a real failure (bad
  format, rejected signature, unknown symbol, ...) is a warning with its cause even for
  autoload, where udev logs it at debug level and users never see it.
* The message texts of kmod 30's modprobe, insmod and rmmod, so that every front end words a
  failure exactly as kmod does.
"""

from __future__ import annotations

import errno as E
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from kmodd.core.kmod.libkmodlog import strerror
from kmodd.core.priority import Priority


class Outcome(StrEnum):
    """Closed set of what became of one module (journal `KMODD_OUTCOME`)."""

    INSERTED = "inserted"
    COMMAND_RAN = "command-ran"  # an `install` command from modprobe.d ran instead
    ALREADY_LOADED = "already-loaded"
    BUILTIN = "builtin"
    BLACKLISTED = "blacklisted"
    NOT_FOUND = "not-found"
    PLANNED = "planned"  # dry run: it would have been inserted
    FAILED = "failed"
    REMOVED = "removed"
    NOT_LOADED = "not-loaded"


class Request(StrEnum):
    """Who asked: a device (autoload, quiet), an administrator (explicit, loud), or a static
    list read at start (modules-load.d, `modules_load=`, /etc/modules: see LISTED_LEVELS)."""

    AUTOLOAD = "autoload"
    EXPLICIT = "explicit"
    LISTED = "listed"


class Cause(StrEnum):
    """Closed set of meanings of the kernel's answer to an insert or a removal (journal
    `KMODD_DIAGNOSIS`): every errno of the tables below, 0 included."""

    LOADED = "loaded"
    ALREADY_LOADED = "already-loaded"
    BUILTIN = "builtin"
    UNKNOWN_SYMBOL = "unknown-symbol"
    BAD_FORMAT = "bad-format"
    INVALID = "invalid"
    NOT_PERMITTED = "not-permitted"
    SIGNATURE_REJECTED = "signature-rejected"
    NO_DEVICE = "no-device"
    BUSY = "busy"
    NO_MEMORY = "no-memory"
    NOT_SUPPORTED = "not-supported"
    FILE_ERROR = "file-error"
    INTERRUPTED = "interrupted"
    INIT_FAILED = "init-failed"
    DECLINED = "declined"  # the module's init refused with EEXIST: one of its kind is there
    REMOVED = "removed"
    NOT_LOADED = "not-loaded"
    IN_USE = "in-use"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """An errno, the cause it stands for, and the cause explained in plain words."""

    errno: int
    cause: Cause
    explanation: str

    @property
    def errno_name(self) -> str:
        return E.errorcode.get(self.errno, str(self.errno)) if self.errno else "0"

    @property
    def ok(self) -> bool:
        return self.cause in (Cause.LOADED, Cause.ALREADY_LOADED, Cause.BUILTIN, Cause.REMOVED)


#: finit_module/init_module errno -> cause and explanation (Linux 6.1).
INSERT_CAUSES: Mapping[int, tuple[Cause, str]] = {
    0: (Cause.LOADED, "the module was loaded and its init function succeeded"),
    E.EEXIST: (Cause.ALREADY_LOADED, "a module of this name is already loaded"),
    E.ENOENT: (Cause.UNKNOWN_SYMBOL,
               "the module needs a symbol that neither the kernel nor a loaded module exports "
               "(a dependency is not loaded, or the module was built for another kernel); "
               "or the module file does not exist"),
    E.ENOEXEC: (Cause.BAD_FORMAT,
                "the kernel refused the file as a module for this kernel: its version magic "
                "or the version of module_layout does not match, or it is not a valid ELF "
                "module for this architecture"),
    E.EINVAL: (Cause.INVALID,
               "a parameter value the module rejects, a symbol whose version (CRC) disagrees "
               "with the kernel's, a symbol namespace the module does not import, or a name "
               "already taken in /sys/module (a built-in of the same name)"),
    E.EPERM: (Cause.NOT_PERMITTED,
              "the kernel forbids the load: no CAP_SYS_MODULE, modules_disabled is set, the "
              "module is listed in module_blacklist= on the kernel command line, or lockdown "
              "refuses an unsigned module"),
    E.EKEYREJECTED: (Cause.SIGNATURE_REJECTED,
                     "the module's signature does not verify, or signatures are enforced "
                     "(module.sig_enforce) and the module has no signature the kernel accepts"),
    E.EBADMSG: (Cause.SIGNATURE_REJECTED,
                "the module's appended signature is malformed"),
    E.ENOKEY: (Cause.SIGNATURE_REJECTED,
               "the key that signed the module is not in the kernel's keyring"),
    E.ENOPKG: (Cause.SIGNATURE_REJECTED,
               "the signature uses a crypto algorithm this kernel lacks"),
    E.ENODEV: (Cause.NO_DEVICE,
               "the driver loaded but its init found no device it supports"),
    E.ENXIO: (Cause.NO_DEVICE,
              "the driver's init found no device at the address it probed"),
    E.EBUSY: (Cause.BUSY,
              "the same module is being loaded or removed right now, or its init reported "
              "a busy resource"),
    E.ENOMEM: (Cause.NO_MEMORY, "the kernel ran out of memory for the module"),
    E.ENOSPC: (Cause.NO_MEMORY, "the kernel ran out of per-CPU space for the module"),
    E.ENOSYS: (Cause.NOT_SUPPORTED,
               "this kernel has no module support (CONFIG_MODULES=n) or lacks the syscall"),
    E.ETXTBSY: (Cause.FILE_ERROR, "the module file is open for writing"),
    E.EACCES: (Cause.FILE_ERROR, "a security module denied reading the module file"),
    E.EISDIR: (Cause.FILE_ERROR, "the module path is a directory"),
    E.EIO: (Cause.FILE_ERROR, "reading the module file failed"),
    E.EFBIG: (Cause.FILE_ERROR, "the module file is too large"),
    E.EINTR: (Cause.INTERRUPTED, "a signal interrupted the load"),
}

#: delete_module errno -> cause and explanation (Linux 6.1).
REMOVE_CAUSES: Mapping[int, tuple[Cause, str]] = {
    0: (Cause.REMOVED, "the module was removed"),
    E.ENOENT: (Cause.NOT_LOADED, "no module of this name is loaded"),
    E.EWOULDBLOCK: (Cause.IN_USE,
                    "other modules depend on it, or something holds a reference to it"),
    E.EBUSY: (Cause.BUSY,
              "it is still initialising or already being removed, or it has no exit "
              "function and cannot be removed"),
    E.EPERM: (Cause.NOT_PERMITTED,
              "the kernel forbids the removal: no CAP_SYS_MODULE or modules_disabled is set"),
    E.ENOSYS: (Cause.NOT_SUPPORTED,
               "this kernel has no module support or cannot unload modules"),
    E.EINTR: (Cause.INTERRUPTED, "a signal interrupted the removal"),
}


#: EEXIST from an insert after which no module of the name is loaded: the kernel found no
#: module of that name (else the insert would not have run the init), so the module's own
#: init returned EEXIST and the kernel unloaded it again.
DECLINED_EXPLANATION = ("the module's init function answered 'File exists' and the kernel unloaded "
                  "it: no module of this name was loaded, so the module itself declined to "
                  "start because what it registers exists already (a cpufreq driver such as "
                  "pcc_cpufreq or acpi_cpufreq does this when another cpufreq driver is in "
                  "charge)")


def classify_insert(errno: int, *, declined: bool = False) -> Diagnosis:
    """The cause of a finit_module/init_module result (0 or a positive errno).

    `declined`: the result was EEXIST and the module is not loaded afterwards.
    """
    if declined and errno == E.EEXIST:
        return Diagnosis(errno, Cause.DECLINED, DECLINED_EXPLANATION)
    cause, explanation = INSERT_CAUSES.get(
        errno, (Cause.INIT_FAILED,
                f"the module's init function failed with {strerror(errno)}"))
    return Diagnosis(errno, cause, explanation)


def classify_remove(errno: int) -> Diagnosis:
    """The cause of a delete_module result (0 or a positive errno)."""
    cause, explanation = REMOVE_CAUSES.get(
        errno, (Cause.BUSY, f"the kernel refused the removal with {strerror(errno)}"))
    return Diagnosis(errno, cause, explanation)


class Telling(NamedTuple):
    """How an outcome is told: systemd's sentence (`{name}` the module, `{key}` the
    looked-up name) and its log level for each kind of request."""

    sentence: str
    autoload: Priority
    explicit: Priority


#: Every outcome's sentence (systemd's module_load_and_warn) and log levels.
TELLING: Mapping[Outcome, Telling] = {
    Outcome.INSERTED: Telling("Inserted module '{name}'", Priority.INFO, Priority.INFO),
    Outcome.COMMAND_RAN: Telling("Ran the install command for module '{name}'",
                                 Priority.INFO, Priority.INFO),
    Outcome.ALREADY_LOADED: Telling("Module '{name}' is already loaded",
                                    Priority.DEBUG, Priority.INFO),
    Outcome.BUILTIN: Telling("Module '{name}' is built in", Priority.DEBUG, Priority.INFO),
    Outcome.BLACKLISTED: Telling("Module '{name}' is deny-listed (by kmod)",
                                 Priority.DEBUG, Priority.NOTICE),
    Outcome.NOT_FOUND: Telling("Failed to find module '{key}'", Priority.DEBUG, Priority.ERR),
    Outcome.PLANNED: Telling("Would insert module '{name}' (dry run)",
                             Priority.INFO, Priority.INFO),
    Outcome.FAILED: Telling("Failed to insert module '{name}'", Priority.WARNING, Priority.ERR),
    Outcome.REMOVED: Telling("Removed module '{name}'", Priority.INFO, Priority.INFO),
    Outcome.NOT_LOADED: Telling("Module '{name}' is not loaded", Priority.INFO, Priority.INFO),
}
#: Failures that are no fault of the module (systemd: ENODEV at NOTICE, not an error):
#: the driver loaded, but found no device it supports, or declined because another module
#: of its kind is in charge. (autoload, explicit)
MILD_FAILURES: Mapping[Cause, tuple[Priority, Priority]] = {
    Cause.NO_DEVICE: (Priority.INFO, Priority.NOTICE),
    Cause.DECLINED: (Priority.INFO, Priority.NOTICE),
}
#: A listed module (systemd-modules-load's `module_load_and_warn(..., verbose=true)`) is told
#: as an explicit request, except: a module that cannot be loaded is a warning (the list stays
#: in force for the other modules, and the boot goes on), and a deny-listed one a notice (its
#: level in systemd depends on the version; an admin who listed it wants to see it skipped).
LISTED_LEVELS: Mapping[Outcome, Priority] = {
    Outcome.NOT_FOUND: Priority.WARNING,
    Outcome.FAILED: Priority.WARNING,
    Outcome.BLACKLISTED: Priority.NOTICE,
}
#: The EPERM case systemd tells apart: the kernel's own `module_blacklist=`.
KERNEL_DENY_MESSAGE = "Module '{name}' is deny-listed (by kernel)"


def insert_outcome(errno: int, *, joined: bool = False, kernel_denied: bool = False,
                   declined: bool = False) -> Outcome:
    """The outcome of one insert: 0 is inserted (already loaded when another load of the
    same module did it), EEXIST already loaded (failed when `declined`: the module's own
    init returned it), EPERM for a module on the kernel's `module_blacklist=` deny-listed,
    anything else failed."""
    if errno == 0:
        return Outcome.ALREADY_LOADED if joined else Outcome.INSERTED
    if errno == E.EEXIST and not declined:
        return Outcome.ALREADY_LOADED
    if errno == E.EPERM and kernel_denied:
        return Outcome.BLACKLISTED
    return Outcome.FAILED


def log_level(outcome: Outcome, request: Request, cause: Cause | None = None) -> Priority:
    """The priority of an outcome's record (see TELLING and MILD_FAILURES)."""
    telling = TELLING[outcome]
    levels = (telling.autoload, telling.explicit)
    if outcome is Outcome.FAILED and cause is not None and cause in MILD_FAILURES:
        levels = MILD_FAILURES[cause]
    elif request is Request.LISTED and outcome in LISTED_LEVELS:
        return LISTED_LEVELS[outcome]
    return levels[0] if request is Request.AUTOLOAD else levels[1]


def message(outcome: Outcome, name: str, key: str = "", *, kernel_denied: bool = False) -> str:
    """systemd's sentence for an outcome (without the cause, which the caller appends)."""
    if outcome is Outcome.BLACKLISTED and kernel_denied:
        return KERNEL_DENY_MESSAGE.format(name=name)
    return TELLING[outcome].sentence.format(name=name, key=key or name)


# --- kmod 30's own texts -------------------------------------------------------------------

#: `tools/insmod.c: mod_strerror`.
INSMOD_STRERROR: Mapping[int, str] = {
    E.ENOEXEC: "Invalid module format",
    E.ENOENT: "Unknown symbol in module",
    E.ESRCH: "Module has wrong symbol version",
    E.EINVAL: "Invalid parameters",
}


def insmod_strerror(errno: int) -> str:
    """insmod's wording of an insert errno."""
    return INSMOD_STRERROR.get(errno) or strerror(errno)


def modprobe_insert_error(name: str, errno: int) -> str:
    """modprobe's ERROR text for a failed insert (`tools/modprobe.c: insmod`), with newline."""
    if errno == E.EEXIST:
        return f"could not insert '{name}': Module already in kernel\n"
    if errno == E.ENOENT:
        return (f"could not insert '{name}': Unknown symbol in module, "
                "or unknown parameter (see dmesg)\n")
    return f"could not insert '{name}': {strerror(errno)}\n"


def insmod_insert_error(filename: str, errno: int) -> str:
    """insmod's ERROR text for a failed insert, with newline."""
    return f"could not insert module {filename}: {insmod_strerror(errno)}\n"


def rmmod_remove_error(arg: str, errno: int) -> str:
    """rmmod's ERROR text for a failed delete_module, with newline."""
    return f"could not remove module {arg}: {strerror(errno)}\n"


def libkmod_remove_error(name: str, errno: int) -> str:
    """libkmod's ERR text when delete_module fails (`kmod_module_remove_module`)."""
    return f"could not remove '{name}': {strerror(errno)}\n"
