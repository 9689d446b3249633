"""The context: checking it and describing it to the root model (helpers.py: what the model calls on it;
loaders.py: reading it from files).

A context can be hundreds of MB, so nothing here copies it whole: strings are
scanned with str methods that do not copy (`in`, `count`, `find`), hashed in
slices, and previewed from the head only. pandas is never imported: a
DataFrame is recognised by its type's module and name.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import reprlib
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from rlm_kernel.core.deadlines import CellTimeout
from rlm_kernel.core.errors import ContextError
from rlm_kernel.core.repl import contained

SUPPORTED = "str, list[str], list[dict], dict, or a pandas DataFrame"


# ---------------------------------------------------------------------------
# checking


def _is_dataframe(obj: object) -> bool:
    cls = type(obj)
    return cls.__module__.startswith("pandas") and cls.__name__ == "DataFrame"


def _nul_error(where: str, offset: int) -> ContextError:
    return ContextError(
        f"{where} contains NUL characters (first at offset {offset:,}): this looks like binary data "
        "read as text; load it with the right decoder, or remove them with .replace('\\x00', '')"
    )


def _kind(context: object) -> str:
    """The context's type name as shown to the model; raises ContextError when unusable."""
    if context is None:
        raise ContextError(f"the context is None: pass the data itself ({SUPPORTED})")
    if isinstance(context, (bytes, bytearray, memoryview)):
        raise ContextError("binary context: decode it to str first, e.g. data.decode('utf-8')")
    if isinstance(context, str):
        if not context:
            raise ContextError("the context is empty: an empty str has nothing to search")
        if "\x00" in context:
            raise _nul_error("the context", context.index("\x00"))
        return "str"
    if isinstance(context, list):
        if not context:
            raise ContextError("the context is empty: an empty list has nothing to search")
        first = context[0]
        if not isinstance(first, (str, dict)):
            raise ContextError(
                f"unsupported context type list[{type(first).__name__}]: use {SUPPORTED} (e.g. [str(x) for x in items])"
            )
        base = str if isinstance(first, str) else dict
        for i, item in enumerate(context):
            if not isinstance(item, base):
                raise ContextError(
                    f"the context list mixes item types (item 0 is {base.__name__}, item {i} is "
                    f"{type(item).__name__}): use {SUPPORTED}, e.g. convert every item with str()"
                )
            if isinstance(item, str) and "\x00" in item:
                raise _nul_error(f"item {i} of the context", item.index("\x00"))
        return f"list[{base.__name__}]"
    if isinstance(context, dict):
        if not context:
            raise ContextError("the context is empty: an empty dict has nothing to search")
        return "dict"
    if _is_dataframe(context):
        if context.empty:  # type: ignore[attr-defined]
            raise ContextError("the context is empty: the DataFrame has no rows or no columns")
        return "DataFrame"
    raise ContextError(f"unsupported context type {type(context).__name__}: use {SUPPORTED}")


def check_context(context: object) -> None:
    """Raise ContextError if the engine cannot work with `context`; scans but never copies it."""
    _guarded(context, "checked", lambda: _kind(context))


T = TypeVar("T")
_GUARD_SECONDS = 10.0  # for looking at a context whose objects run code of their own, plus a second per...
_GUARD_ITEMS_PER_SECOND = 10_000  # ...this many items: an honest million records still has its time


def _guarded(context: object, done: str, call: Callable[[], T]) -> T:
    """`call()`, which looks at `context`: any object in it that is not a plain str, list or dict runs code of its
    own there (__len__, __repr__, __deepcopy__), which may raise, recurse or loop. That is one ContextError line,
    under a deadline, instead of a traceback or a hang."""
    if _plain(context):  # nothing of the caller's can run: no deadline needed
        return call()

    def refuse(exc: BaseException) -> T:
        if isinstance(exc, ContextError):
            raise exc
        if isinstance(exc, RecursionError):
            why = "it is nested too deeply (RecursionError): pass flatter data, e.g. the deep part as a JSON str"
        elif isinstance(exc, CellTimeout):
            why = (
                f"that took over {seconds:.0f} s (an object's __len__, __str__ or __repr__ that loops?): "
                "pass plain str, list and dict values"
            )
        else:
            detail = " ".join(str(exc).split())[:200]
            why = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
            why += " (raised by an object in it: pass plain str, list and dict values)"
        raise ContextError(f"the context could not be {done}: {why}") from None

    seconds = _GUARD_SECONDS + _items(context) / _GUARD_ITEMS_PER_SECOND
    return contained(call, refuse, seconds)


def _plain(context: object) -> bool:
    return type(context) is str or (type(context) is list and all(type(item) is str for item in context))


def _items(context: object) -> int:
    """How many items a list or dict holds, asked of the built-in type (a subclass's own __len__ may loop)."""
    if isinstance(context, list):
        return list.__len__(context)
    if isinstance(context, dict):
        return dict.__len__(context)
    return 0


def private_copy(context: object) -> object:
    """`context` as model code may have it: a copy of a mutable one, so the caller's object never changes.

    A str is immutable and shared as is (a 2 GB string is never copied); a list of str copies
    only the list; records, dicts and DataFrames are copied deeply, their values being mutable.
    """
    if isinstance(context, str):
        return context
    if isinstance(context, list) and all(isinstance(item, str) for item in context):
        return list(context)
    if _is_dataframe(context):
        return context.copy(deep=True)  # type: ignore[attr-defined]
    return _guarded(context, "copied", lambda: copy.deepcopy(context))


# ---------------------------------------------------------------------------
# metadata

_HASH_SLICE = 1 << 20  # characters encoded at a time: bounds the memory hashing needs
_PREVIEW_ITEM_CHARS = 160  # one previewed item/entry/line at most
_UNITS = {"list[str]": "items", "list[dict]": "items", "dict": "keys", "DataFrame": "rows"}

_brief_repr = reprlib.Repr()
_brief_repr.maxstring = 60
_brief_repr.maxother = 60
_brief_repr.maxlevel = 2
_brief_repr.maxdict = _brief_repr.maxlist = _brief_repr.maxtuple = _brief_repr.maxset = 6


@dataclass(frozen=True)
class ContextMetadata:
    """What the root model is told about a context instead of the context itself."""

    type: str  # "str", "list[str]", "list[dict]", "dict" or "DataFrame"
    length: int  # characters in total (for a large DataFrame an estimate; `summary` says so)
    items: int | None  # items, keys or rows; None for str
    lines: int | None  # str only
    summary: str
    preview: str  # the head of the context, at most `preview_chars` characters
    sha256: str

    def describe(self) -> str:
        """The text shown to the root model; its size does not grow with the context's."""
        rows = [f"type: {self.type}", f"length: {self.length:,} characters"]
        if self.lines is not None:
            rows.append(f"lines: {self.lines:,}")
        if self.items is not None:
            rows.append(f"{_UNITS[self.type]}: {self.items:,}")
        longest_ticks = max((len(run) for run in re.findall("`+", self.preview)), default=0)
        fence = "`" * max(3, longest_ticks + 1)
        rows += [f"summary: {self.summary}", "preview (the start of the context):", fence, self.preview, fence]
        return "\n".join(rows)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def context_metadata(context: object, preview_chars: int = 500) -> ContextMetadata:
    """Describe `context` (checked first) without copying it."""
    if preview_chars < 0:
        raise ValueError("preview_chars must be >= 0")
    return _guarded(context, "described", lambda: _metadata(context, preview_chars))


def _metadata(context: object, preview_chars: int) -> ContextMetadata:
    kind = _kind(context)
    if kind == "str":
        return _str_metadata(context, preview_chars)  # type: ignore[arg-type]
    if kind == "list[str]":
        return _list_str_metadata(context, preview_chars)  # type: ignore[arg-type]
    if kind == "list[dict]":
        return _list_dict_metadata(context, preview_chars)  # type: ignore[arg-type]
    if kind == "dict":
        return _dict_metadata(context, preview_chars)  # type: ignore[arg-type]
    return _frame_metadata(context, preview_chars)


def _str_metadata(text: str, preview_chars: int) -> ContextMetadata:
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)  # a final newline ends a line, starts none
    summary = f"{len(text):,} chars in {lines:,} lines (about {max(1, len(text) // 4):,} tokens)"
    return ContextMetadata("str", len(text), None, lines, summary, text[:preview_chars], _hash_str(text))


def _list_str_metadata(items: list[str], preview_chars: int) -> ContextMetadata:
    lengths = [len(item) for item in items]
    summary = f"{len(items):,} items; item length {_spread(lengths)}"
    preview = _preview(
        (f"[{i}] {_one_line(item, _PREVIEW_ITEM_CHARS)}" for i, item in enumerate(items)),
        len(items),
        "items",
        preview_chars,
    )
    return ContextMetadata(
        "list[str]", sum(lengths), len(items), None, summary, preview, _hash_items("list[str]", items)
    )


def _list_dict_metadata(records: list[dict[str, Any]], preview_chars: int) -> ContextMetadata:
    lengths = [_record_chars(record) for record in records]
    key_counts = Counter(key for record in records for key in record)
    summary = (
        f"{len(records):,} records; keys: {_keys_summary(key_counts, len(records))}; record length {_spread(lengths)}"
    )
    preview = _preview(
        (f"[{i}] {_one_line(_brief_repr.repr(record), _PREVIEW_ITEM_CHARS)}" for i, record in enumerate(records)),
        len(records),
        "records",
        preview_chars,
    )
    return ContextMetadata(
        "list[dict]",
        sum(lengths),
        len(records),
        None,
        summary,
        preview,
        _hash_items("list[dict]", records),
    )


def _dict_metadata(mapping: dict[Any, Any], preview_chars: int) -> ContextMetadata:
    lengths = [len(str(key)) + len(str(value)) for key, value in mapping.items()]
    value_types = Counter(type(value).__name__ for value in mapping.values())
    types = ", ".join(f"{name} ({count:,})" for name, count in value_types.most_common(6))
    summary = f"{len(mapping):,} keys; value types: {types}; key+value length {_spread(lengths)}"
    entries = (
        _one_line(f"{_brief_repr.repr(key)}: {_brief_repr.repr(value)}", _PREVIEW_ITEM_CHARS)
        for key, value in mapping.items()
    )
    preview = _preview(entries, len(mapping), "keys", preview_chars)
    pairs = ([key, value] for key, value in mapping.items())
    return ContextMetadata("dict", sum(lengths), len(mapping), None, summary, preview, _hash_items("dict", pairs))


def _record_chars(record: dict[Any, Any]) -> int:
    return sum(len(str(value)) for value in record.values())


def _spread(lengths: list[int]) -> str:
    return f"min {min(lengths):,} / median {statistics.median_low(lengths):,} / max {max(lengths):,} chars"


def _keys_summary(counts: Counter[str], records: int, shown: int = 12) -> str:
    parts = [key if count == records else f"{key} (in {count:,})" for key, count in counts.most_common(shown)]
    if len(counts) > shown:
        parts.append(f"… {len(counts) - shown:,} more keys")
    return ", ".join(str(part) for part in parts)


def _one_line(text: str, limit: int) -> str:
    """`text` on one line of at most `limit` chars: line breaks shown as \\n, an ellipsis where cut."""
    line = text[:limit].replace("\r", "\\r").replace("\n", "\\n")
    if len(text) > limit or len(line) > limit:
        line = line[: limit - 1] + "…"
    return line


def _preview(lines: Iterable[str], count: int, unit: str, limit: int) -> str:
    """As many whole lines as fit in `limit` chars, ending with how many were left out when that fits."""
    shown: list[str] = []
    used = -1  # the first line needs no separating newline
    for line in lines:
        if used + 1 + len(line) > limit:
            if not shown:  # even the first line is too long: show what fits of it
                return line[:limit]
            break
        shown.append(line)
        used += 1 + len(line)
    while len(shown) < count:
        more = f"… {count - len(shown):,} more {unit}"
        if used + 1 + len(more) <= limit:
            shown.append(more)
            break
        if len(shown) == 1:
            break
        used -= 1 + len(shown.pop())
    return "\n".join(shown)


def _json(value: object, sort_keys: bool = False) -> str:
    try:
        return json.dumps(value, sort_keys=sort_keys, default=str, ensure_ascii=False)
    except (TypeError, ValueError):  # keys of mixed types cannot be sorted; cycles cannot be encoded
        return repr(value)


def _hash_str(text: str) -> str:
    """sha256 of the UTF-8 text (equal to hashing the file it came from), encoded a slice at a time."""
    digest = hashlib.sha256()
    for start in range(0, len(text), _HASH_SLICE):
        digest.update(text[start : start + _HASH_SLICE].encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _hash_items(kind: str, items: Iterable[object]) -> str:
    """sha256 of the kind and each item's sorted-keys JSON, in order (so a dict's key order counts)."""
    digest = hashlib.sha256(kind.encode() + b"\n")
    for item in items:
        digest.update(_json(item, sort_keys=True).encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


_FRAME_SAMPLE = 1000


def _frame_sample(frame: Any) -> Any:
    return frame.iloc[:: -(-len(frame) // _FRAME_SAMPLE)]


def _row_chars(sample: Any) -> list[int]:
    return [sum(len(str(cell)) for cell in row) for row in sample.itertuples(index=False, name=None)]


def _frame_metadata(frame: Any, preview_chars: int) -> ContextMetadata:
    """Length is estimated from the sampled rows; sha256 covers the shape, the column names and the sampled rows only."""
    rows = len(frame)
    sample = _frame_sample(frame)
    row_chars = _row_chars(sample)
    exact = len(row_chars) == rows
    length = sum(row_chars) if exact else round(sum(row_chars) / len(row_chars) * rows)
    columns = ", ".join(f"{name} ({dtype})" for name, dtype in itertools.islice(frame.dtypes.items(), 20))
    if frame.shape[1] > 20:
        columns += f", … {frame.shape[1] - 20:,} more"
    summary = f"columns: {columns}; {rows:,} rows"
    if not exact:
        summary += f"; length estimated from {len(row_chars):,} sampled rows"
    preview = frame.head(10).to_string(max_cols=20, max_colwidth=40)[:preview_chars]
    digest = hashlib.sha256(f"DataFrame {frame.shape}\n{_json([str(c) for c in frame.columns])}\n".encode())
    for row in sample.itertuples(index=False, name=None):
        digest.update(_json(list(row)).encode("utf-8", "surrogatepass") + b"\n")
    return ContextMetadata("DataFrame", length, rows, None, summary, preview, digest.hexdigest())
