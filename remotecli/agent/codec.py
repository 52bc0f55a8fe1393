"""Dataclasses to JSON and back, and their JSON Schema: the machinery under ``wire.py``.

A wire dataclass is a plain (frozen) dataclass whose field types are
``str``, ``int``, ``float``, ``bool``, ``Any``, a ``StrEnum``, a ``Literal``,
another wire dataclass, ``list[X]``, ``dict[str, X]`` or ``X | None``. Its
JSON keys are the fields in camelCase (``session_id`` -> ``sessionId``); a
field's metadata (``meta``) may rename it (``key``), drop it from the JSON while it is
None (``omit_none``), keep it out of the body because it travels in the path
or the query (``where``), or add JSON Schema words (``schema``: a minimum, a
pattern, a description). An event (``providers/events.py``) carries its kind
in a ``type`` ClassVar, written first as the ``type`` key.

``to_json`` writes what the agent sends; ``from_json`` reads it back into the
same dataclass on the host and raises ``WireError`` on anything else (a wrong
type, a missing key); ``schema`` describes it for the OpenAPI document.

Stdlib only: this module ships in the guest image with the agent.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class WireError(ValueError):
    """What was read does not have the wire's shape (``where`` names the key)."""

    code = "bad_response"


def meta(
    *,
    key: str | None = None,
    omit_none: bool = False,
    where: Literal["body", "path", "query"] = "body",
    **schema: Any,
) -> dict[str, Any]:
    """A field's wire metadata: ``dataclasses.field(metadata=meta(...))``."""
    return {"key": key, "omit_none": omit_none, "where": where, "schema": schema}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def key_of(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("key") or camel(f.name)


def where_of(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("where", "body"))


def kind_of(cls: type) -> str | None:
    """An event's ``type`` (a ClassVar), None for any other dataclass."""
    kind = getattr(cls, "type", None)
    return kind if isinstance(kind, str) else None


# -- to JSON ---------------------------------------------------------------------


def to_json(value: Any, *, where: str = "body") -> Any:
    """``value`` as JSON-ready data; for a dataclass, only its fields sent ``where``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        kind = kind_of(type(value))
        if kind is not None:
            out["type"] = kind
        for f in dataclasses.fields(value):
            if where_of(f) != where:
                continue
            item = getattr(value, f.name)
            if item is None and f.metadata.get("omit_none"):
                continue
            out[key_of(f)] = to_json(item)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


# -- from JSON -------------------------------------------------------------------


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_json(cls: type[T], data: Any, *, what: str | None = None) -> T:
    """Read ``data`` (the JSON of ``cls``'s body fields) back into ``cls``.

    Unknown keys are ignored (a newer agent may say more); a missing key takes
    the field's default, or is a ``WireError``.
    """
    what = what or cls.__name__
    if not isinstance(data, Mapping):
        raise WireError(f"{what}: expected a JSON object, got {_name(data)}")
    kind = kind_of(cls)
    if kind is not None and data.get("type") != kind:
        raise WireError(f"{what}: expected type {kind!r}, got {data.get('type')!r}")
    declared = hints(typing.cast(type, cls))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if where_of(f) != "body" or not f.init:
            continue
        key = key_of(f)
        if key not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise WireError(f"{what}: the key {key!r} is missing")
            continue
        values[f.name] = decode(declared[f.name], data[key], f"{what}.{key}")
    return cls(**values)


def decode(tp: Any, value: Any, what: str) -> Any:
    """One value of type ``tp`` (see the module's docstring for the types understood)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return decode(arg, value, what)
            except WireError as exc:
                errors.append(str(exc))
        raise WireError(" or ".join(errors) or f"{what}: unexpected {_name(value)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise WireError(f"{what}: expected one of {typing.get_args(tp)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise WireError(f"{what}: expected a list, got {_name(value)}")
        (item,) = typing.get_args(tp)
        return [decode(item, v, f"{what}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise WireError(f"{what}: expected an object, got {_name(value)}")
        _, item = typing.get_args(tp)
        return {str(k): decode(item, v, f"{what}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise WireError(f"{what}: {value!r} is not a {tp.__name__}") from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_json(tp, value, what=what)
    if tp is bool:
        if not isinstance(value, bool):
            raise WireError(f"{what}: expected a boolean, got {_name(value)}")
        return value
    if tp in (int, float):
        # Numbers stay as sent (an int where a float is declared, and the reverse:
        # a CLI's duration may come either way), so writing them again gives the same JSON.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise WireError(f"{what}: expected a number, got {_name(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise WireError(f"{what}: expected a string, got {_name(value)}")
        return value
    raise TypeError(f"{what}: the wire cannot carry {tp!r}")  # a bug in wire.py


def _name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# -- JSON Schema -----------------------------------------------------------------


def schema(cls: type, *, where: str = "body") -> dict[str, Any]:
    """The JSON Schema of ``cls``'s fields sent ``where`` (an object)."""
    declared = hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    kind = kind_of(cls)
    if kind is not None:
        properties["type"] = {"const": kind}
        required.append("type")
    for f in dataclasses.fields(cls):
        if where_of(f) != where:
            continue
        key = key_of(f)
        tp = declared[f.name]
        if f.metadata.get("omit_none"):
            # Never sent as null: None is the key's absence.
            tp = Union[tuple(a for a in typing.get_args(tp) if a is not type(None))]  # noqa: UP007
        properties[key] = type_schema(tp) | f.metadata.get("schema", {})
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(key)
    out: dict[str, Any] = {"type": "object"}
    if required:
        out["required"] = required
    out["properties"] = properties
    return out | getattr(cls, "wire_schema", {})


def type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if tp is Any:
        return {}
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(tp))
        inner = (
            type_schema(args[0]) if len(args) == 1 else {"anyOf": [type_schema(a) for a in args]}
        )
        if not nullable:
            return inner
        if isinstance(inner.get("type"), str):
            return inner | {"type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}
    if origin is Literal:
        values = list(typing.get_args(tp))
        return {"const": values[0]} if len(values) == 1 else {"enum": values}
    if origin is list:
        return {"type": "array", "items": type_schema(typing.get_args(tp)[0])}
    if origin is dict:
        item = type_schema(typing.get_args(tp)[1])
        return {"type": "object"} | ({"additionalProperties": item} if item else {})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return schema(tp)
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"the wire cannot describe {tp!r}")
