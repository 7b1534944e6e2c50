"""core.varlink_idl: interface definitions parse exactly, bad ones are named, values are typed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kmodd.core.varlink_idl import (
    Array,
    Builtin,
    Dict,
    Enum,
    IdlError,
    Maybe,
    MethodSignature,
    Named,
    Struct,
    check_value,
    parse_interface,
)
from kmodd.daemon.control.interface import IDL
from kmodd.daemon.varlink import SERVICE_IDL

EXAMPLE = """\
# A comment before the interface
interface org.example.more-things

type Colour (red, green)
type Thing (
  name: string,
  colour: ?Colour,
  tags: []string,
  sizes: [string]int,
  nested: (x: float, y: ?(a: bool)),
  any: ?object
)

# a method
method Make(things: []Thing, dry: ?bool) -> (made: int)
method Nothing() -> ()
error Failed (reason: string)
"""


def test_every_construct_of_the_language_parses_into_its_value() -> None:
    i = parse_interface(EXAMPLE)
    assert i.name == "org.example.more-things"
    assert i.types["Colour"] == Enum(("red", "green"))
    assert i.types["Thing"] == Struct((
        ("name", Builtin("string")),
        ("colour", Maybe(Named("Colour"))),
        ("tags", Array(Builtin("string"))),
        ("sizes", Dict(Builtin("int"))),
        ("nested", Struct((("x", Builtin("float")),
                           ("y", Maybe(Struct((("a", Builtin("bool")),))))))),
        ("any", Maybe(Builtin("object"))),
    ))
    assert i.methods["Make"] == MethodSignature(
        Struct((("things", Array(Named("Thing"))), ("dry", Maybe(Builtin("bool"))))),
        Struct((("made", Builtin("int")),)),
    )
    assert i.methods["Nothing"] == MethodSignature(Struct(()), Struct(()))
    assert i.errors == {"Failed": Struct((("reason", Builtin("string")),))}


def test_kmodds_own_interfaces_parse() -> None:
    assert parse_interface(IDL).name == "io.kmodd"
    assert set(parse_interface(SERVICE_IDL).errors) == {
        "InterfaceNotFound", "MethodNotFound", "MethodNotImplemented", "InvalidParameter",
        "PermissionDenied", "ExpectedMore"}


@pytest.mark.parametrize(("text", "message"), [
    ("", "line 1: unexpected end, expected 'interface'"),
    ("interface Bad.Name\n", "line 1: 'Bad.Name' is not a valid interface name"),
    ("interface nodots\n", "line 1: 'nodots' is not a valid interface name"),
    ("interface a.b\nmethod m() -> ()\n", "line 2: 'm' is not a valid method name"),
    ("interface a.b\ntype T (x: int\n", "line 2: unexpected end, expected ')'"),
    ("interface a.b\ntype T (x: int, x: int)\n", "line 2: a field name repeats in ['x', 'x']"),
    ("interface a.b\nmethod M(x: Missing) -> ()\n", "a.b: type Missing is used but not defined"),
    ("interface a.b\nmethod M() -> (a, b)\n", "line 2: expected a struct, got an enum"),
    ("interface a.b\nmethod M(x: ??int) -> ()\n", "line 2: '??' is not a type"),
    ("interface a.b\nmethod M() -> ()\nmethod M() -> ()\n", "line 3: M is defined twice"),
    ("interface a.b\nfunction F() -> ()\n",
     "line 2: expected type, method or error, got 'function'"),
    ("interface a.b\n\n\nerror E (x: [int]string)\n", "line 4: expected 'string', got 'int'"),
])
def test_bad_definitions_are_named_by_line(text: str, message: str) -> None:
    with pytest.raises(IdlError) as info:
        parse_interface(text)
    assert str(info.value) == message


@pytest.mark.parametrize(("value", "problem"), [
    ({"things": [], "dry": None}, None),
    ({"things": []}, None),
    ({"things": [{"name": "a", "tags": [], "sizes": {"k": 1}, "nested": {"x": 1}}]}, None),
    ({"things": [{"name": "a", "colour": "red", "tags": ["t"], "sizes": {},
                  "nested": {"x": 1.5, "y": {"a": True}}, "any": {"free": [1]}}]}, None),
    ({}, "things"),
    ({"things": None}, "things"),
    ({"things": {}}, "things"),
    ({"things": [], "extra": 1}, "extra"),
    ({"things": [], "dry": 1}, "dry"),
    ({"things": [{"name": 1}]}, "things[0].name"),
    ({"things": [{"name": "a", "colour": "blue", "tags": [], "sizes": {}, "nested": {"x": 1}}]},
     "things[0].colour"),
    ({"things": [{"name": "a", "tags": [], "sizes": {"k": True}, "nested": {"x": 1}}]},
     "things[0].sizes['k']"),
    ({"things": [{"name": "a", "tags": [], "sizes": {}, "nested": {"x": "1"}}]},
     "things[0].nested.x"),
    ({"things": [{"name": "a", "tags": [], "sizes": {}, "nested": {"x": 1, "y": {}}}]},
     "things[0].nested.y.a"),
    ({"things": [{"name": "a", "tags": [], "sizes": {}, "nested": {"x": 1}, "any": []}]},
     "things[0].any"),
    ([], ""),
])
def test_values_are_checked_against_a_method_input(value: Any, problem: str | None) -> None:
    i = parse_interface(EXAMPLE)
    assert check_value(value, i.methods["Make"].input, i) == problem


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
))
def test_checking_any_json_value_never_raises(value: Any) -> None:
    i = parse_interface(IDL)
    for method in i.methods.values():
        result = check_value(value, method.input, i)
        assert result is None or isinstance(result, str)
