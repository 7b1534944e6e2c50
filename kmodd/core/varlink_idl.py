"""Varlink interface definitions (IDL): parse the text, and check JSON values against it.

Grammar (varlink.org "Interface Definition"), as far as kmodd's interfaces and
`org.varlink.service` need it, which is the whole language:

    interface io.example
    type Name (field: type, ...)          # a struct
    type Kind (one, two)                  # an enum
    method Do(in: type, ...) -> (out: type, ...)
    error Failed (reason: string)

Types: `bool`, `int`, `float`, `string`, `object`, `?T` (may be null or absent), `[]T`,
`[string]T` (a map), a type name, or an inline struct or enum. `#` starts a comment.
`check_value` is how the server refuses badly typed parameters before any handler runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BUILTIN_TYPES = frozenset({"bool", "int", "float", "string", "object"})
_TOKEN = re.compile(r"\s+|#[^\n]*|->|[(),:?\[\]]|[A-Za-z0-9_.-]+|.")
_INTERFACE_NAME = re.compile(r"[a-z]([-]*[a-z0-9])*(\.[a-z0-9]([-]*[a-z0-9])*)+")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")
_FIELD_NAME = re.compile(r"[A-Za-z](_?[A-Za-z0-9])*")


@dataclass(frozen=True, slots=True)
class Builtin:
    name: str


@dataclass(frozen=True, slots=True)
class Maybe:
    inner: Type


@dataclass(frozen=True, slots=True)
class Array:
    inner: Type


@dataclass(frozen=True, slots=True)
class Dict:
    inner: Type


@dataclass(frozen=True, slots=True)
class Struct:
    fields: tuple[tuple[str, Type], ...]


@dataclass(frozen=True, slots=True)
class Enum:
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Named:
    name: str


Type = Builtin | Maybe | Array | Dict | Struct | Enum | Named


@dataclass(frozen=True, slots=True)
class MethodSignature:
    input: Struct
    output: Struct


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    types: Mapping[str, Struct | Enum]
    methods: Mapping[str, MethodSignature]
    errors: Mapping[str, Struct]


class IdlError(ValueError):
    """The IDL text does not parse; the message names the line."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, int]] = []
        line = 1
        for m in _TOKEN.finditer(text):
            token = m.group()
            if not token.isspace() and not token.startswith("#"):
                self.tokens.append((token, line))
            line += token.count("\n")
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def line(self) -> int:
        if self.pos < len(self.tokens):
            return self.tokens[self.pos][1]
        return self.tokens[-1][1] if self.tokens else 1

    def take(self, expected: str | None = None, what: str | None = None) -> str:
        token = self.peek()
        if token is None:
            wanted = what or (repr(expected) if expected else "more")
            raise IdlError(f"line {self.line()}: unexpected end, expected {wanted}")
        if expected is not None and token != expected:
            raise IdlError(f"line {self.line()}: expected {expected!r}, got {token!r}")
        self.pos += 1
        return token

    def name(self, pattern: re.Pattern[str], what: str) -> str:
        line = self.line()
        token = self.take(what=what)
        if not pattern.fullmatch(token):
            raise IdlError(f"line {line}: {token!r} is not a valid {what}")
        return token

    def struct_or_enum(self) -> Struct | Enum:
        self.take("(")
        if self.peek() == ")":
            self.take(")")
            return Struct(())
        first = self.name(_FIELD_NAME, "field name")
        if self.peek() == ":":
            fields = [(first, self.field_type())]
            while self.peek() == ",":
                self.take(",")
                name = self.name(_FIELD_NAME, "field name")
                fields.append((name, self.field_type()))
            self.take(")")
            names = [n for n, _ in fields]
            if len(set(names)) != len(names):
                raise IdlError(f"line {self.line()}: a field name repeats in {names}")
            return Struct(tuple(fields))
        values = [first]
        while self.peek() == ",":
            self.take(",")
            values.append(self.name(_FIELD_NAME, "enum value"))
        self.take(")")
        return Enum(tuple(values))

    def field_type(self) -> Type:
        self.take(":")
        return self.type()

    def type(self) -> Type:
        if self.peek() == "?":
            self.take("?")
            if self.peek() == "?":
                raise IdlError(f"line {self.line()}: '??' is not a type")
            return Maybe(self.type())
        token = self.peek()
        if token == "[":
            self.take("[")
            if self.peek() == "]":
                self.take("]")
                return Array(self.type())
            self.take("string")
            self.take("]")
            return Dict(self.type())
        if token == "(":
            return self.struct_or_enum()
        if token in BUILTIN_TYPES:
            self.take()
            return Builtin(token)
        return Named(self.name(_TYPE_NAME, "type name"))

    def struct(self) -> Struct:
        line = self.line()
        result = self.struct_or_enum()
        if not isinstance(result, Struct):
            raise IdlError(f"line {line}: expected a struct, got an enum")
        return result


def parse_interface(text: str) -> Interface:
    """Parse one interface definition; raise IdlError naming the line when it is not valid."""
    p = _Parser(text)
    p.take("interface")
    name = p.name(_INTERFACE_NAME, "interface name")
    types: dict[str, Struct | Enum] = {}
    methods: dict[str, MethodSignature] = {}
    errors: dict[str, Struct] = {}
    while p.peek() is not None:
        line = p.line()
        keyword = p.take()
        member = p.name(_TYPE_NAME, f"{keyword} name")
        if member in types or member in methods or member in errors:
            raise IdlError(f"line {line}: {member} is defined twice")
        if keyword == "type":
            types[member] = p.struct_or_enum()
        elif keyword == "method":
            inp = p.struct()
            p.take("->")
            methods[member] = MethodSignature(inp, p.struct())
        elif keyword == "error":
            errors[member] = p.struct()
        else:
            raise IdlError(f"line {line}: expected type, method or error, got {keyword!r}")
    interface = Interface(name, types, methods, errors)
    _check_references(interface)
    return interface


def _references(t: Type) -> list[str]:
    match t:
        case Named(name):
            return [name]
        case Maybe(inner) | Array(inner) | Dict(inner):
            return _references(inner)
        case Struct(fields):
            return [r for _, f in fields for r in _references(f)]
        case _:
            return []


def _check_references(interface: Interface) -> None:
    everything: list[Type] = [*interface.types.values(), *interface.errors.values()]
    for m in interface.methods.values():
        everything += [m.input, m.output]
    for t in everything:
        for name in _references(t):
            if name not in interface.types:
                raise IdlError(f"{interface.name}: type {name} is used but not defined")


def check_value(value: Any, t: Type, interface: Interface, path: str = "") -> str | None:
    """None when `value` (decoded JSON) fits type `t`; otherwise the path of the first misfit.

    Struct fields not in the type are misfits; `?T` fields may be absent or null.
    """
    match t:
        case Builtin("bool"):
            ok = isinstance(value, bool)
        case Builtin("int"):
            ok = isinstance(value, int) and not isinstance(value, bool)
        case Builtin("float"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        case Builtin("string"):
            ok = isinstance(value, str)
        case Builtin("object"):
            ok = isinstance(value, dict)
        case Builtin(_):
            ok = False
        case Maybe(inner):
            return None if value is None else check_value(value, inner, interface, path)
        case Array(inner):
            if not isinstance(value, list):
                return path
            for i, item in enumerate(value):
                problem = check_value(item, inner, interface, f"{path}[{i}]")
                if problem is not None:
                    return problem
            return None
        case Dict(inner):
            if not isinstance(value, dict):
                return path
            for key, item in value.items():
                problem = check_value(item, inner, interface, f"{path}[{key!r}]")
                if problem is not None:
                    return problem
            return None
        case Enum(values):
            ok = isinstance(value, str) and value in values
        case Struct(fields):
            return _check_struct(value, fields, interface, path)
        case Named(name):
            return check_value(value, interface.types[name], interface, path)
    return None if ok else path


def _check_struct(
    value: Any, fields: tuple[tuple[str, Type], ...], interface: Interface, path: str
) -> str | None:
    if not isinstance(value, dict):
        return path
    declared = dict(fields)
    for key in value:
        if key not in declared:
            return f"{path}.{key}" if path else str(key)
    for name, field_type in fields:
        sub = f"{path}.{name}" if path else name
        item = value.get(name)
        if item is None:
            if isinstance(field_type, Maybe):
                continue
            return sub
        problem = check_value(item, field_type, interface, sub)
        if problem is not None:
            return problem
    return None
