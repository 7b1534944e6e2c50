"""What a load or unload attempt came to: errno -> outcome and cause, and kmod's own texts.

One table per syscall family maps an errno to an `Outcome` (a closed set the daemon logs and
`kmodctl explain` reports) and a cause in plain words, taken from what Linux 6.1's module loader
does on that errno (`kernel/module/main.c`, `signing.c`, `version.c`, `kernel/params.c`).
The message texts of kmod 30's modprobe, insmod and rmmod are here too, so that every front
end words a failure exactly as kmod does.
"""

from __future__ import annotations

import errno as E
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from kmodd.core.kmod.libkmodlog import strerror


class Outcome(StrEnum):
    """Closed set of results of inserting or removing a module."""

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
    """An errno, the outcome it stands for, and the cause in plain words."""

    errno: int
    outcome: Outcome
    cause: str

    @property
    def errno_name(self) -> str:
        return E.errorcode.get(self.errno, str(self.errno)) if self.errno else "0"

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.LOADED, Outcome.ALREADY_LOADED, Outcome.BUILTIN,
                                Outcome.REMOVED)


#: finit_module/init_module errno -> outcome and cause (Linux 6.1).
INSERT_OUTCOMES: Mapping[int, tuple[Outcome, str]] = {
    0: (Outcome.LOADED, "the module was loaded and its init function succeeded"),
    E.EEXIST: (Outcome.ALREADY_LOADED, "a module of this name is already loaded"),
    E.ENOENT: (Outcome.UNKNOWN_SYMBOL,
               "the module needs a symbol that neither the kernel nor a loaded module exports "
               "(a dependency is not loaded, or the module was built for another kernel); "
               "or the module file does not exist"),
    E.ENOEXEC: (Outcome.BAD_FORMAT,
                "the kernel refused the file as a module for this kernel: its version magic "
                "or the version of module_layout does not match, or it is not a valid ELF "
                "module for this architecture"),
    E.EINVAL: (Outcome.INVALID,
               "a parameter value the module rejects, a symbol whose version (CRC) disagrees "
               "with the kernel's, a symbol namespace the module does not import, or a name "
               "already taken in /sys/module (a built-in of the same name)"),
    E.EPERM: (Outcome.NOT_PERMITTED,
              "the kernel forbids the load: no CAP_SYS_MODULE, modules_disabled is set, the "
              "module is listed in module_blacklist= on the kernel command line, or lockdown "
              "refuses an unsigned module"),
    E.EKEYREJECTED: (Outcome.SIGNATURE_REJECTED,
                     "the module's signature does not verify, or signatures are enforced "
                     "(module.sig_enforce) and the module has no signature the kernel accepts"),
    E.EBADMSG: (Outcome.SIGNATURE_REJECTED,
                "the module's appended signature is malformed"),
    E.ENOKEY: (Outcome.SIGNATURE_REJECTED,
               "the key that signed the module is not in the kernel's keyring"),
    E.ENOPKG: (Outcome.SIGNATURE_REJECTED,
               "the signature uses a crypto algorithm this kernel lacks"),
    E.ENODEV: (Outcome.NO_DEVICE,
               "the driver loaded but its init found no device it supports"),
    E.ENXIO: (Outcome.NO_DEVICE,
              "the driver's init found no device at the address it probed"),
    E.EBUSY: (Outcome.BUSY,
              "the same module is being loaded or removed right now, or its init reported "
              "a busy resource"),
    E.ENOMEM: (Outcome.NO_MEMORY, "the kernel ran out of memory for the module"),
    E.ENOSPC: (Outcome.NO_MEMORY, "the kernel ran out of per-CPU space for the module"),
    E.ENOSYS: (Outcome.NOT_SUPPORTED,
               "this kernel has no module support (CONFIG_MODULES=n) or lacks the syscall"),
    E.ETXTBSY: (Outcome.FILE_ERROR, "the module file is open for writing"),
    E.EACCES: (Outcome.FILE_ERROR, "a security module denied reading the module file"),
    E.EISDIR: (Outcome.FILE_ERROR, "the module path is a directory"),
    E.EIO: (Outcome.FILE_ERROR, "reading the module file failed"),
    E.EFBIG: (Outcome.FILE_ERROR, "the module file is too large"),
    E.EINTR: (Outcome.INTERRUPTED, "a signal interrupted the load"),
}

#: delete_module errno -> outcome and cause (Linux 6.1).
REMOVE_OUTCOMES: Mapping[int, tuple[Outcome, str]] = {
    0: (Outcome.REMOVED, "the module was removed"),
    E.ENOENT: (Outcome.NOT_LOADED, "no module of this name is loaded"),
    E.EWOULDBLOCK: (Outcome.IN_USE,
                    "other modules depend on it, or something holds a reference to it"),
    E.EBUSY: (Outcome.BUSY,
              "it is still initialising or already being removed, or it has no exit "
              "function and cannot be removed"),
    E.EPERM: (Outcome.NOT_PERMITTED,
              "the kernel forbids the removal: no CAP_SYS_MODULE or modules_disabled is set"),
    E.ENOSYS: (Outcome.NOT_SUPPORTED,
               "this kernel has no module support or cannot unload modules"),
    E.EINTR: (Outcome.INTERRUPTED, "a signal interrupted the removal"),
}


#: EEXIST from an insert after which no module of the name is loaded: the kernel found no
#: module of that name (else the insert would not have run the init), so the module's own
#: init returned EEXIST and the kernel unloaded it again.
DECLINED_CAUSE = ("the module's init function answered 'File exists' and the kernel unloaded "
                  "it: no module of this name was loaded, so the module itself declined to "
                  "start because what it registers exists already (a cpufreq driver such as "
                  "pcc_cpufreq or acpi_cpufreq does this when another cpufreq driver is in "
                  "charge)")


def classify_insert(errno: int, *, declined: bool = False) -> Diagnosis:
    """The outcome and cause of a finit_module/init_module result (0 or a positive errno).

    `declined`: the result was EEXIST and the module is not loaded afterwards.
    """
    if declined and errno == E.EEXIST:
        return Diagnosis(errno, Outcome.DECLINED, DECLINED_CAUSE)
    outcome, cause = INSERT_OUTCOMES.get(
        errno, (Outcome.INIT_FAILED,
                f"the module's init function failed with {strerror(errno)}"))
    return Diagnosis(errno, outcome, cause)


def classify_remove(errno: int) -> Diagnosis:
    """The outcome and cause of a delete_module result (0 or a positive errno)."""
    outcome, cause = REMOVE_OUTCOMES.get(
        errno, (Outcome.BUSY, f"the kernel refused the removal with {strerror(errno)}"))
    return Diagnosis(errno, outcome, cause)


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
