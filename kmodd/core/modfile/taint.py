"""Kernel taint flags: `/proc/sys/kernel/tainted` and `/sys/module/<m>/taint` decoded.

The table is Linux 6.1's (`kernel/panic.c: taint_flags`, 19 flags; meanings from
`Documentation/admin-guide/tainted-kernels.rst`). A module's own taint letters are the flags
whose `module` column is true, printed in table order (`module_flags_taint`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TaintFlag:
    """One taint bit: its letter when set, the character printed when clear, and its meaning."""

    bit: int
    letter: str
    clear: str
    module: bool  # can be set on a single module (shown in /sys/module/<m>/taint)
    name: str
    meaning: str


#: Linux 6.1's taint flags, in bit order.
TAINT_FLAGS: tuple[TaintFlag, ...] = (
    TaintFlag(0, "P", "G", True, "PROPRIETARY_MODULE", "proprietary module was loaded"),
    TaintFlag(1, "F", " ", True, "FORCED_MODULE", "module was force loaded"),
    TaintFlag(2, "S", " ", False, "CPU_OUT_OF_SPEC",
              "kernel running on an out of specification system"),
    TaintFlag(3, "R", " ", False, "FORCED_RMMOD", "module was force unloaded"),
    TaintFlag(4, "M", " ", False, "MACHINE_CHECK",
              "processor reported a Machine Check Exception (MCE)"),
    TaintFlag(5, "B", " ", False, "BAD_PAGE", "bad page referenced or some unexpected page flags"),
    TaintFlag(6, "U", " ", False, "USER", "taint requested by userspace application"),
    TaintFlag(7, "D", " ", False, "DIE", "kernel died recently, i.e. there was an OOPS or BUG"),
    TaintFlag(8, "A", " ", False, "OVERRIDDEN_ACPI_TABLE", "ACPI table overridden by user"),
    TaintFlag(9, "W", " ", False, "WARN", "kernel issued warning"),
    TaintFlag(10, "C", " ", True, "CRAP", "staging driver was loaded"),
    TaintFlag(11, "I", " ", False, "FIRMWARE_WORKAROUND",
              "workaround for bug in platform firmware applied"),
    TaintFlag(12, "O", " ", True, "OOT_MODULE",
              'externally-built ("out-of-tree") module was loaded'),
    TaintFlag(13, "E", " ", True, "UNSIGNED_MODULE", "unsigned module was loaded"),
    TaintFlag(14, "L", " ", False, "SOFTLOCKUP", "soft lockup occurred"),
    TaintFlag(15, "K", " ", True, "LIVEPATCH", "kernel has been live patched"),
    TaintFlag(16, "X", " ", True, "AUX", "auxiliary taint, defined for and used by distros"),
    TaintFlag(17, "T", " ", True, "RANDSTRUCT",
              "kernel was built with the struct randomization plugin"),
    TaintFlag(18, "N", " ", True, "TEST", "an in-kernel test has been run"),
)

TAINT_BY_LETTER = {flag.letter: flag for flag in TAINT_FLAGS}
TAINT_BY_NAME = {flag.name: flag for flag in TAINT_FLAGS}

#: The bits Linux 6.1 defines; higher bits come from newer kernels and are reported as unknown.
KNOWN_TAINT_MASK = (1 << len(TAINT_FLAGS)) - 1


@dataclass(frozen=True, slots=True)
class Taint:
    """A decoded taint mask."""

    mask: int
    flags: tuple[TaintFlag, ...]
    unknown_bits: tuple[int, ...]

    @property
    def letters(self) -> str:
        """The set flags' letters, in bit order (`POE`); empty when untainted."""
        return "".join(flag.letter for flag in self.flags)

    @property
    def kernel_string(self) -> str:
        """The kernel's `print_tainted`: `Not tainted`, or `Tainted: ` and one column per flag."""
        if self.mask == 0:
            return "Not tainted"
        return "Tainted: " + "".join(
            flag.letter if self.mask >> flag.bit & 1 else flag.clear for flag in TAINT_FLAGS)


@dataclass(frozen=True, slots=True)
class TaintError:
    """Text that is not a taint mask (names the source and the text)."""

    source: str
    text: str

    def __str__(self) -> str:
        return f"{self.source}: not a taint mask: {self.text!r}"


def decode_taint(mask: int) -> Taint:
    """Split a taint mask into Linux 6.1's flags and any bits 6.1 does not know."""
    if mask < 0:
        raise ValueError(f"negative taint mask {mask}")
    flags = tuple(flag for flag in TAINT_FLAGS if mask >> flag.bit & 1)
    unknown = tuple(bit for bit in range(mask.bit_length())
                    if mask >> bit & 1 and bit >= len(TAINT_FLAGS))
    return Taint(mask, flags, unknown)


def parse_tainted(text: str, source: str = "/proc/sys/kernel/tainted") -> Taint | TaintError:
    """Decode the content of `/proc/sys/kernel/tainted` (a decimal number and a newline)."""
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit():
        return TaintError(source, text)
    return decode_taint(int(stripped))


def parse_module_taint(text: str, source: str = "taint") -> Taint | TaintError:
    """Decode `/sys/module/<m>/taint` (letters such as `OE` and a newline)."""
    mask = 0
    for letter in text.rstrip("\n"):
        flag = TAINT_BY_LETTER.get(letter)
        if flag is None or not flag.module:
            return TaintError(source, text)
        mask |= 1 << flag.bit
    return decode_taint(mask)


def module_taint_letters(mask: int) -> str:
    """A module's taint letters as the kernel prints them (`module_flags_taint`)."""
    return "".join(flag.letter for flag in TAINT_FLAGS if flag.module and mask >> flag.bit & 1)
