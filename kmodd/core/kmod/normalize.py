"""Module-name and alias normalisation, exactly as kmod does it.

kmod has three normalisers and uses each in a different place (kmod's `shared/util.c`):

* `modname_normalize` for module names and paths: `-` becomes `_`, and the name ends at the
  first `.` (so `foo.ko` is `foo`).
* `alias_normalize` for lookup keys and for the keys of `modules.alias.bin`: `-` becomes `_`
  except inside `[...]`; a stray `]` or an unterminated `[` is an error; `.` is kept.
* `underscores` for the keys of modprobe.d lines: the same rule as `alias_normalize`.

kmod works in buffers of PATH_MAX bytes, so a name is cut at 4095 characters.
"""

from __future__ import annotations

PATH_MAX = 4096



class BadAlias(ValueError):
    """An alias or config key whose brackets do not pair up."""


def modname_normalize(name: str) -> str:
    """`snd-hda-intel.ko` -> `snd_hda_intel`: dashes to underscores, cut at the first dot."""
    dot = name.find(".")
    if dot >= 0:
        name = name[:dot]
    return name[: PATH_MAX - 1].replace("-", "_")


def path_to_modname(path: str) -> str | None:
    """The module name a path stands for (`/x/snd-pcm.ko.xz` -> `snd_pcm`); None for `x/`."""
    base = path.rstrip("/").rsplit("/", 1)[-1] if path.rstrip("/") else ""
    if not base:
        return None
    return modname_normalize(base)


def _dashes_outside_brackets(key: str) -> str:
    if "[" not in key and "]" not in key:
        return key.replace("-", "_")
    out: list[str] = []
    i = 0
    n = len(key)
    while i < n:
        c = key[i]
        if c == "-":
            out.append("_")
        elif c == "]":
            raise BadAlias("".join(out) + key[i:])  # kmod converts in place: as far as here
        elif c == "[":
            close = key.find("]", i)
            if close < 0:
                raise BadAlias("".join(out) + key[i:])
            out.append(key[i : close + 1])
            i = close
        else:
            out.append(c)
        i += 1
    return "".join(out)


def alias_normalize(alias: str) -> str:
    """Normalise a lookup key; raises BadAlias for a stray `]` or an unterminated `[`."""
    return _dashes_outside_brackets(alias[: PATH_MAX - 1])


def underscores(key: str) -> str:
    """Normalise a modprobe.d key (alias_normalize's rule, without the length cut)."""
    return _dashes_outside_brackets(key)


KMOD_EXTENSIONS = (".ko", ".ko.gz", ".ko.xz", ".ko.zst")


def path_ends_with_kmod_ext(path: str) -> bool:
    """True for `.ko`, `.ko.gz`, `.ko.xz` and `.ko.zst` (kmod's path_ends_with_kmod_ext)."""
    return path.endswith(KMOD_EXTENSIONS)
