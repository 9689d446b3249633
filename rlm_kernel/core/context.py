"""The context: checking it and describing it to the root model (helpers.py: what the model calls on it;
loaders.py: reading it from files).

A context can be hundreds of MB, so nothing here copies it whole: strings are
scanned with str methods that do not copy (`in`, `count`, `find`), hashed in
slices, and previewed from the head only; lists and dicts are checked in C and
described (lengths, keys, sha256) from at most _SAMPLE of their items, and model
code gets a read-only view of them (core/readonly.py), never a copy. pandas is
never imported: a DataFrame is recognised by its type's module and name.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import operator
import random
import re
import reprlib
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from rlm_kernel.core.deadlines import CellTimeout
from rlm_kernel.core.errors import ContextError
from rlm_kernel.core.readonly import ReadOnlyList, read_only
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
        if not list.__len__(context):
            raise ContextError("the context is empty: an empty list has nothing to search")
        first = list.__getitem__(context, 0)
        if not isinstance(first, (str, dict)):
            raise ContextError(
                f"unsupported context type list[{type(first).__name__}]: use {SUPPORTED} (e.g. [str(x) for x in items])"
            )
        base = str if isinstance(first, str) else dict
        _check_items(context, base)
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


def _check_items(items: list[Any], base: type) -> None:
    """Every item is a `base` (and a str holds no NUL), each pass in C (a million records take milliseconds);
    the Python loop that finds the item to name runs only when one is wrong."""
    raw = functools.partial(list.__iter__, items)  # the items themselves, even through a read-only view
    if not all(issubclass(kind, base) for kind in set(map(type, raw()))):
        index, item = next((i, item) for i, item in enumerate(raw()) if not isinstance(item, base))
        raise ContextError(
            f"the context list mixes item types (item 0 is {base.__name__}, item {index} is "
            f"{type(item).__name__}): use {SUPPORTED}, e.g. convert every item with str()"
        )
    if base is str and any(map(operator.contains, raw(), itertools.repeat("\x00"))):
        index, item = next((i, item) for i, item in enumerate(raw()) if "\x00" in item)
        raise _nul_error(f"item {index} of the context", item.index("\x00"))


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
    if type(context) is str:
        return True
    return type(context) in (list, ReadOnlyList) and {str}.issuperset(map(type, list.__iter__(context)))  # type: ignore[arg-type]


def _items(context: object) -> int:
    """How many items a list or dict holds, asked of the built-in type (a subclass's own __len__ may loop)."""
    if isinstance(context, list):
        return list.__len__(context)
    if isinstance(context, dict):
        return dict.__len__(context)
    return 0


def shared_view(context: object) -> object:
    """`context` as model code has it: the caller's object, never copied and never changed (core/readonly.py).

    A str is immutable and shared as is; a list or dict becomes a read-only view of the caller's object (its
    own array of references; a view given again is returned as is, so every node handed the same context
    shares one object); a DataFrame is copied deeply, as pandas has no read-only view of one.
    """
    if isinstance(context, str):
        return context
    if _is_dataframe(context):
        return context.copy(deep=True)  # type: ignore[attr-defined]
    return _guarded(context, "shared", lambda: read_only(context))


# ---------------------------------------------------------------------------
# metadata

_SAMPLE = 1000  # items, keys or rows: a larger context's lengths, counts and hash come from this many of them
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


def is_recorded_context(context: object, sha256: str) -> bool:
    """Whether `context` is the one a run recorded with this sha256 (replays and exports check it).

    Traces written before large lists and dicts were hashed from a sample hold the hash of every item: such a
    context is also checked that way (reading it whole), so that their replays still take it."""
    if context_metadata(context).sha256 == sha256:
        return True
    if not isinstance(context, (list, dict)) or _items(context) <= _SAMPLE:
        return False  # hashed whole both ways: it differs

    def every_item_hashed() -> str:
        kind = _kind(context)
        if kind == "dict":
            return _hash_items(kind, ([key, value] for key, value in dict.items(context)))  # type: ignore[arg-type]
        return _hash_items(kind, list.__iter__(context))  # type: ignore[arg-type]

    return _guarded(context, "checked", every_item_hashed) == sha256


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


def _sampled(count: int) -> list[int]:
    """Every index up to _SAMPLE items; beyond, _SAMPLE of them drawn at random, in order, with the count as the seed:
    the same indices for every context of that length (so a hash can be compared), and none of the aliasing of a
    fixed stride (records that alternate in kind, every 1,000th of which is of one kind)."""
    if count <= _SAMPLE:
        return list(range(count))
    return sorted(random.Random(count).sample(range(count), _SAMPLE))


def _estimate(sampled: list[int], count: int) -> int:
    """The total over `count` items from the lengths of sampled ones (exact when every item was sampled)."""
    return sum(sampled) if len(sampled) == count else round(sum(sampled) / len(sampled) * count)


def _scaled(found: int, sampled: int, count: int) -> str:
    """How many of `count` items have what `found` of `sampled` ones have: exact, or ~ an estimate to 2 digits."""
    if sampled == count:
        return f"{found:,}"
    estimate = found * count / sampled
    return f"~{round(estimate, 2 - len(str(int(estimate)))):,.0f}"


def _sample_note(sampled: int, count: int, what: str, unit: str) -> str:
    return "" if sampled == count else f"; {what} from {sampled:,} sampled {unit}"


def _list_str_metadata(items: list[str], preview_chars: int) -> ContextMetadata:
    count = list.__len__(items)
    sample = [list.__getitem__(items, i) for i in _sampled(count)]
    length = sum(map(len, list.__iter__(items)))  # in C: exact even for millions of items
    summary = f"{count:,} items; item length {_spread(list(map(len, sample)))}"
    summary += _sample_note(len(sample), count, "item lengths", "items")
    preview = _preview(
        (f"[{i}] {_one_line(item, _PREVIEW_ITEM_CHARS)}" for i, item in enumerate(list.__iter__(items))),
        count,
        "items",
        preview_chars,
    )
    header = _hash_header("list[str]", len(sample), count, f"{length} chars")
    return ContextMetadata("list[str]", length, count, None, summary, preview, _hash_items(header, sample))


def _list_dict_metadata(records: list[dict[str, Any]], preview_chars: int) -> ContextMetadata:
    count = list.__len__(records)
    sample = [list.__getitem__(records, i) for i in _sampled(count)]
    lengths = [_record_chars(record) for record in sample]
    key_counts = Counter(key for record in sample for key in dict.__iter__(record))
    summary = (
        f"{count:,} records; keys: {_keys_summary(key_counts, len(sample), count)}; record length {_spread(lengths)}"
    )
    summary += _sample_note(len(sample), count, "length and key counts estimated", "records")
    preview = _preview(
        (
            f"[{i}] {_one_line(_brief_repr.repr(record), _PREVIEW_ITEM_CHARS)}"
            for i, record in enumerate(list.__iter__(records))
        ),
        count,
        "records",
        preview_chars,
    )
    header = _hash_header("list[dict]", len(sample), count)
    return ContextMetadata(
        "list[dict]", _estimate(lengths, count), count, None, summary, preview, _hash_items(header, sample)
    )


def _dict_metadata(mapping: dict[Any, Any], preview_chars: int) -> ContextMetadata:
    count = dict.__len__(mapping)
    wanted = _sampled(count)
    if len(wanted) == count:
        sample = list(dict.items(mapping))  # the mapping's own entries, even through a read-only view
    else:
        keys = list(dict.keys(mapping))  # in C: a dict has no indexing, and a million keys take milliseconds
        sample = [(keys[i], dict.__getitem__(mapping, keys[i])) for i in wanted]
    lengths = [len(str(key)) + len(str(value)) for key, value in sample]
    value_types = Counter(type(value).__name__ for _, value in sample)
    types = ", ".join(f"{name} ({_scaled(n, len(sample), count)})" for name, n in value_types.most_common(6))
    summary = f"{count:,} keys; value types: {types}; key+value length {_spread(lengths)}"
    summary += _sample_note(len(sample), count, "length and value type counts estimated", "keys")
    entries = (
        _one_line(f"{_brief_repr.repr(key)}: {_brief_repr.repr(value)}", _PREVIEW_ITEM_CHARS)
        for key, value in dict.items(mapping)
    )
    preview = _preview(entries, count, "keys", preview_chars)
    header = _hash_header("dict", len(sample), count)
    pairs = ([key, value] for key, value in sample)
    return ContextMetadata("dict", _estimate(lengths, count), count, None, summary, preview, _hash_items(header, pairs))


def _record_chars(record: dict[Any, Any]) -> int:
    return sum(len(str(value)) for value in dict.values(record))


def _spread(lengths: list[int]) -> str:
    return f"min {min(lengths):,} / median {statistics.median_low(lengths):,} / max {max(lengths):,} chars"


def _keys_summary(counts: Counter[str], sampled: int, records: int, shown: int = 12) -> str:
    """The commonest keys; a key missing from some records says in how many it is (estimated: ~N)."""
    parts = [
        key if count == sampled else f"{key} (in {_scaled(count, sampled, records)})"
        for key, count in counts.most_common(shown)
    ]
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


def _hash_header(kind: str, sampled: int, count: int, whole: str = "") -> str:
    """What a list's or dict's sha256 starts with: the kind alone when every item is hashed; else how many items
    were sampled of how many, and `whole`, what is known exactly of the whole (a list of str's total chars)."""
    if sampled == count:
        return kind
    return f"{kind}: {sampled} sampled of {count} items" + (f", {whole}" if whole else "")


def _hash_items(header: str, items: Iterable[object]) -> str:
    """sha256 of `header` and each item's sorted-keys JSON, in order (the items' order counts, a record's key
    order does not).

    A list or dict of at most _SAMPLE items is hashed whole. A larger one is hashed from _SAMPLE sampled items
    (_sampled: the same positions for the same length) plus its length (and, for str items, its total
    characters): a fingerprint computed in the time of what the root is shown, not a hash of every item, so
    "is this the same context?" (replays, exports) catches another file, a longer or shorter one, reordered or
    rewritten data, but not an edit to one unsampled item.
    """
    digest = hashlib.sha256(header.encode() + b"\n")
    for item in items:
        digest.update(_json(item, sort_keys=True).encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def _frame_sample(frame: Any) -> Any:
    return frame.iloc[:: -(-len(frame) // _SAMPLE)]


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
