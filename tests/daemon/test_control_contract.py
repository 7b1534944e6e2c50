"""`io.kmodd.varlink` is the contract: every view the handlers return is its type, field by
field, in order, with the same types (a field that may be absent is `?T`, and None there)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping

from kmodd.core.explain.model import Explanation
from kmodd.core.kmod.initstate import InitState
from kmodd.core.varlink_idl import (
    Array,
    Builtin,
    Dict,
    Enum,
    Maybe,
    Named,
    Struct,
    Type,
    parse_interface,
)
from kmodd.daemon.control import views
from kmodd.daemon.control.interface import IDL
from kmodd.daemon.lifecycle import DaemonState

INTERFACE = parse_interface(IDL)
#: Each view and the type of the text it stands for.
VIEWS: Mapping[type, str] = {
    views.StatusView: "Status",
    views.PreviousInstanceView: "PreviousInstance",
    views.StatisticsView: "Statistics",
    views.PlanStepView: "PlanStep",
    views.DeviceView: "Device",
    views.ReprobeView: "Reprobe",
    views.ModuleView: "Module",
    views.CandidateView: "Candidate",
    views.WhyView: "WhyReport",
    views.LoadResultView: "LoadResult",
}
#: Other Python types the views name, and their types in the text.
NAMED: Mapping[type, str] = {DaemonState: "DaemonState", Explanation: "Explanation", **VIEWS}
#: ModuleState is a closed set sent as a string: a Varlink enum value cannot hold a '-'.
BUILTINS: Mapping[type, str] = {str: "string", int: "int", float: "float", bool: "bool",
                                views.ModuleState: "string"}


def idl_type(hint: object) -> Type:
    """The text's type for a view field's Python type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return Maybe(idl_type(inner))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return Array(idl_type(args[0]))
    if origin in (Mapping, dict) and args[0] is str:
        return Dict(idl_type(args[1]))
    if isinstance(hint, type) and hint in BUILTINS:
        return Builtin(BUILTINS[hint])
    if isinstance(hint, type) and hint in NAMED:
        return Named(NAMED[hint])
    raise AssertionError(f"no type of the text for {hint!r}")


def as_struct(cls: type) -> Struct:
    hints = typing.get_type_hints(cls)
    return Struct(tuple((f.name, idl_type(hints[f.name])) for f in dataclasses.fields(cls)))


def test_every_view_is_its_type_of_the_interface_text() -> None:
    assert {name: as_struct(cls) for cls, name in VIEWS.items()} == {
        name: INTERFACE.types[name] for name in VIEWS.values()}


def test_the_explain_reply_is_its_view() -> None:
    assert as_struct(views.ExplanationView) == INTERFACE.methods["Explain"].output


def test_the_daemon_states_are_the_texts_enum() -> None:
    assert INTERFACE.types["DaemonState"] == Enum(tuple(s.value for s in DaemonState))


def test_a_modules_state_is_the_kernels_initstate_or_one_of_kmodds_two() -> None:
    assert {s.value for s in views.ModuleState} == {s.value for s in InitState} | {
        "loading", "not-loaded"}


def test_every_type_of_the_text_that_a_view_stands_for_has_one() -> None:
    # The rest are built from core values (Explanation's wire form, Monitor's events).
    assert set(INTERFACE.types) - set(NAMED.values()) == {
        "Event", "ExplainEvidence", "ExplainFinding"}
