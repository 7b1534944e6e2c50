"""modprobe.d configuration and the kernel command line, parsed exactly as kmod 30 parses them.

The steps follow libkmod-config.c:

1. `order_config_files` decides which files are read and in which order, from directory
   listings the system layer hands in: one list sorted by basename across all directories,
   the first directory (highest precedence) winning a name, `modules.softdep` from the module
   directory inserted before everything. Names must end in `.conf` or `.alias`, be at least
   six characters and not start with a dot; a subdirectory is reported and skipped.
2. `parse_config_file` reads one file's logical lines (see `lines.py`) into entries.
3. `parse_kernel_cmdline` turns `/proc/cmdline` into `options` and `blacklist` entries, which
   are appended after every file.

Problems are returned as `Diagnostic` values naming libkmod's message site (the source
location Debian's kmod prints with it) and the text; nothing here prints or raises.

Every entry also keeps where it came from (`Origin`: the file as kmod names it and the
first physical line of its logical line; `/proc/cmdline` line 0 for the command line), in
tuples parallel to the entries (`blacklist_origins[i]` is where `blacklists[i]` was read),
so `kmodctl explain` can point at the line. The entries themselves are unchanged by this.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from kmodd.core.kmod.libkmodlog import LibkmodEvent
from kmodd.core.kmod.lines import logical_lines
from kmodd.core.kmod.normalize import BadAlias, underscores

#: /proc/cmdline is read into a 4096-byte buffer (KCMD_LINE_SIZE) with room for the NUL.
KCMD_LINE_SIZE = 4096
PATH_MAX = 4096



class Diagnostic(NamedTuple):
    """A problem found in the configuration: libkmod's message site and text."""

    message: str  # without the trailing newline
    site: str = "config_bad_line"  # a key of kmodd.core.kmod.libkmodlog.LIBKMOD_SITES

    def event(self) -> LibkmodEvent:
        return LibkmodEvent(self.site, self.message + "\n")


class Softdep(NamedTuple):
    """One `softdep` line: the key pattern and its pre and post lists.

    `words` keeps every pre/post word in line order: kmod stores them in one buffer in that
    order, and `modprobe -c` prints each list as the stretch of that buffer from its first
    to its last word, so interleaved sections show up in both.
    """

    name: str
    pre: tuple[str, ...]
    post: tuple[str, ...]
    words: tuple[tuple[bool, str], ...] = ()  # (is pre, word), in line order

    def text(self) -> str:
        """kmod's `softdep_to_char`; note there is no space before `post:` (a kmod quirk)."""
        words = self.words or tuple([(True, w) for w in self.pre] + [(False, w) for w in self.post])
        out = ""
        for want, label in ((True, "pre: "), (False, "post: ")):
            idx = [i for i, (is_pre, _) in enumerate(words) if is_pre is want]
            if idx:
                out += label + " ".join(w for _, w in words[idx[0] : idx[-1] + 1])
        return out


class Origin(NamedTuple):
    """Where a configuration entry was read: file and line (0 for the command line)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


#: The origin of entries taken from the kernel command line.
CMDLINE_ORIGIN = Origin("/proc/cmdline", 0)


class Config(NamedTuple):
    """Everything modprobe.d and the kernel command line say, in kmod's list order."""

    aliases: tuple[tuple[str, str], ...] = ()  # (pattern, module name)
    blacklists: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()  # (module name or alias, option text)
    installs: tuple[tuple[str, str], ...] = ()  # (key pattern, command)
    removes: tuple[tuple[str, str], ...] = ()
    softdeps: tuple[Softdep, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    files: tuple[str, ...] = ()  # the files read, in order
    # Where each entry above came from, index for index.
    alias_origins: tuple[Origin, ...] = ()
    blacklist_origins: tuple[Origin, ...] = ()
    option_origins: tuple[Origin, ...] = ()
    install_origins: tuple[Origin, ...] = ()
    remove_origins: tuple[Origin, ...] = ()
    softdep_origins: tuple[Origin, ...] = ()

    def blacklist_source(self, name: str) -> str:
        """Where the first `blacklist NAME` was read, in words: `FILE:LINE`, or the kernel
        command line's `modprobe.blacklist=`."""
        for blacklisted, origin in zip(self.blacklists, self.blacklist_origins, strict=False):
            if blacklisted == name and origin.line:
                return str(origin)
        return "the kernel command line (modprobe.blacklist=)"


# -- which files ---------------------------------------------------------------------------


class DirListing(NamedTuple):
    """A configuration path as the system layer found it."""

    path: str
    kind: str  # "dir", "file" or "missing"
    entries: tuple[tuple[str, bool], ...] = ()  # (name, is a directory) in readdir order
    error: str | None = None  # strerror text when the directory could not be opened


class ConfigFile(NamedTuple):
    """A file chosen for reading: its basename (the sort key) and its full path."""

    name: str
    path: str


def _accept(name: str) -> bool:
    if name.startswith("."):
        return False
    return len(name) >= 6 and (name.endswith(".conf") or name.endswith(".alias"))


def order_config_files(
    moddir: str, listings: Sequence[DirListing]
) -> tuple[list[ConfigFile], list[Diagnostic]]:
    """The files libkmod reads, in reading order, and the problems met choosing them."""
    chosen: dict[str, ConfigFile] = {}
    diags: list[Diagnostic] = []

    def insert(name: str, path: str) -> None:
        if name not in chosen:
            chosen[name] = ConfigFile(name, path)

    insert("modules.softdep", f"{moddir}/modules.softdep")
    for listing in listings:
        if listing.kind == "missing":
            continue
        if listing.kind == "file":
            base = listing.path.rsplit("/", 1)[-1] if "/" in listing.path else listing.path
            insert(base, listing.path)
            continue
        if listing.error is not None:
            diags.append(Diagnostic(f"opendir({listing.path}): {listing.error}", "config_opendir"))
            continue
        for name, is_dir in listing.entries:
            if not _accept(name):
                continue
            if is_dir:
                diags.append(
                    Diagnostic(
                        "Directories inside directories are not supported: "
                        f"{listing.path}/{name}",
                        "config_subdir",
                    )
                )
                continue
            full = f"{listing.path}/{name}"
            if len(full) >= PATH_MAX:
                # libkmod reports this only when it comes to read the file (see below).
                pass
            insert(name, full)
    ordered = [chosen[name] for name in sorted(chosen, key=_c_sort_key)]
    return ordered, diags


def _c_sort_key(name: str) -> bytes:
    """strcmp order: bytes, unsigned."""
    return name.encode("latin-1", "surrogateescape")


# -- one file --------------------------------------------------------------------------------


class _Builder:
    """The lists a Config is built from, filled in parse order."""

    def __init__(self) -> None:
        self.aliases: list[tuple[str, str]] = []
        self.blacklists: list[str] = []
        self.options: list[tuple[str, str]] = []
        self.installs: list[tuple[str, str]] = []
        self.removes: list[tuple[str, str]] = []
        self.softdeps: list[Softdep] = []
        self.diagnostics: list[Diagnostic] = []
        self.files: list[str] = []
        self.alias_origins: list[Origin] = []
        self.blacklist_origins: list[Origin] = []
        self.option_origins: list[Origin] = []
        self.install_origins: list[Origin] = []
        self.remove_origins: list[Origin] = []
        self.softdep_origins: list[Origin] = []

    def build(self) -> Config:
        return Config(
            aliases=tuple(self.aliases),
            blacklists=tuple(self.blacklists),
            options=tuple(self.options),
            installs=tuple(self.installs),
            removes=tuple(self.removes),
            softdeps=tuple(self.softdeps),
            diagnostics=tuple(self.diagnostics),
            files=tuple(self.files),
            alias_origins=tuple(self.alias_origins),
            blacklist_origins=tuple(self.blacklist_origins),
            option_origins=tuple(self.option_origins),
            install_origins=tuple(self.install_origins),
            remove_origins=tuple(self.remove_origins),
            softdep_origins=tuple(self.softdep_origins),
        )


_SEPARATORS = " \t"


def _token(line: str, pos: int) -> tuple[str | None, int]:
    """strtok_r(…, "\\t ") : the next token and the position after its terminator."""
    n = len(line)
    while pos < n and line[pos] in _SEPARATORS:
        pos += 1
    if pos >= n:
        return None, n
    end = pos
    while end < n and line[end] not in _SEPARATORS:
        end += 1
    return line[pos:end], min(end + 1, n)


def _rest(line: str, pos: int) -> str | None:
    """strtok_r(NULL, "\\0", …): whatever is left, or None when nothing is."""
    if pos >= len(line):
        return None
    return line[pos:]


def _parse_into(b: _Builder, data: bytes, filename: str) -> None:
    first = 1  # the first physical line of the next logical line
    for lineno, line in logical_lines(data):
        origin = Origin(filename, first)
        first = lineno + 1
        if not line or line[0] == "#":
            continue
        cmd, pos = _token(line, 0)
        if cmd is None:
            continue
        try:
            if cmd == "alias":
                alias, pos = _token(line, pos)
                modname, pos = _token(line, pos)
                if alias is None or modname is None:
                    raise BadAlias(cmd)
                b.aliases.append((underscores(alias), underscores(modname)))
                b.alias_origins.append(origin)
            elif cmd == "blacklist":
                modname, pos = _token(line, pos)
                if modname is None:
                    raise BadAlias(cmd)
                b.blacklists.append(underscores(modname))
                b.blacklist_origins.append(origin)
            elif cmd in ("options", "install", "remove", "softdep"):
                modname, pos = _token(line, pos)
                rest = _rest(line, pos)
                if modname is None or rest is None:
                    raise BadAlias(cmd)
                key = underscores(modname)
                if cmd == "options":
                    b.options.append((key, rest.replace("\t", " ")))
                    b.option_origins.append(origin)
                elif cmd == "install":
                    b.installs.append((key, rest))
                    b.install_origins.append(origin)
                elif cmd == "remove":
                    b.removes.append((key, rest))
                    b.remove_origins.append(origin)
                else:
                    words = softdep_words(rest)
                    b.softdeps.append(Softdep(
                        key,
                        tuple(w for is_pre, w in words if is_pre),
                        tuple(w for is_pre, w in words if not is_pre),
                        words,
                    ))
                    b.softdep_origins.append(origin)
            elif cmd in ("include", "config"):
                b.diagnostics.append(
                    Diagnostic(
                        f"{filename}: command {cmd} is deprecated and not parsed anymore",
                        "config_deprecated",
                    )
                )
            else:
                raise BadAlias(cmd)
        except BadAlias:
            b.diagnostics.append(
                Diagnostic(f"{filename} line {lineno}: ignoring bad line starting with '{cmd}'")
            )


_C_SPACE = " \t\n\v\f\r"


def parse_softdep_text(line: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The pre and post lists of a softdep line (see `softdep_words`)."""
    words = softdep_words(line)
    return (tuple(w for is_pre, w in words if is_pre),
            tuple(w for is_pre, w in words if not is_pre))


def softdep_words(line: str) -> tuple[tuple[bool, str], ...]:
    """kmod's softdep tokenizer, quirks included.

    Tokens are split on whitespace, but the scan keeps a lone leading blank inside the first
    token (so `softdep x  pre: a`, with two spaces, makes ` pre:` a plain word and drops it),
    `pre:`/`post:` switch lists only as whole tokens, and words before either are dropped.
    """
    words: list[tuple[bool, str]] = []
    mode = 0  # 0 none, 1 pre, 2 post
    was_space = False
    p = 0
    n = len(line)
    s = 0
    while True:
        at_end = s >= n
        if not at_end:
            if line[s] not in _C_SPACE:
                was_space = False
                s += 1
                continue
            if was_space:
                p = s + 1
                s += 1
                continue
            was_space = True
            if p >= s:
                s += 1
                continue
        word = line[p:s]
        if word == "pre:":
            mode = 1
        elif word == "post:":
            mode = 2
        elif (not at_end or not was_space) and mode:
            words.append((mode == 1, word))
        p = s + 1
        if at_end:
            break
        s += 1
    return tuple(words)


# -- the kernel command line -----------------------------------------------------------------


def parse_kernel_cmdline(
    data: bytes,
) -> tuple[list[tuple[str, str]], list[str], list[Diagnostic]]:
    """kmod's `kmod_config_parse_kcmdline`: (options, blacklists, diagnostics).

    `mod.param` and `mod.param=value` become `options mod param[=value]`, one entry each;
    `modprobe.blacklist=a,b` becomes blacklist entries (kept as written, not normalised);
    a value may be quoted, and a token quoted as a whole (GRUB style) is re-quoted as
    `mod param="value"`.
    """
    buf = [*data[: KCMD_LINE_SIZE - 1].decode("latin-1").split("\0", 1)[0], "\0"]
    options: list[tuple[str, str]] = []
    blacklists: list[str] = []
    diags: list[Diagnostic] = []

    ignore, modname_st, param_st, value_st, complete = range(5)
    state = modname_st
    modname = 0
    param = -1
    value = -1
    quote_start = -1
    is_quoted = False
    i = 0
    n = len(buf)

    def cstr(at: int) -> str:
        end = at
        while buf[end] != "\0":
            end += 1
        return "".join(buf[at:end])

    while i < n:
        c = buf[i]
        stop = False
        if c == '"':
            is_quoted = not is_quoted
            if is_quoted and state == modname_st and i == modname:
                quote_start = i
                modname = i + 1
            elif state != value_st:
                state = ignore
        elif c in "\0 \n\t\v\f\r":
            if c == "\0":
                stop = True
            if is_quoted and state == value_st:
                pass
            elif is_quoted:
                state = ignore
            elif state in (value_st, param_st):
                buf[i] = "\0"
                state = complete
            else:
                modname = i + 1
                state = modname_st
                quote_start = -1
        elif c == ".":
            if state == modname_st:
                buf[i] = "\0"
                param = i + 1
                state = param_st
            elif state == param_st:
                state = ignore
        elif c == "=":
            if state == param_st:
                value = i + 1
                state = value_st
            elif state == modname_st:
                state = ignore

        if state == complete:
            if quote_start >= 0 and quote_start < modname:
                # "mod.param=v a" -> mod param="v a": shift name and param left by one.
                count = value - modname
                buf[quote_start : quote_start + count] = buf[modname : modname + count]
                value -= 1
                modname -= 1
                param -= 1
                buf[value] = '"'
            _kcmdline_result(cstr(modname), cstr(param), cstr(value) if value >= 0 else None,
                             options, blacklists, diags)
            modname = i + 1
            state = modname_st
            quote_start = -1
        if stop:
            break
        i += 1
    return options, blacklists, diags


def _kcmdline_result(
    modname: str,
    param: str,
    value: str | None,
    options: list[tuple[str, str]],
    blacklists: list[str],
    diags: list[Diagnostic],
) -> None:
    if modname == "modprobe" and param.startswith("blacklist="):
        blacklists.extend((value or "").split(","))
        return
    try:
        name = underscores(modname)
    except BadAlias as e:
        diags.append(
            Diagnostic(
                "Ignoring bad option on kernel command line while parsing module name: "
                f"'{e.args[0]}'",
                "config_kcmdline",
            )
        )
        return
    options.append((name, param.replace("\t", " ")))


# -- putting it together -------------------------------------------------------------------


def build_config(
    files: Iterable[tuple[ConfigFile, bytes | None]],
    cmdline: bytes | None,
    ordering_diagnostics: Iterable[Diagnostic] = (),
) -> Config:
    """Parse the chosen files in order (None = could not be opened), then the command line."""
    b = _Builder()
    b.diagnostics.extend(ordering_diagnostics)
    for cf, data in files:
        if len(cf.path) >= PATH_MAX:
            b.diagnostics.append(
                Diagnostic(
                    f"Error parsing {cf.path.rsplit('/', 1)[0]}/{cf.name}: path too long",
                    "config_path_too_long",
                )
            )
            continue
        if data is None:
            continue
        b.files.append(cf.path)
        _parse_into(b, data, cf.path)
    if cmdline is not None:
        opts, bls, diags = parse_kernel_cmdline(cmdline)
        b.options.extend(opts)
        b.option_origins.extend([CMDLINE_ORIGIN] * len(opts))
        b.blacklists.extend(bls)
        b.blacklist_origins.extend([CMDLINE_ORIGIN] * len(bls))
        b.diagnostics.extend(diags)
    return b.build()


def parse_config_text(text: bytes, filename: str) -> Config:
    """Parse a single file on its own (for tests and for `kmodctl explain`)."""
    b = _Builder()
    _parse_into(b, text, filename)
    return b.build()
