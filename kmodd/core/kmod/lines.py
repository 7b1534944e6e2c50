"""Logical lines of a kmod config file, read the way kmod's `freadline_wrapped` reads them.

* A backslash before a newline joins two physical lines; the line number counts both.
* A backslash before any other character is dropped and the character kept (`\\\\` is `\\`).
* A backslash as the very last byte of the file is followed by EOF; kmod stores that EOF as
  the byte 0xFF, so the line ends in U+00FF here (bytes are decoded as Latin-1, see below).
* A NUL byte ends a line's text for every C string function; the rest of that line is lost.

Text is decoded byte-for-byte as Latin-1 so that any file, whatever its encoding, parses
like kmod parses it, and re-encoding with Latin-1 gives the original bytes back.
"""

from __future__ import annotations

from collections.abc import Iterator


def logical_lines(data: bytes) -> Iterator[tuple[int, str]]:
    """Yield (line number of the last physical line, text) for each logical line."""
    text = data.decode("latin-1")
    if "\\" not in text:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for n, line in enumerate(lines, 1):
            nul = line.find("\0")
            yield n, line if nul < 0 else line[:nul]
        return
    yield from _wrapped(text)


def _wrapped(text: str) -> Iterator[tuple[int, str]]:
    lineno = 0
    buf: list[str] = []
    i = 0
    n = len(text)
    consumed = 0  # physical newlines inside the current logical line
    while i < n:
        c = text[i]
        if c == "\n":
            lineno += consumed + 1
            consumed = 0
            line = "".join(buf)
            nul = line.find("\0")
            yield lineno, line if nul < 0 else line[:nul]
            buf = []
        elif c == "\\":
            i += 1
            if i >= n:
                buf.append("\xff")
                break
            if text[i] == "\n":
                consumed += 1
            else:
                buf.append(text[i])
        else:
            buf.append(c)
        i += 1
    if buf:
        lineno += consumed + 1
        line = "".join(buf)
        nul = line.find("\0")
        yield lineno, line if nul < 0 else line[:nul]
