"""Typed answers: `completion(context, query, answer_type=T)` validates and converts what the model submits.

T is a Python type (int, float, str, bool, list[int], dict[str, float], tuple, Optional, Literal, a
dataclass) or, when pydantic is installed, a pydantic model (found by its `model_validate`, so pydantic is
never imported here). A submission that does not fit goes back to the model as an observation with the
reason, and the run goes on within its iteration limit.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from rlm_kernel.core.errors import AnswerMismatch, ConfigError
from rlm_kernel.core.repl import contained

_SCALARS = (int, float, str, bool)

VALUE_METHOD_SECONDS = 2.0  # as long as the value's methods may run, as contained() gives every model-made value


class AnswerType:
    """The expected type of a root answer: its shape for the prompt, and the check of a submission."""

    def __init__(self, expected: Any) -> None:
        if not (isinstance(expected, type) or typing.get_origin(expected) is not None):
            raise ConfigError(
                f"answer_type must be a type (int, list[str], a dataclass, a pydantic model), not {expected!r}"
            )
        self.expected = expected

    @property
    def name(self) -> str:
        return _name(self.expected)

    def shape(self) -> str:
        """What the system prompt says about the answer."""
        if _is_pydantic(self.expected):
            schema = json.dumps(self.expected.model_json_schema(), separators=(",", ":"))
            return f"a {self.name} object: a dict (or JSON text) matching this JSON schema: {schema}"
        if dataclasses.is_dataclass(self.expected):
            fields = ", ".join(f"{f.name}: {_name(f.type)}" for f in dataclasses.fields(self.expected))
            return f"a {self.name}: a dict with the fields {fields}"
        return f"a value of type {self.name}"

    def convert(self, value: Any) -> Any:
        """`value` as the expected type; AnswerMismatch with a one-line reason when it does not fit.

        Checking runs the value's own methods (`__eq__`, `__int__`, `__iter__`, `__repr__`), which the model wrote:
        as with every model-made value, they run contained and under a deadline, and any failure is a mismatch."""
        return contained(lambda: self._convert(value), _unusable, VALUE_METHOD_SECONDS)

    def _convert(self, value: Any) -> Any:
        if _is_pydantic(self.expected):
            return _pydantic(self.expected, value)
        return _convert(self.expected, value, "answer")

    def fitted(self, answer: Any, error: str | None) -> tuple[Any, str | None]:
        """An unfinished run's answer (the iteration limit's last words, a partial one) as a T, or None and why not,
        with the run's error: `result.answer` is a T or None, never the raw value of another type."""
        if answer is None:
            return None, error
        try:
            return self.convert(answer), error
        except AnswerMismatch as exc:
            why = f"its last answer is no {self.name}: {exc}"
            return None, f"{error}; {why}" if error else why

    def mismatch_message(self, error: AnswerMismatch) -> str:
        return f"Your answer was not accepted: it must be {self.shape()}. {error} Fix the value and submit it again."


def _unusable(exc: BaseException) -> Any:
    if isinstance(exc, AnswerMismatch):
        raise exc
    if isinstance(exc, Exception):
        raise AnswerMismatch(f"checking the answer raised {type(exc).__name__} in its own methods") from None
    raise AnswerMismatch(
        f"checking the answer ran past {VALUE_METHOD_SECONDS:g} s in its own methods; submit plain values"
    ) from None


def _is_pydantic(expected: Any) -> bool:
    return isinstance(expected, type) and callable(getattr(expected, "model_validate", None))


def _pydantic(model: Any, value: Any) -> Any:
    try:
        if isinstance(value, (str, bytes)):
            return model.model_validate_json(value)
        return model.model_validate(value)
    except Exception as exc:  # pydantic's ValidationError, without importing pydantic
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise AnswerMismatch("; ".join(lines[:6])) from None


def _name(expected: Any) -> str:
    if isinstance(expected, type) and typing.get_origin(expected) is None:
        return expected.__name__
    return str(expected).replace("typing.", "")


def _fail(where: str, expected: Any, value: Any) -> AnswerMismatch:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:79] + "…"
    return AnswerMismatch(f"{where}: expected {_name(expected)}, got {type(value).__name__} {shown}")


def _from_json(value: Any) -> Any:
    """A list or dict submitted as JSON text is read as the value it spells."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _convert(expected: Any, value: Any, where: str) -> Any:
    if expected is Any or expected is object:
        return value
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin is typing.Union or origin is types.UnionType:
        errors = []
        for option in args:
            try:
                return _convert(option, value, where)
            except AnswerMismatch as exc:
                errors.append(str(exc))
        raise AnswerMismatch(f"{where}: fits none of {_name(expected)} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value in args:
            return value
        raise AnswerMismatch(f"{where}: must be one of {', '.join(map(repr, args))}, not {value!r}")
    if expected is type(None):
        if value is None:
            return None
        raise _fail(where, expected, value)
    if expected in _SCALARS:
        return _scalar(expected, value, where)
    if origin in (list, set, frozenset) or expected in (list, set, frozenset):
        value = _from_json(value)
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise _fail(where, expected, value)
        item = args[0] if args else Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return (origin or expected)(items)
    if origin is tuple or expected is tuple:
        value = _from_json(value)
        if not isinstance(value, (list, tuple)):
            raise _fail(where, expected, value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise AnswerMismatch(f"{where}: expected {len(args)} items ({_name(expected)}), got {len(value)}")
        return tuple(_convert(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(args or [Any] * len(value), value)))
    if origin is dict or expected is dict or origin is Mapping:
        value = _from_json(value)
        if not isinstance(value, Mapping):
            raise _fail(where, expected, value)
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        return {
            _convert(key_type, k, f"{where} key {k!r}"): _convert(value_type, v, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(expected) and isinstance(expected, type):
        return _dataclass(expected, value, where)
    if isinstance(expected, type):
        if isinstance(value, expected):
            return value
        raise _fail(where, expected, value)
    raise ConfigError(f"answer_type {_name(expected)} is not supported; use a plain type, a dataclass or pydantic")


def _scalar(expected: type, value: Any, where: str) -> Any:
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise _fail(where, expected, value)
    if expected is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _fail(where, expected, value)
    if isinstance(value, bool):
        raise _fail(where, expected, value)
    if isinstance(value, str):
        try:
            value = float(value.strip().replace(",", "")) if expected is float else int(value.strip().replace(",", ""))
        except ValueError:
            raise _fail(where, expected, value) from None
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, expected) or (expected is float and isinstance(value, int)):
        return expected(value)
    raise _fail(where, expected, value)


def _dataclass(expected: type, value: Any, where: str) -> Any:
    if isinstance(value, expected):
        return value
    value = _from_json(value)
    if not isinstance(value, Mapping):
        raise _fail(where, expected, value)
    hints = typing.get_type_hints(expected)
    fields = {f.name: f for f in dataclasses.fields(expected)}
    unknown = set(value) - set(fields)
    if unknown:
        raise AnswerMismatch(f"{where}: unknown fields {', '.join(sorted(map(str, unknown)))} for {expected.__name__}")
    missing = [
        name
        for name, f in fields.items()
        if name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise AnswerMismatch(f"{where}: missing fields {', '.join(missing)} of {expected.__name__}")
    return expected(**{k: _convert(hints.get(k, Any), v, f"{where}.{k}") for k, v in value.items()})
