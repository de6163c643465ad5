"""Typed payloads: a declared type, checked against a received JSON payload and built from it.

:func:`converter` compiles a type once into a function that checks a decoded JSON value and
builds the typed value, collecting every problem with its path (``"items[2].qty: expected int,
got str"``). The kinds:

- attrs classes and dataclasses: a JSON object; each init field checked against its annotation
  and passed to the constructor (so the class's own validators and ``__post_init__`` run);
  missing fields without a default are errors; an attrs field with a ``converter`` gets the raw
  JSON value and its converter;
- ``TypedDict``: a JSON object; required keys present, each value checked; the result is a dict;
- pydantic models (pydantic 2, used only if installed): ``Model.model_validate(value)``;
- the JSON types themselves and their compositions: ``str``, ``int``, ``float``, ``bool``,
  ``None``, ``list[T]`` / ``Sequence[T]``, ``tuple[T, ...]``, ``dict[str, T]`` /
  ``Mapping[str, T]``, ``Literal[...]``, ``Enum`` (by value), unions and ``Optional``, ``Any``.

Keys a type does not declare are ignored (as pydantic does by default), so producers can add a
field before every consumer knows it. A type outside these kinds (a ``datetime`` field, say) is
refused when the handler is registered: use a pydantic model, or an attrs ``converter``.

:func:`to_json` is the other direction, the JSON encoder's ``default``: model instances (attrs,
dataclass, pydantic) become JSON objects and enums their values.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, Union

import attrs

from ._errors import InvalidSetting, PayloadError, PayloadValidationError

if TYPE_CHECKING:
    from ._received import ReceivedJob

__all__ = ["Converter", "Invalid", "build", "converter", "to_json", "type_name"]

#: Checks ``value`` at ``path``; returns the built value, or :data:`Invalid` after adding to
#: ``errors``.
Converter = Callable[[object, str, list[str]], Any]


class _Invalid:
    def __repr__(self) -> str:
        return "Invalid"


Invalid: Final = _Invalid()
_QUALIFIERS: Final = frozenset({"Required", "NotRequired", "ReadOnly"})
_SHOWN: Final = 10  # problems listed in a PayloadValidationError's message
_cache: dict[object, Converter] = {}


def type_name(tp: object) -> str:
    """A short readable name for ``tp``: ``Email``, ``list[int]``."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def build(tp: object, job: ReceivedJob) -> Any:
    """``job``'s payload checked against ``tp`` and built as one (``bytes``: the raw body).

    Raises :class:`PayloadValidationError` (with every problem found) for a payload that does
    not fit, or that does not decode; :class:`InvalidSetting` for a type that cannot be checked.
    """
    if tp is bytes:
        return job.body
    converter(tp)  # an unsupported type is said first
    try:
        value = job.payload
    except PayloadError as exc:
        _invalid(tp, [exc.message], job.queue, job.id)
    return check_value(tp, value, queue=job.queue, job_id=job.id)


def check_value(tp: object, value: object, *, queue: str | None, job_id: str | None) -> Any:
    """``value`` (decoded JSON) checked against ``tp`` and built as one: what :func:`build`
    does with a payload, for any value (a reply's). Raises as :func:`build` does."""
    errors: list[str] = []
    built = converter(tp)(value, "", errors)
    if built is not Invalid:
        return built
    _invalid(tp, errors, queue, job_id)


def _invalid(tp: object, errors: list[str], queue: str | None, job_id: str | None) -> NoReturn:
    name = type_name(tp)
    shown = "; ".join(errors[:_SHOWN])
    if len(errors) > _SHOWN:
        shown += f"; and {len(errors) - _SHOWN} more"
    raise PayloadValidationError(
        f"the payload is not a valid {name}: {shown}",
        payload_type=name,
        errors=tuple(errors),
        queue=queue,
        job_id=job_id,
    )


def converter(tp: object) -> Converter:
    """The converter for ``tp``, compiled once. Raises :class:`InvalidSetting` if unsupported."""
    try:
        return _cache[tp]
    except KeyError:
        pass
    except TypeError:  # an unhashable annotation: compile it every time
        return _compile(tp)
    # A recursive type (a Node holding Nodes) finds this trampoline while it is compiled.
    compiled: list[Converter] = []
    _cache[tp] = lambda value, path, errors: compiled[0](value, path, errors)
    try:
        compiled.append(_compile(tp))
    except BaseException:
        del _cache[tp]
        raise
    _cache[tp] = compiled[0]
    return compiled[0]


def _compile(tp: object) -> Converter:
    if tp is Any or tp is object:
        return _identity
    if tp is None or tp is type(None):
        return _none
    if isinstance(tp, typing.NewType):
        return converter(tp.__supertype__)
    origin = typing.get_origin(tp)
    if origin is not None:
        return _generic(tp, origin, typing.get_args(tp))
    if not isinstance(tp, type):
        raise _unsupported(tp)
    if tp is bool:
        return _exact(bool, "bool")
    if tp is int:
        return _int
    if tp is float:
        return _float
    if tp is str:
        return _exact(str, "str")
    if tp in (list, Sequence, tuple):
        return _list(_identity, tuple if tp is tuple else list)
    if tp in (dict, Mapping):
        return _dict(_identity)
    if issubclass(tp, enum.Enum):
        return _enum(tp)
    if _is_pydantic(tp):
        return _pydantic(tp)
    if attrs.has(tp):
        return _attrs(tp)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp)
    if _is_typeddict(tp):
        return _typeddict(tp)
    raise _unsupported(tp)


def _generic(tp: object, origin: object, args: tuple[Any, ...]) -> Converter:
    if origin is Union or origin is types.UnionType:
        return _union(tp, [converter(arg) for arg in args])
    if origin is Literal:
        return _literal(args)
    if getattr(origin, "_name", None) in _QUALIFIERS:  # TypedDict's NotRequired[...] on 3.10
        return converter(args[0])
    if origin in (list, Sequence) and len(args) == 1:
        return _list(converter(args[0]), list)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _list(converter(args[0]), tuple)
    if origin in (dict, Mapping) and len(args) == 2:
        if args[0] is not str:
            raise InvalidSetting(f"{type_name(tp)}: JSON object keys are str, not {args[0]!r}")
        return _dict(converter(args[1]))
    raise _unsupported(tp)


def _unsupported(tp: object) -> InvalidSetting:
    return InvalidSetting(
        f"amqp1q cannot check a payload of type {type_name(tp)}: it checks attrs classes, "
        "dataclasses, TypedDicts, pydantic models and JSON types (str, int, float, bool, None, "
        "list, tuple, dict, Literal, Enum, unions); use a pydantic model, or an attrs field "
        "with a converter, for other types"
    )


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _fail(errors: list[str], path: str, problem: str) -> Any:
    errors.append(f"{path}: {problem}" if path else problem)
    return Invalid


def _got(value: object) -> str:
    return "null" if value is None else type(value).__name__


# -- scalars ------------------------------------------------------------------------------------


def _identity(value: object, path: str, errors: list[str]) -> object:
    return value


def _none(value: object, path: str, errors: list[str]) -> object:
    return None if value is None else _fail(errors, path, f"expected null, got {_got(value)}")


def _exact(kind: type, name: str) -> Converter:
    def check(value: object, path: str, errors: list[str]) -> object:
        if type(value) is kind:
            return value
        return _fail(errors, path, f"expected {name}, got {_got(value)}")

    return check


def _int(value: object, path: str, errors: list[str]) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _fail(errors, path, f"expected int, got {_got(value)}")


def _float(value: object, path: str, errors: list[str]) -> object:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return _fail(errors, path, f"expected float, got {_got(value)}")


def _literal(choices: tuple[Any, ...]) -> Converter:
    def check(value: object, path: str, errors: list[str]) -> object:
        for choice in choices:
            if type(value) is type(choice) and value == choice:
                return choice
        return _fail(errors, path, f"expected one of {list(choices)!r}, got {value!r}")

    return check


def _enum(kind: type[enum.Enum]) -> Converter:
    def check(value: object, path: str, errors: list[str]) -> object:
        try:
            return kind(value)
        except (ValueError, TypeError):
            return _fail(errors, path, f"{value!r} is not a valid {kind.__qualname__}")

    return check


def _union(tp: object, options: list[Converter]) -> Converter:
    def check(value: object, path: str, errors: list[str]) -> object:
        tried: list[str] = []
        for option in options:
            built = option(value, path, tried)
            if built is not Invalid:
                return built
        return _fail(errors, path, f"expected {type_name(tp)}, got {_got(value)}")

    return check


# -- containers ---------------------------------------------------------------------------------


def _list(item: Converter, kind: type) -> Converter:
    def check(value: object, path: str, errors: list[str]) -> object:
        if not isinstance(value, list):
            return _fail(errors, path, f"expected an array, got {_got(value)}")
        before = len(errors)
        built = [item(element, _at(path, index), errors) for index, element in enumerate(value)]
        return Invalid if len(errors) > before else kind(built)

    return check


def _dict(item: Converter) -> Converter:
    def check(value: object, path: str, errors: list[str]) -> object:
        if not isinstance(value, dict):
            return _fail(errors, path, f"expected an object, got {_got(value)}")
        before = len(errors)
        built = {key: item(element, _at(path, key), errors) for key, element in value.items()}
        return Invalid if len(errors) > before else built

    return check


# -- classes ------------------------------------------------------------------------------------


class _Field:
    """One key of a JSON object: its converter, whether it is required, the argument name."""

    __slots__ = ("argument", "check", "key", "required")

    def __init__(self, key: str, check: Converter, required: bool, argument: str) -> None:
        self.key = key
        self.check = check
        self.required = required
        self.argument = argument


def _hints(tp: type, extras: bool = False) -> dict[str, Any]:
    try:
        return typing.get_type_hints(tp, include_extras=extras)
    except Exception as exc:  # NameError for a type defined where its module cannot see it
        raise InvalidSetting(
            f"cannot resolve the annotations of {type_name(tp)}: {exc} "
            "(define payload types at module level)"
        ) from None


def _field(tp: type, key: str, hint: object) -> Converter:
    """The converter of ``tp``'s field ``key``; a refusal names the field."""
    try:
        return converter(hint)
    except InvalidSetting as exc:
        raise InvalidSetting(f"{type_name(tp)}.{key}: {exc.message}") from None


def _object(tp: type, fields: list[_Field], build: Callable[..., Any]) -> Converter:
    name = type_name(tp)

    def check(value: object, path: str, errors: list[str]) -> object:
        if not isinstance(value, dict):
            return _fail(errors, path, f"expected an object ({name}), got {_got(value)}")
        before = len(errors)
        arguments: dict[str, Any] = {}
        for field in fields:
            if field.key in value:
                arguments[field.argument] = field.check(
                    value[field.key], _at(path, field.key), errors
                )
            elif field.required:
                _fail(errors, _at(path, field.key), "missing")
        if len(errors) > before:
            return Invalid
        try:
            return build(**arguments)
        except Exception as exc:  # the class's own validators refused the values
            return _fail(errors, path, f"{type(exc).__name__}: {exc}")

    return check


def _attrs(tp: type) -> Converter:
    hints = _hints(tp)
    fields = [
        _Field(
            field.name,
            _identity
            if field.converter is not None
            else _field(tp, field.name, hints.get(field.name, Any)),
            field.default is attrs.NOTHING,
            field.alias or field.name,
        )
        for field in attrs.fields(tp)
        if field.init
    ]
    return _object(tp, fields, tp)


def _dataclass(tp: type) -> Converter:
    hints = _hints(tp)
    fields = [
        _Field(
            field.name,
            _field(tp, field.name, hints.get(field.name, Any)),
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING,
            field.name,
        )
        for field in dataclasses.fields(tp)
        if field.init
    ]
    return _object(tp, fields, tp)


def _is_typeddict(tp: type) -> bool:
    return issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _typeddict(tp: type) -> Converter:
    # __required_keys__ misses NotRequired[...] written as a string (PEP 563) before 3.12:
    # the annotation itself, with its qualifier, decides where it has one.
    required: frozenset[str] = getattr(tp, "__required_keys__", frozenset())
    fields = []
    for key, hint in _hints(tp, extras=True).items():
        needed = key in required
        while True:
            origin = typing.get_origin(hint)
            if origin is typing.Annotated:
                hint = typing.get_args(hint)[0]
            elif getattr(origin, "_name", None) in _QUALIFIERS:
                needed = {"Required": True, "NotRequired": False}.get(origin._name, needed)
                hint = typing.get_args(hint)[0]
            else:
                break
        fields.append(_Field(key, _field(tp, key, hint), needed, key))
    return _object(tp, fields, dict)


def _is_pydantic(tp: type) -> bool:
    pydantic = sys.modules.get("pydantic")  # never imported here: a model's module did it
    return pydantic is not None and issubclass(tp, pydantic.BaseModel)


def _pydantic(tp: type) -> Converter:
    validate = getattr(tp, "model_validate", None)
    if validate is None:
        raise InvalidSetting(f"{type_name(tp)} is a pydantic 1 model; amqp1q needs pydantic 2")
    invalid: Any = sys.modules["pydantic"].ValidationError

    def check(value: object, path: str, errors: list[str]) -> object:
        try:
            return validate(value)
        except invalid as exc:  # pydantic.ValidationError
            for error in exc.errors(include_url=False, include_input=False):
                where = path
                for key in error["loc"]:
                    where = _at(where, key)
                _fail(errors, where, error["msg"])
            return Invalid

    return check


# -- the other way: model instances to JSON -----------------------------------------------------


def to_json(value: object) -> object:
    """The JSON encoder's ``default``: attrs, dataclass and pydantic instances, and enums."""
    kind = type(value)
    if attrs.has(kind):
        return {field.name: getattr(value, field.name) for field in attrs.fields(kind)}
    if dataclasses.is_dataclass(value):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if _is_pydantic(kind):
        return value.model_dump(mode="json", by_alias=True)  # type: ignore[attr-defined]
    raise TypeError(f"Object of type {kind.__name__} is not JSON serializable")
