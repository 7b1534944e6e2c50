"""From a name or alias to modules, exactly as libkmod resolves it.

libkmod keeps one object per module name, or per `name\\alias` when the module was found
through an alias, and caches on it what it learns (path, dependencies, options, install and
remove commands, builtin). Results depend on that: options can match the alias text, an
install command found by exact name sticks to the object, a dependency path is stat()ed and
made absolute. `Resolver` reproduces those objects (`Module`) for one run, and the lookup
chain of `kmod_module_new_from_lookup`:

1. config `alias` lines (fnmatch, every match, alias = the pattern text)
2. `modules.dep.bin`, exact name (not for keys with `:`)
3. `modules.symbols.bin`, for `symbol:` keys
4. the first `install` line whose key equals the name, else the first such `remove` line
5. `modules.alias.bin` (every match, ordered by module priority)
6. `modules.builtin.bin`, exact name
7. `modules.builtin.alias.bin`

The first step that finds anything wins. The system is seen only through `SystemView`
(file existence for dependency paths, the current directory), so this stays pure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from enum import Enum
from errno import EEXIST, EINVAL, ENAMETOOLONG, ENOENT
from typing import Generic, Protocol, TypeVar

from kmodd.core.kmod.config import Config, Softdep
from kmodd.core.kmod.glob import Matcher, compile_pattern
from kmodd.core.kmod.index import Indexes
from kmodd.core.kmod.libkmodlog import LibkmodEvent
from kmodd.core.kmod.normalize import BadAlias, alias_normalize, modname_normalize, path_to_modname

T = TypeVar("T")

PATH_MAX = 4096
#: Where libkmod prints its context pointer (`ctx=%p`), kmodd prints this stand-in; the front
#: end may replace it.
CTX = "(ctx)"


class SystemView(Protocol):
    """The little of the system the resolver needs to see."""

    def stat_errno(self, path: str) -> int:
        """0 if `path` exists (stat succeeds), else the errno."""
        ...

    def cwd(self) -> str:
        """The current directory, for relative paths."""
        ...


class Builtin(Enum):
    UNKNOWN = 0
    YES = 1
    NO = 2


class Module:
    """libkmod's `struct kmod_module`: one per name (or name and alias) per run."""

    __slots__ = (
        "alias", "builtin", "dep_init", "deps", "ignorecmd", "install", "install_init",
        "name", "options", "options_init", "path", "remove", "remove_init", "required",
        "visited",
    )

    def __init__(self, name: str, alias: str | None = None) -> None:
        self.name = name
        self.alias = alias
        self.path: str | None = None
        self.dep_init = False
        self.deps: list[Module] = []
        self.builtin = Builtin.UNKNOWN
        self.install_init = False
        self.install: str | None = None
        self.remove_init = False
        self.remove: str | None = None
        self.options_init = False
        self.options: str | None = None
        self.visited = False
        self.ignorecmd = False
        self.required = False

    def __repr__(self) -> str:
        return f"Module({self.name!r}, alias={self.alias!r}, path={self.path!r})"




class ModuleLookupError(Exception):
    """A lookup that failed outright (libkmod returns a negative errno)."""

    def __init__(self, errno: int) -> None:
        super().__init__(errno)
        self.errno = errno


#: Where `Resolver.lookup` found its answer (`Resolver.last_source`), in chain order.
LOOKUP_SOURCES = (
    "config-alias",
    "modules.dep",
    "modules.symbols",
    "install-command",
    "modules.alias",
    "modules.builtin",
    "modules.builtin.alias",
)


class FirstMatch(Generic[T]):
    """The value of the first of an ordered list of fnmatch patterns that matches a name.

    Most patterns are plain module names: those sit in a dict (the first line for each
    name), and only the patterns with wildcards or escapes are tried, in order, up to the
    line of the plain hit. The answer is the one trying every pattern in order gives.
    """

    __slots__ = ("_plain", "_wild")

    def __init__(self, items: Iterable[tuple[str, T]]) -> None:
        self._plain: dict[str, tuple[int, T]] = {}
        self._wild: list[tuple[int, Matcher, T]] = []
        for i, (pattern, value) in enumerate(items):
            if _SPECIAL.search(pattern):
                self._wild.append((i, compile_pattern(pattern), value))
            else:
                self._plain.setdefault(pattern, (i, value))

    def __bool__(self) -> bool:
        return bool(self._plain or self._wild)

    def first(self, name: str) -> T | None:
        plain = self._plain.get(name)
        for i, match, value in self._wild:
            if plain is not None and i > plain[0]:
                break
            if match(name):
                return value
        return plain[1] if plain is not None else None


#: What makes an fnmatch pattern more than a plain string.
_SPECIAL = re.compile(r"[*?\[\\]")


class CompiledConfig:
    """What the resolver derives from a Config, once per Config (see `compiled`).

    Besides the alias matchers and the exact-key command tables, the `softdep`, `install`
    and `remove` keys (fnmatch patterns matched against every module of a probe list) are
    indexed (`FirstMatch`): a probe asks them for every module it lists.
    """

    __slots__ = ("alias_matchers", "blacklist", "first_install", "first_remove",
                 "install_matchers", "remove_matchers", "softdep_matchers")

    def __init__(self, config: Config) -> None:
        self.alias_matchers = tuple(
            (compile_pattern(pattern), pattern, name) for pattern, name in config.aliases
        )
        self.blacklist = frozenset(config.blacklists)
        self.first_install: dict[str, str] = {}
        for key, cmd in config.installs:
            self.first_install.setdefault(key, cmd)
        self.first_remove: dict[str, str] = {}
        for key, cmd in config.removes:
            self.first_remove.setdefault(key, cmd)
        self.install_matchers = FirstMatch(config.installs)
        self.remove_matchers = FirstMatch(config.removes)
        self.softdep_matchers = FirstMatch((sd.name, sd) for sd in config.softdeps)

    def softdep(self, name: str) -> Softdep | None:
        """The first softdep line whose key matches `name` (only that one counts)."""
        return self.softdep_matchers.first(name)


_COMPILED: dict[int, tuple[Config, CompiledConfig]] = {}
_COMPILED_MAX = 8


def compiled(config: Config) -> CompiledConfig:
    """The CompiledConfig of a Config, built on first use and kept while it is in use.

    A daemon swaps its Config on reload; only the last few are kept (a bounded table keyed
    by identity, holding the Config so the identity cannot be reused).
    """
    hit = _COMPILED.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    c = CompiledConfig(config)
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[id(config)] = (config, c)
    return c


class Resolver:
    """One libkmod context's worth of module objects over an index and a configuration."""

    def __init__(
        self,
        indexes: Indexes,
        config: Config,
        system: SystemView,
        log: Callable[[LibkmodEvent], None] | None = None,
    ) -> None:
        self.indexes = indexes
        self.config = config
        self.system = system
        self.moddir = indexes.moddir
        self.pool: dict[str, Module] = {}
        #: Objects whose `visited` or `required` mark a probe set (see `reset_marks`).
        self.marked: list[Module] = []
        self.records: list[LibkmodEvent] = []
        self._log = log if log is not None else self.records.append
        c = compiled(config)
        self._compiled = c
        self._blacklist = c.blacklist
        self._alias_matchers = c.alias_matchers
        self._first_install = c.first_install
        self._first_remove = c.first_remove
        #: The lookup step that answered the last `lookup` (a LOOKUP_SOURCES entry), or None.
        self.last_source: str | None = None

    # -- objects -----------------------------------------------------------------------------

    def _get(self, key: str, name: str, alias: str | None) -> Module:
        mod = self.pool.get(key)
        if mod is None:
            mod = Module(name=name, alias=alias)
            self.pool[key] = mod
        return mod

    def new_from_name(self, name: str) -> Module:
        norm = modname_normalize(name)
        return self._get(norm, norm, None)

    def new_from_alias(self, alias: str, name: str) -> Module:
        if len(name) + len(alias) + 2 > PATH_MAX:
            raise ModuleLookupError(ENAMETOOLONG)
        return self._get(f"{name}\\{alias}", name, alias)

    def new_from_path(self, path: str) -> Module:
        """A module object for a file (which must exist), as kmod_module_new_from_path."""
        abspath = path if path.startswith("/") else f"{self.system.cwd()}/{path}"
        err = self.system.stat_errno(abspath)
        if err:
            raise ModuleLookupError(err)
        name = path_to_modname(path)
        if name is None:
            raise ModuleLookupError(ENOENT)
        mod = self.pool.get(name)
        if mod is not None:
            if mod.path is None:
                mod.path = abspath
            elif mod.path != abspath:
                self._log(LibkmodEvent(
                    "path_conflict",
                    f"kmod_module '{name}' already exists with different path: "
                    f"new-path='{abspath}' old-path='{mod.path}'\n",
                ))
                raise ModuleLookupError(EEXIST)
        else:
            mod = self._get(name, name, None)
            mod.path = abspath
        mod.builtin = Builtin.NO
        return mod

    # -- lazily known facts --------------------------------------------------------------------

    def parse_depline(self, mod: Module, line: str) -> None:
        """kmod_module_parse_depline: set the path (if unset) and the dependency objects."""
        if mod.dep_init:
            return
        mod.dep_init = True
        colon = line.find(":")
        if colon < 0:
            return
        dirname = self.moddir
        if len(dirname) + 2 >= PATH_MAX:
            return
        prefix = dirname + "/"
        relpath = line[:colon]
        if mod.path is None:
            joined = relpath if relpath.startswith("/") else prefix + relpath
            if not relpath.startswith("/") and len(prefix) + len(relpath) + 1 >= PATH_MAX:
                return
            mod.path = joined
        deps: list[Module] = []
        for tok in line[colon + 1 :].replace("\t", " ").split(" "):
            if not tok:
                continue
            if tok.startswith("/"):
                dep_path = tok
            else:
                if len(prefix) + len(tok) + 1 >= PATH_MAX:
                    self._log(LibkmodEvent(
                        "dep_join", f"could not join path '{dirname}' and '{tok}'.\n"))
                    mod.dep_init = False
                    return
                dep_path = prefix + tok
            try:
                dep = self.new_from_path(dep_path)
            except ModuleLookupError as e:
                self._log(LibkmodEvent(
                    "dep_path", f"ctx={CTX} path={dep_path} error={os.strerror(e.errno)}\n"))
                mod.dep_init = False
                return
            deps.append(dep)
        deps.reverse()  # libkmod prepends: the line's last entry loads first
        mod.deps = deps

    def dependencies(self, mod: Module) -> list[Module]:
        if not mod.dep_init:
            line = self.indexes.dep_line(mod.name)
            if line is None:
                return []
            self.parse_depline(mod, line)
            if not mod.dep_init:
                return []
        return mod.deps

    def path(self, mod: Module) -> str | None:
        if mod.path is not None:
            return mod.path
        if mod.dep_init:
            return None
        line = self.indexes.dep_line(mod.name)
        if line is None:
            return None
        self.parse_depline(mod, line)
        return mod.path

    def is_builtin(self, mod: Module) -> bool:
        if mod.builtin is Builtin.UNKNOWN:
            mod.builtin = Builtin.YES if self.indexes.builtin(mod.name) else Builtin.NO
        return mod.builtin is Builtin.YES

    def options(self, mod: Module) -> str | None:
        """kmod_module_get_options: every options line for the name or the alias, joined."""
        if not mod.options_init:
            parts = [
                text
                for key, text in self.config.options
                if text and (key == mod.name or (mod.alias is not None and key == mod.alias))
            ]
            mod.options = " ".join(parts) if parts else None
            mod.options_init = True
        return mod.options

    def install_command(self, mod: Module) -> str | None:
        if not mod.install_init:
            mod.install = self._compiled.install_matchers.first(mod.name)
            mod.install_init = True
        return mod.install

    def remove_command(self, mod: Module) -> str | None:
        if not mod.remove_init:
            mod.remove = self._compiled.remove_matchers.first(mod.name)
            mod.remove_init = True
        return mod.remove

    def softdeps(self, mod: Module) -> tuple[list[Module], list[Module]]:
        """The first softdep line whose key matches the name, each dependency looked up."""
        sd = self._compiled.softdep(mod.name)
        if sd is None:
            return [], []
        return self._lookup_each(sd.pre), self._lookup_each(sd.post)

    def _lookup_each(self, names: tuple[str, ...]) -> list[Module]:
        out: list[Module] = []
        for depname in names:
            try:
                out.extend(self.lookup(depname))
            except ModuleLookupError:
                self._log(LibkmodEvent(
                    "softdep_lookup",
                    f"failed to lookup soft dependency '{depname}', continuing anyway.\n"))
        return out

    def is_blacklisted(self, mod: Module) -> bool:
        return mod.name in self._blacklist

    # -- the lookup chain ------------------------------------------------------------------

    def lookup(self, given: str) -> list[Module]:
        """kmod_module_new_from_lookup: raises ModuleLookupError for an invalid alias.

        Sets `last_source` to the step that answered (None when nothing was found).
        """
        self.last_source = None
        try:
            key = alias_normalize(given)
        except BadAlias:
            raise ModuleLookupError(EINVAL) from None
        indexes = self.indexes
        if self._alias_matchers:
            found = self._from_config(key)
            if found:
                self.last_source = "config-alias"
                return found
        if ":" not in key:
            line = indexes.dep_line(key)
            if line is not None:
                mod = self.new_from_name(key)
                self.parse_depline(mod, line)
                self.last_source = "modules.dep"
                return [mod]
        elif key.startswith("symbol:"):
            names = indexes.symbols(key)
            if names:
                self.last_source = "modules.symbols"
                return [self.new_from_alias(key, n) for n in names]
        if key in self._first_install or key in self._first_remove:
            self.last_source = "install-command"
            return self._from_commands(key)
        names = indexes.aliases(key)
        if names:
            self.last_source = "modules.alias"
            return [self.new_from_alias(key, n) for n in names]
        if self.indexes.builtin(key):
            mod = self.new_from_name(key)
            mod.builtin = Builtin.YES
            self.last_source = "modules.builtin"
            return [mod]
        names = self.indexes.builtin_aliases(key)
        if names:
            mods = [self.new_from_alias(key, n) for n in names]
            for m in mods:
                m.builtin = Builtin.YES
            self.last_source = "modules.builtin.alias"
            return mods
        return []

    def _from_config(self, key: str) -> list[Module]:
        return [
            self.new_from_alias(pattern, name)
            for match, pattern, name in self._alias_matchers
            if match(key)
        ]

    def _from_commands(self, key: str) -> list[Module]:
        """The first install line keyed exactly `key`, else the first such remove line."""
        cmd = self._first_install.get(key)
        if cmd is not None:
            mod = self.new_from_name(key)
            mod.install = cmd
            mod.install_init = True
            return [mod]
        cmd = self._first_remove.get(key)
        if cmd is not None:
            mod = self.new_from_name(key)
            mod.remove = cmd
            mod.remove_init = True
            return [mod]
        return []

    def reset_marks(self) -> None:
        """Before a probe: clear `visited` and `required` on every object (as libkmod does).

        Only a probe sets them, and it lists what it marks in `marked`, so only those are
        cleared: a long-lived resolver's pool may hold thousands of objects.
        """
        for mod in self.marked:
            mod.visited = False
            mod.required = False
        self.marked.clear()


