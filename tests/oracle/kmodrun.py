"""Run the real kmod tools (the oracle) against a fake root, masked in a private mount namespace.

kmod reads `/etc/modprobe.d`, `/run/modprobe.d`, `/usr/local/lib/modprobe.d`, `/lib/modprobe.d`,
`/proc/cmdline` and `/sys/module` at their host paths even with `-d`, and `/lib/modules` when no
`-d` is given. `KmodRunner(root)` starts one `unshare -m` namespace in which those paths show the
content of the fake root `root` (a directory laid out like `/`): a path the fake root lacks is
absent for kmod (an empty `/proc/cmdline` and an empty `/sys/module` stand in for those two),
whatever the host has there. Every case then runs inside that namespace with a controlled
environment and its stdout, stderr and exit code come back as bytes, in order.

    with KmodRunner(root) as kmod:
        results = kmod.run([Case.of("modprobe", "-R", "unix")])

Command line: `python -m tests.oracle.kmodrun --selftest` checks the masking and a few literal
kmod answers; `--bench` measures cases per second on the Debian kernel tree.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any

#: The modprobe.d search path of kmod 30 on Debian 12, highest precedence first.
MODPROBE_D_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d",
                   "/lib/modprobe.d")
#: depmod reads these (same rules); masked too so that a depmod run in the namespace is clean.
DEPMOD_D_DIRS = ("/etc/depmod.d", "/run/depmod.d", "/usr/local/lib/depmod.d", "/lib/depmod.d")
#: PATH inside the namespace; nothing else of the caller's environment reaches kmod.
DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
#: Seconds one case may take before it is killed (and reported with RC_TIMEOUT).
CASE_TIMEOUT = 60.0
RC_TIMEOUT = -1000
EMPTY = "@empty"
_RECORD_HEADER = struct.Struct(">iII")
_DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_nsdriver.py")


@dataclass(frozen=True, slots=True)
class Case:
    """One command: argv[0] names the tool (`modprobe`, `modinfo`, ... or an absolute path)."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None

    @classmethod
    def of(cls, *argv: str, env: Mapping[str, str] | None = None,
           cwd: str | None = None) -> Case:
        return cls(tuple(argv), tuple(sorted((env or {}).items())), cwd)

    def environ(self) -> dict[str, str]:
        """The complete environment the command runs with (both sides get the same)."""
        env = {"PATH": DEFAULT_PATH}
        env.update(self.env)
        return env

    def label(self) -> str:
        env = " ".join(f"{k}={v!r}" for k, v in self.env)
        return (env + " " if env else "") + " ".join(_shell_quote(a) for a in self.argv)


@dataclass(frozen=True, slots=True)
class Result:
    """What one command printed and returned."""

    rc: int
    stdout: bytes
    stderr: bytes


def _shell_quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./:=,+@%" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


@dataclass(frozen=True, slots=True)
class Mask:
    """Show `source` (None: nothing, EMPTY: an empty file/dir) at host path `target`."""

    target: str
    source: str | None
    kind: str  # "dir" or "file"


def masks_for(root: str) -> list[Mask]:
    """The masks that make kmod see the fake root `root` instead of the host."""
    root = os.path.abspath(root)

    def inside(path: str) -> str | None:
        p = root + path
        return p if os.path.lexists(p) else None

    masks = [Mask(d, inside(d), "dir") for d in MODPROBE_D_DIRS + DEPMOD_D_DIRS]
    masks.append(Mask("/proc/cmdline", inside("/proc/cmdline") or EMPTY, "file"))
    masks.append(Mask("/sys/module", inside("/sys/module") or EMPTY, "dir"))
    masks.append(Mask("/lib/modules", inside("/lib/modules"), "dir"))
    return masks


def _resolve_exe(tool: str) -> str:
    if tool.startswith("/"):
        return tool
    for d in DEFAULT_PATH.split(":"):
        p = os.path.join(d, tool)
        if os.access(p, os.X_OK):
            return p
    raise FileNotFoundError(f"{tool} not found in {DEFAULT_PATH}")


class OracleError(RuntimeError):
    """The namespace could not be set up, or the driver died."""


@dataclass
class KmodRunner:
    """A live namespace showing `root` to kmod; `run()` as many batches as needed."""

    root: str
    workers: int | None = None
    timeout: float = CASE_TIMEOUT
    #: Bind the fake root's paths read-only (kmod never writes); False lets a depmod run
    #: inside the namespace write the fake root's /lib/modules.
    read_only: bool = True
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _scratch: str | None = field(default=None, init=False, repr=False)
    _exes: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __enter__(self) -> KmodRunner:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise OracleError("the kmod oracle needs root (unshare -m and bind mounts)")
        self._scratch = tempfile.mkdtemp(prefix="kmodrun-")
        spec = {
            "scratch": self._scratch,
            "workers": self.workers or (os.cpu_count() or 1) + 1,
            "read_only": self.read_only,
            "masks": [[m.target, m.source, m.kind] for m in masks_for(self.root)],
        }
        self._proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", sys.executable, "-I", _DRIVER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._request(spec)

    def _request(self, request: dict[str, Any]) -> None:
        assert self._proc is not None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request).encode() + b"\n")
        self._proc.stdin.flush()
        ready = self._proc.stdout.readline()
        if ready != b"READY\n":
            self.close()
            raise OracleError(f"namespace set-up failed: {ready.decode(errors='replace')}")

    def use_root(self, root: str, *, read_only: bool = True) -> None:
        """Show kmod another fake root from now on (cheaper than a new namespace)."""
        if self._proc is None:
            raise OracleError("runner not started")
        self.root, self.read_only = root, read_only
        self._request({"read_only": read_only,
                       "masks": [[m.target, m.source, m.kind] for m in masks_for(root)]})

    def ensure_root(self, root: str) -> None:
        """Switch to `root` (read-only) unless it is already the one shown."""
        if root != self.root or not self.read_only:
            self.use_root(root)

    def run(self, cases: Sequence[Case]) -> list[Result]:
        """Run `cases` (in parallel inside the namespace); results in the same order."""
        if self._proc is None:
            raise OracleError("runner not started")
        assert self._proc.stdin is not None and self._proc.stdout is not None
        if not cases:
            return []
        payload = [{"exe": self._exe(c.argv[0]), "argv": list(c.argv), "env": c.environ(),
                    "cwd": c.cwd, "timeout": self.timeout} for c in cases]
        self._proc.stdin.write(json.dumps({"cases": payload}).encode() + b"\n")
        self._proc.stdin.flush()
        return [_read_record(self._proc.stdout) for _ in cases]

    def _exe(self, tool: str) -> str:
        if tool not in self._exes:
            self._exes[tool] = _resolve_exe(tool)
        return self._exes[tool]

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._proc.wait(timeout=60)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._scratch is not None:
            # Only ever a mount point inside the namespace: empty on the host.
            os.rmdir(self._scratch)
            self._scratch = None


def _read_record(stream: IO[bytes]) -> Result:
    header = stream.read(_RECORD_HEADER.size)
    if len(header) != _RECORD_HEADER.size:
        raise OracleError("namespace driver died (short record)")
    rc, nout, nerr = _RECORD_HEADER.unpack(header)
    out = stream.read(nout)
    err = stream.read(nerr)
    if len(out) != nout or len(err) != nerr:
        raise OracleError("namespace driver died (short record)")
    return Result(rc, out, err)


def run_cases(root: str, cases: Sequence[Case], *, workers: int | None = None) -> list[Result]:
    """One namespace, one batch: the results of `cases` against the fake root `root`."""
    with KmodRunner(root, workers=workers) as kmod:
        return kmod.run(cases)


def kmod_version() -> str:
    """`modprobe --version` of the host kmod (part of every oracle cache key)."""
    return subprocess.run([_resolve_exe("modprobe"), "--version"], capture_output=True,
                          check=True, text=True, env={"PATH": DEFAULT_PATH}).stdout


def write_tree(root: str, files: Mapping[str, str | bytes]) -> None:
    """Write `{relative path: content}` under `root`; content `"-> target"` makes a symlink."""
    for rel, content in files.items():
        path = os.path.join(root, rel.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(content, str) and content.startswith("-> "):
            os.symlink(content[3:], path)
        elif rel.endswith("/"):
            os.makedirs(path, exist_ok=True)
        else:
            with open(path, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)


# --- self test and throughput ------------------------------------------------------------------

def make_selftest_root(base: str) -> str:
    """A small fake root whose kmod answers were checked by hand (kmod testsuite fixtures)."""
    from tests import kobuild

    root = os.path.join(base, "root")
    moddir = os.path.join(root, "lib/modules/4.4.4")
    write_tree(root, {
        "lib/modules/4.4.4/modules.builtin": "kernel/net/unix/unix.ko\n",
        "lib/modules/4.4.4/modules.order": "kernel/mod-loop-b.ko\nkernel/mod-loop-a.ko\n",
        "etc/modprobe.d/a.conf": "options mod-loop-a x=1\n",
        "proc/cmdline": "mod_loop_b.y=2 quiet\n",
        "sys/module/mod_loop_b/initstate": "live\n",
    })
    os.makedirs(os.path.join(moddir, "kernel"))
    kobuild.write_ko(os.path.join(moddir, "kernel/mod-loop-b.ko"),
                     kobuild.KoSpec("mod_loop_b", modinfo=["license=GPL"], exports=["printB"]))
    kobuild.write_ko(os.path.join(moddir, "kernel/mod-loop-a.ko"),
                     kobuild.KoSpec("mod_loop_a", modinfo=["license=GPL"], exports=["printA"],
                                    needs=["printB"]))
    run_depmod(root, "4.4.4")
    return root


def run_depmod(root: str, kver: str, *args: str, runner: KmodRunner | None = None) -> Result:
    """The real depmod as if `root` were `/`: it reads the fake root's depmod.d and writes
    `root/lib/modules/<kver>` (external directories in depmod.d name paths as seen from the
    fake root). Uses `runner` (switching it to `root`) when given. Raises OracleError when
    depmod fails."""
    case = Case.of("depmod", *args, kver)
    if runner is None:
        with KmodRunner(root, read_only=False) as kmod:
            (result,) = kmod.run([case])
    else:
        runner.use_root(root, read_only=False)
        (result,) = runner.run([case])
    if result.rc != 0:
        message = result.stderr.decode(errors="replace")
        raise OracleError(f"depmod {kver} failed in {root}: {message}")
    return result


def run_depmod_in_place(root: str, kver: str) -> Result:
    """The real depmod on `root/lib/modules/<kver>` with `-b root` and no depmod.d at all,
    outside any namespace (any user may run it). For a fake root without depmod.d files it
    writes exactly what `run_depmod` writes; a depmod.d naming directories by absolute path
    (`external`) needs `run_depmod`. Raises OracleError when depmod fails."""
    with tempfile.TemporaryDirectory(prefix="no-depmod.d-") as no_config:
        proc = subprocess.run(["depmod", "-b", root, "-C", no_config, kver],
                              capture_output=True, env={"PATH": DEFAULT_PATH}, check=False)
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if result.rc != 0:
        message = result.stderr.decode(errors="replace")
        raise OracleError(f"depmod -b {root} {kver} failed: {message}")
    return result


#: (case, expected result) pairs for the self test. `@R` is the fake root's path.
SELFTEST: tuple[tuple[Case, Result], ...] = (
    (Case.of("modprobe", "-S", "4.4.4", "-R", "unix"), Result(0, b"unix\n", b"")),
    (Case.of("modprobe", "-S", "4.4.4", "--show-depends", "mod-loop-a"),
     Result(0, b"insmod /lib/modules/4.4.4/kernel/mod-loop-b.ko y=2 \n"
               b"insmod /lib/modules/4.4.4/kernel/mod-loop-a.ko x=1 \n", b"")),
    # -n -v skips mod_loop_b: /sys/module/mod_loop_b/initstate says live.
    (Case.of("modprobe", "-S", "4.4.4", "-n", "-v", "mod-loop-a"),
     Result(0, b"insmod /lib/modules/4.4.4/kernel/mod-loop-a.ko x=1 \n", b"")),
    (Case.of("modprobe", "-S", "4.4.4", "-c"),
     Result(0, b"options mod_loop_a x=1\noptions mod_loop_b y=2\n\n"
               b"# End of configuration files. Dumping indexes now:\n\n"
               b"alias symbol:printA mod_loop_a\nalias symbol:printB mod_loop_b\n", b"")),
    (Case.of("modprobe", "-S", "4.4.4", "nope"),
     Result(1, b"", b"modprobe: FATAL: Module nope not found in directory "
                    b"/lib/modules/4.4.4\n")),
    (Case.of("modprobe", "-S", "4.4.4", "-v", "-n", "mod-loop-b",
             env={"MODPROBE_OPTIONS": "--first-time"}),
     Result(1, b"", b"modprobe: ERROR: could not insert 'mod_loop_b': "
                    b"Module already in kernel\n")),
    # The masked paths: present ones show the fake root, absent ones are absent.
    (Case.of("/bin/cat", "/etc/modprobe.d/a.conf"), Result(0, b"options mod-loop-a x=1\n", b"")),
    (Case.of("/usr/bin/test", "-e", "/lib/modprobe.d"), Result(1, b"", b"")),
    (Case.of("/usr/bin/test", "-e", "/run/modprobe.d"), Result(1, b"", b"")),
    (Case.of("/usr/bin/test", "-e", "/usr/local/lib/modprobe.d"), Result(1, b"", b"")),
    (Case.of("/bin/ls", "/sys/module"), Result(0, b"mod_loop_b\n", b"")),
    (Case.of("/bin/cat", "/proc/cmdline"), Result(0, b"mod_loop_b.y=2 quiet\n", b"")),
    (Case.of("/usr/bin/env"), Result(0, b"PATH=" + DEFAULT_PATH.encode() + b"\n", b"")),
)


def host_view() -> dict[str, bool]:
    return {m.target: os.path.lexists(m.target) for m in masks_for("/nonexistent")}


def selftest() -> int:
    """Check the runner against hand-verified answers; print a line per case; 0 if all pass."""
    failures = 0
    before = host_view()
    with tempfile.TemporaryDirectory(prefix="kmodrun-selftest-") as base:
        root = make_selftest_root(base)
        cases = [c for c, _ in SELFTEST]
        for (case, want), got in zip(SELFTEST, run_cases(root, cases), strict=True):
            ok = got == want
            failures += not ok
            print(("ok   " if ok else "FAIL ") + case.label())
            if not ok:
                print(f"     want {want}\n     got  {got}")
        # Nothing leaked to the host: its own view of the masked paths is unchanged.
        after = host_view()
        if after != before:
            failures += 1
            print(f"FAIL host view changed: {before} -> {after}")
    print("selftest:", "PASS" if not failures else f"{failures} FAILED")
    return 1 if failures else 0


def bench(n: int = 2000) -> int:
    """Cases per second for `--show-depends` of the Debian tree's modules, one namespace."""
    import time

    from tests import kerneltree

    tree = kerneltree.debian_kernel_tree()
    names = _module_names(tree.moddir)[:n]
    cases = [Case.of("modprobe", "-d", tree.root, "-S", tree.kver, "--show-depends", m)
             for m in names]
    with tempfile.TemporaryDirectory(prefix="kmodrun-bench-") as root:
        t0 = time.monotonic()
        with KmodRunner(root) as kmod:
            t1 = time.monotonic()
            results = kmod.run(cases)
            t2 = time.monotonic()
    bad = sum(r.rc != 0 for r in results)
    print(f"namespace set-up {t1 - t0:.3f} s; {len(cases)} cases in {t2 - t1:.2f} s = "
          f"{len(cases) / (t2 - t1):.0f} cases/s ({os.cpu_count()} CPUs); {bad} non-zero exits")
    return 0


def _module_names(moddir: str) -> list[str]:
    names = []
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            path = line.split(":", 1)[0]
            names.append(os.path.basename(path).split(".", 1)[0])
    return names


def show(root: str, argv: Sequence[str]) -> int:
    """Run one command against `root` and print what it wrote (repr), for exploring kmod."""
    (result,) = run_cases(root, [Case.of(*argv)])
    print(f"rc {result.rc}")
    for name, data in (("stdout", result.stdout), ("stderr", result.stderr)):
        print(f"--- {name} ({len(data)} bytes)")
        for line in data.splitlines(keepends=True)[:200]:
            print("   ", repr(line)[2:-1])
    return 0


USAGE = """usage: python -m tests.oracle.kmodrun --selftest
       python -m tests.oracle.kmodrun --bench [N]
       python -m tests.oracle.kmodrun --run ROOT TOOL [ARGS...]"""


def main(argv: Iterable[str]) -> int:
    args = list(argv)
    if args == ["--selftest"]:
        return selftest()
    if args[:1] == ["--bench"]:
        return bench(int(args[1]) if len(args) > 1 else 2000)
    if args[:1] == ["--run"] and len(args) >= 3:
        return show(args[1], args[2:])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["Case", "KmodRunner", "Mask", "OracleError", "Result", "kmod_version", "masks_for",
           "run_cases", "run_depmod", "run_depmod_in_place", "write_tree"]
