"""Read-only views of a context's lists and dicts: one object, shared by every node of a run, never copied.

A context can be a million records. A deep copy per node doubled the memory and took seconds, so each
node's `context` is instead a read-only view of the caller's object:

- ReadOnlyList and ReadOnlyDict are real list and dict subclasses (isinstance, len, json.dumps, repr and
  pandas work as on the caller's object); each holds references to the caller's items (a list's view costs
  8 bytes an item; no item is copied);
- reading an item that is a list, dict or set gives a read-only view of it, made then (its cost is that item's
  size alone), so nested values are read-only too;
- a method that would change a view raises TypeError saying how to get a copy to change;
- `.copy()`, `copy.copy`, slices and `+` give plain lists and dicts of read-only items (Python's shallow copy);
  `copy.deepcopy` gives plain, fully changeable lists and dicts; pickling keeps a view read-only.

Not guarded: objects that are not lists, dicts or sets (shared as they are), and C code that reads a list's
array directly (numpy's object arrays), which sees the caller's items.
"""

from __future__ import annotations

import copy
from collections.abc import ItemsView, Iterator, ValuesView
from typing import Any, NoReturn, SupportsIndex

READ_ONLY_MESSAGE = (
    "the context is read-only: every node of the run shares this one object. Change a copy of it, "
    "e.g. rows = copy.deepcopy(context[:100]) or row = dict(context[0])"
)


def _refuse(*args: object, **kwargs: object) -> NoReturn:
    raise TypeError(READ_ONLY_MESSAGE)


def read_only(value: Any) -> Any:
    """`value` itself when it cannot be changed (or is a view already); a read-only view of a list, dict or set."""
    kind = type(value)
    if kind is dict:
        return ReadOnlyDict(value)
    if kind is list:
        return ReadOnlyList(value)
    if kind is ReadOnlyList or kind is ReadOnlyDict:
        return value
    if isinstance(value, dict):
        return ReadOnlyDict(value)
    if isinstance(value, list):
        return ReadOnlyList(value)
    if isinstance(value, set):
        return frozenset(value)
    return value


class ReadOnlyList(list):  # type: ignore[type-arg]
    """A list that cannot be changed, whose list, dict and set items read as read-only views."""

    __slots__ = ()

    def __getitem__(self, index: SupportsIndex | slice) -> Any:
        if isinstance(index, slice):
            return [read_only(item) for item in list.__getitem__(self, index)]
        return read_only(list.__getitem__(self, index))

    def __iter__(self) -> Iterator[Any]:
        return map(read_only, list.__iter__(self))

    def __reversed__(self) -> Iterator[Any]:
        return map(read_only, list.__reversed__(self))

    def copy(self) -> list[Any]:
        return list(self)

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return copy.deepcopy(list.copy(self), memo)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return ReadOnlyList, (list.copy(self),)

    def __add__(self, other: list[Any]) -> list[Any]:
        return list(self) + other

    def __radd__(self, other: list[Any]) -> list[Any]:
        return other + list(self)

    def __mul__(self, times: SupportsIndex) -> list[Any]:
        return list(self) * times

    __rmul__ = __mul__
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse


class ReadOnlyDict(dict):  # type: ignore[type-arg]
    """A dict that cannot be changed, whose list, dict and set values read as read-only views."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        return read_only(dict.__getitem__(self, key))

    def get(self, key: Any, default: Any = None) -> Any:
        return read_only(dict.__getitem__(self, key)) if key in self else default

    def __iter__(self) -> Iterator[Any]:
        # Defined so that dict(view), {**view} and `|` read values through __getitem__ (CPython copies a dict
        # whose __iter__ is dict's own by its table, which would hand out the caller's nested values).
        return dict.__iter__(self)

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        return ValuesView(self)

    def items(self) -> ItemsView[Any, Any]:  # type: ignore[override]
        return ItemsView(self)

    def copy(self) -> dict[Any, Any]:
        return dict(self)

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        return copy.deepcopy(dict(dict.items(self)), memo)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return ReadOnlyDict, (dict(dict.items(self)),)

    def __or__(self, other: dict[Any, Any]) -> dict[Any, Any]:
        return dict(self) | other

    def __ror__(self, other: dict[Any, Any]) -> dict[Any, Any]:
        return other | dict(self)

    __setitem__ = __delitem__ = __ior__ = _refuse
    pop = popitem = setdefault = update = clear = _refuse
