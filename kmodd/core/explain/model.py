"""An explanation of why a module does (not) load: findings with their evidence, as values.

`kmodctl explain` and the daemon's `Explain` method hand out one `Explanation`: the target
as asked, the modules it resolved to, and `Finding`s in checklist order. Each finding has a
verdict (problem, warning, ok, info), a summary in plain words, the evidence it rests on
(files with line numbers or byte offsets, symbols, values read from the kernel, the kernel's
own log lines) and, where there is one, a fix. `render_text` gives the readable form,
`to_json`/`from_json` the wire form (plain JSON types; `from_json` checks every field).
The rules that produce findings from gathered facts are in `kmodd.core.explain.rules`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    """How a finding bears on the load."""

    PROBLEM = "problem"  # this stops the module from loading (or stopped it)
    WARNING = "warning"  # loads, but not the way one may think (or taints the kernel)
    OK = "ok"  # checked and fine
    INFO = "info"  # context worth knowing


#: Worst first: an explanation's verdict is its worst finding's.
VERDICT_RANK: Mapping[Verdict, int] = {
    Verdict.PROBLEM: 0, Verdict.WARNING: 1, Verdict.INFO: 2, Verdict.OK: 3}


class Check(StrEnum):
    """What a finding is about (the checklist, in the order findings appear)."""

    ATTEMPT = "attempt"  # a recorded load that failed: errno and cause
    KERNEL_LOG = "kernel-log"  # the kernel's own lines about the module
    TARGET = "target"  # what the name, alias or path resolved to
    NOT_FOUND = "not-found"
    INDEX = "index"  # modules.dep.bin missing, damaged or older than the modules
    FILE = "file"  # the module file: missing, unreadable, not a module
    STATE = "state"  # already loaded, built in, coming or going
    PLAN = "plan"  # what `modprobe NAME` would do, step by step
    MODULES_DISABLED = "modules-disabled"
    KERNEL_BLACKLIST = "module-blacklist"  # module_blacklist= on the kernel command line
    BLACKLIST = "blacklist"  # modprobe.d blacklist (and modprobe.blacklist=)
    INSTALL = "install"  # an install command runs instead of the load
    SOFTDEP = "softdep"
    OPTIONS = "options"
    DEPENDENCIES = "dependencies"
    VERMAGIC = "vermagic"
    SYMBOLS = "symbols"
    MODVERSIONS = "modversions"  # symbol CRCs
    SIGNATURE = "signature"


@dataclass(frozen=True, slots=True)
class Evidence:
    """One thing read: a config line, a symbol, a value, a log line; where it was read."""

    label: str  # what it is, in a word or two: "line", "symbol", "kernel log", "value"
    text: str
    path: str | None = None
    line: int | None = None  # 1-based; 0 or None: the file as a whole
    offset: int | None = None  # byte offset in a binary file

    def where(self) -> str | None:
        """`path:line`, `path at offset 0x40`, `path`, or None."""
        if self.path is None:
            return None
        if self.line:
            return f"{self.path}:{self.line}"
        if self.offset is not None:
            return f"{self.path} at offset {self.offset:#x}"
        return self.path


@dataclass(frozen=True, slots=True)
class Finding:
    """One item of the checklist for one module (or for the target as a whole)."""

    check: Check
    verdict: Verdict
    summary: str
    module: str | None = None
    evidence: tuple[Evidence, ...] = ()
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything `kmodctl explain TARGET` found."""

    target: str
    kernel_release: str
    moddir: str
    modules: tuple[str, ...]  # what the target resolved to (empty: nothing)
    findings: tuple[Finding, ...]

    @property
    def verdict(self) -> Verdict:
        """PROBLEM or WARNING when any finding is one, else OK (INFO is only context)."""
        worst = min((f.verdict for f in self.findings), key=VERDICT_RANK.__getitem__,
                    default=Verdict.OK)
        return Verdict.OK if worst is Verdict.INFO else worst

    def count(self, verdict: Verdict) -> int:
        return sum(1 for f in self.findings if f.verdict is verdict)

    def headline(self) -> str:
        """One line: the target, what it is, and how many problems and warnings."""
        what = ", ".join(self.modules) if self.modules else "no module"
        if self.modules == (_name(self.target),):
            what = "module"
        problems, warnings = self.count(Verdict.PROBLEM), self.count(Verdict.WARNING)
        tally = (f"{problems} problem{'s' * (problems != 1)}, "
                 f"{warnings} warning{'s' * (warnings != 1)}")
        return f"{self.target} ({what}): {tally} (kernel {self.kernel_release}, {self.moddir})"


# --- text -------------------------------------------------------------------------------------

def _name(target: str) -> str:
    """A target as the module name it would be (`mod-a` is `mod_a`)."""
    return target.replace("-", "_")


#: How evidence lines are indented under their finding.
EVIDENCE_INDENT = "    "


def render_text(expl: Explanation) -> str:
    """The readable form: a headline, then each finding with its evidence and fix."""
    out = [expl.headline(), ""]
    for f in expl.findings:
        # Name the module when the target is an alias or several modules are explained.
        named = f.module is not None and (f.module != _name(expl.target)
                                          or len(expl.modules) > 1)
        who = f"{f.module}: " if named else ""
        out.append(f"[{f.verdict}] {f.check}: {who}{f.summary}")
        for e in f.evidence:
            where = e.where()
            out.append(f"{EVIDENCE_INDENT}{e.label}: {e.text}" + (f" ({where})" if where else ""))
        if f.fix:
            out.append(f"{EVIDENCE_INDENT}fix: {f.fix}")
    return "\n".join(out) + "\n"


# --- JSON ---------------------------------------------------------------------------------

def to_json(expl: Explanation) -> dict[str, Any]:
    """The wire form: plain dicts, lists, strings and integers (null for what is unset)."""
    return {
        "target": expl.target,
        "kernel_release": expl.kernel_release,
        "moddir": expl.moddir,
        "modules": list(expl.modules),
        "verdict": str(expl.verdict),
        "findings": [{
            "check": str(f.check),
            "verdict": str(f.verdict),
            "summary": f.summary,
            "module": f.module,
            "evidence": [{"label": e.label, "text": e.text, "path": e.path, "line": e.line,
                          "offset": e.offset} for e in f.evidence],
            "fix": f.fix,
        } for f in expl.findings],
    }


class ExplanationFormatError(ValueError):
    """A JSON explanation that does not have the expected shape (names the field)."""


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
           optional: bool = False) -> Any:
    if not isinstance(obj, Mapping):
        raise ExplanationFormatError(f"{where}: expected an object")
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ExplanationFormatError(f"{where}.{key}: missing or of the wrong type")
    return value


def _enum(enum: type[Verdict] | type[Check], value: str, where: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise ExplanationFormatError(f"{where}: unknown value {value!r}") from None


def from_json(data: Any) -> Explanation:
    """An Explanation back from `to_json`'s form; raises ExplanationFormatError."""
    findings: list[Finding] = []
    raw_findings: Sequence[Any] = _field(data, "findings", list, "explanation")
    for i, raw in enumerate(raw_findings):
        at = f"explanation.findings[{i}]"
        evidence = []
        for j, ev in enumerate(_field(raw, "evidence", list, at)):
            eat = f"{at}.evidence[{j}]"
            evidence.append(Evidence(
                _field(ev, "label", str, eat), _field(ev, "text", str, eat),
                _field(ev, "path", str, eat, True), _field(ev, "line", int, eat, True),
                _field(ev, "offset", int, eat, True)))
        findings.append(Finding(
            _enum(Check, _field(raw, "check", str, at), f"{at}.check"),
            _enum(Verdict, _field(raw, "verdict", str, at), f"{at}.verdict"),
            _field(raw, "summary", str, at), _field(raw, "module", str, at, True),
            tuple(evidence), _field(raw, "fix", str, at, True)))
    modules = _field(data, "modules", list, "explanation")
    if not all(isinstance(m, str) for m in modules):
        raise ExplanationFormatError("explanation.modules: expected strings")
    return Explanation(_field(data, "target", str, "explanation"),
                       _field(data, "kernel_release", str, "explanation"),
                       _field(data, "moddir", str, "explanation"), tuple(modules),
                       tuple(findings))
