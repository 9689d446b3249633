"""Read-only views of a context (core/readonly.py): nothing model code does through one changes the caller's object,
every way of asking for a copy gives one, and reading works as on a plain list or dict."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from rlm_kernel.core.readonly import READ_ONLY_MESSAGE, ReadOnlyDict, ReadOnlyList, read_only


def _records() -> list[dict[str, Any]]:
    return [{"id": 1, "tags": ["a"], "meta": {"seen": [1]}, "set": {1}}, {"id": 2, "tags": []}]


# Each changes the context through a different door: the view's own methods, its items, nested values, and
# the copies Python makes shallowly (whose items are the context's own).
MUTATIONS: dict[str, Callable[[Any], object]] = {
    "append": lambda v: v.append({}),
    "extend": lambda v: v.extend([{}]),
    "+=": lambda v: v.__iadd__([{}]),
    "*=": lambda v: v.__imul__(2),
    "item assignment": lambda v: v.__setitem__(0, {}),
    "slice assignment": lambda v: v.__setitem__(slice(0, 1), []),
    "del": lambda v: v.__delitem__(0),
    "sort": lambda v: v.sort(key=lambda r: -r["id"]),
    "reverse": lambda v: v.reverse(),
    "pop": lambda v: v.pop(),
    "clear": lambda v: v.clear(),
    "record key": lambda v: v[0].__setitem__("id", 9),
    "record update": lambda v: v[0].update(id=9),
    "record pop": lambda v: v[0].pop("id"),
    "record |=": lambda v: v[0].__ior__({"id": 9}),
    "nested list": lambda v: v[0]["tags"].append("x"),
    "nested via get": lambda v: v[0].get("tags").append("x"),
    "nested dict": lambda v: v[0]["meta"]["seen"].append(2),
    "nested set": lambda v: v[0]["set"].add(2),
    "loop": lambda v: [r["tags"].append("x") for r in v],
    "values()": lambda v: [x.append("x") for x in v[0].values() if isinstance(x, list)],
    "items()": lambda v: [x.append("x") for _, x in v[0].items() if isinstance(x, list)],
    "reversed": lambda v: next(reversed(v)).__setitem__("id", 9),
    "list()": lambda v: list(v)[0].__setitem__("id", 9),  # noqa: RUF015 (list() is the door tried)
    "sorted": lambda v: sorted(v, key=lambda r: r["id"])[0].__setitem__("id", 9),
    "slice": lambda v: v[:1][0].__setitem__("id", 9),
    "unpacking": lambda v: [*v][0].__setitem__("id", 9),  # noqa: RUF015 (unpacking is the door tried)
    "concatenation": lambda v: (v + [])[0].__setitem__("id", 9),  # noqa: RUF005 (concatenation is the door tried)
    "reflected concatenation": lambda v: ([] + v)[0].__setitem__("id", 9),  # noqa: RUF005
    "copy()": lambda v: v.copy()[0].__setitem__("id", 9),
    "copy.copy": lambda v: copy.copy(v)[0].__setitem__("id", 9),
    "dict(record)": lambda v: dict(v[0])["tags"].append("x"),
    "{**record}": lambda v: {**v[0]}["tags"].append("x"),
    "record | {}": lambda v: (v[0] | {})["tags"].append("x"),
    "{} | record": lambda v: ({} | v[0])["tags"].append("x"),
    "record.copy()": lambda v: v[0].copy()["tags"].append("x"),
}


@pytest.mark.parametrize("mutation", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_no_mutation_through_a_view_reaches_the_callers_object(mutation: Callable[[Any], object]) -> None:
    records = _records()
    with pytest.raises((TypeError, AttributeError)):  # AttributeError: frozenset.add
        mutation(read_only(records))
    assert records == _records()


def test_the_refusal_says_how_to_get_a_copy() -> None:
    with pytest.raises(TypeError) as refused:
        read_only(_records())[0]["id"] = 3
    assert str(refused.value) == READ_ONLY_MESSAGE
    assert "copy.deepcopy(context" in READ_ONLY_MESSAGE


def test_deepcopy_gives_plain_changeable_data() -> None:
    records = _records()
    mine = copy.deepcopy(read_only(records))
    assert type(mine) is list and type(mine[0]) is dict and type(mine[0]["tags"]) is list
    mine[0]["tags"].append("x")
    mine.append({})
    assert records == _records()


def test_a_shallow_copy_is_a_plain_list_of_read_only_records() -> None:
    rows = read_only(_records())[:]
    rows.append({"id": 3})  # the list is the model's own
    assert type(rows) is list and type(rows[0]) is ReadOnlyDict and len(rows) == 3
    row = dict(read_only(_records())[0])
    row["id"] = 7  # so is a record copied with dict()
    assert row["id"] == 7 and type(row["tags"]) is ReadOnlyList


def test_views_read_like_the_callers_objects() -> None:
    records = _records()
    view = read_only(records)
    assert isinstance(view, list) and isinstance(view[0], dict)
    assert view == records and len(view) == 2 and view[1]["id"] == 2 and view[0].get("missing", 5) == 5
    assert repr(view) == repr(records)
    plain = [{k: v for k, v in r.items() if k != "set"} for r in records]
    assert json.dumps(read_only(plain)) == json.dumps(plain)
    assert json.dumps(read_only(plain)[0], sort_keys=True) == json.dumps(plain[0], sort_keys=True)
    assert [r["id"] for r in reversed(view)] == [2, 1]
    assert sorted(view[0]) == sorted(records[0]) and set(view[0].keys()) == set(records[0])


def test_a_view_is_returned_as_is_and_survives_pickling() -> None:
    view = read_only(_records())
    assert read_only(view) is view
    again = pickle.loads(pickle.dumps(view, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(again) is ReadOnlyList and again == view
    with pytest.raises(TypeError):
        again[0]["id"] = 3


def test_a_view_holds_the_callers_items_not_copies() -> None:
    records = _records()
    view = read_only(records)
    assert all(list.__getitem__(view, i) is records[i] for i in range(len(records)))
