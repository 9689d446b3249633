"""The context: checking it, describing it to the root model, the helpers the model calls on it, and loading it from files.

A context can be hundreds of MB, so nothing here copies it whole: strings are
scanned with str methods that do not copy (`in`, `count`, `find`), hashed in
slices, and previewed from the head only. pandas is never imported: a
DataFrame is recognised by its type's module and name, and its code path is
kept apart at the end of the helpers section.
"""

from __future__ import annotations

import csv
import functools
import glob
import hashlib
import inspect
import itertools
import json
import os
import re
import reprlib
import statistics
import string
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

SUPPORTED = "str, list[str], list[dict], dict, or a pandas DataFrame"


class ContextError(ValueError):
    """A context the engine cannot work with; the message says why and what to do."""


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
            if base is str and "\x00" in item:
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
    _kind(context)


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
    lines = text.count("\n") + 1
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


def _list_dict_metadata(records: list[dict], preview_chars: int) -> ContextMetadata:
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
        "list[dict]", sum(lengths), len(records), None, summary, preview, _hash_items("list[dict]", records)
    )


def _dict_metadata(mapping: dict, preview_chars: int) -> ContextMetadata:
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


def _record_chars(record: dict) -> int:
    return sum(len(str(value)) for value in record.values())


def _spread(lengths: list[int]) -> str:
    return f"min {min(lengths):,} / median {statistics.median_low(lengths):,} / max {max(lengths):,} chars"


def _keys_summary(counts: Counter, records: int, shown: int = 12) -> str:
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


# ---------------------------------------------------------------------------
# helpers called by the model

_LINE_CUT = 500  # grep shows at most this much of a matching line
_ITEM_CUT = 300  # grep shows at most this much of a matching item's text


def make_helpers(context: object, default_chunk_chars: int = 50_000) -> dict[str, Callable]:
    """peek, grep and partition bound to `context`, with docstrings written for the model."""
    if default_chunk_chars < 1:
        raise ValueError("default_chunk_chars must be >= 1")
    kind = _kind(context)
    helpers: _TextHelpers | _ItemHelpers
    if kind == "str":
        helpers = _TextHelpers(context, default_chunk_chars)  # type: ignore[arg-type]
    elif kind.startswith("list"):
        helpers = _ListHelpers(context, default_chunk_chars)  # type: ignore[arg-type]
    elif kind == "dict":
        helpers = _DictHelpers(context, default_chunk_chars)  # type: ignore[arg-type]
    else:
        helpers = _FrameHelpers(context, default_chunk_chars)
    fields = {**helpers.doc_fields, "default_size": f"{default_chunk_chars:,}"}
    return {name: _expose(getattr(helpers, name), fields) for name in ("peek", "grep", "partition")}


def _expose(method: Callable, fields: dict[str, str]) -> Callable:
    """A plain function calling `method`, whose docstring is filled in for this context."""

    @functools.wraps(method)
    def helper(*args: object, **kwargs: object) -> object:
        return method(*args, **kwargs)

    helper.__doc__ = string.Template(inspect.cleandoc(method.__doc__ or "")).substitute(fields)
    helper.__qualname__ = method.__name__
    return helper


def _compile(pattern: str, flags: int) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags | re.MULTILINE)
    except re.error as error:
        raise ValueError(f"invalid regex {pattern!r}: {error}") from None


def _check_grep_args(window: int, max_matches: int) -> None:
    if window < 0:
        raise ValueError("window must be >= 0")
    if max_matches < 1:
        raise ValueError("max_matches must be >= 1")


def _more(max_matches: int) -> str:
    return f"… more matches not shown (max_matches={max_matches})"


def _normalize_start(start: int, length: int, n: int) -> int:
    if n < 0:
        raise ValueError("n must be >= 0")
    return max(0, length + start) if start < 0 else start


def _window(text: str, begin: int, end: int, window: int) -> str:
    """The match text[begin:end] with `window` chars either side, an ellipsis where the text goes on."""
    left, right = max(0, begin - window), min(len(text), end + window)
    return ("…" if left else "") + text[left:right] + ("…" if right < len(text) else "")


def _cut_around(text: str, begin: int, end: int, match_start: int, limit: int) -> str:
    """text[begin:end], or `limit` chars of it around `match_start` when longer, an ellipsis where cut."""
    if end - begin <= limit:
        return text[begin:end]
    left = max(begin, min(match_start - limit // 2, end - limit))
    right = left + limit
    return ("…" if left > begin else "") + text[left:right] + ("…" if right < end else "")


def _mode(n: int | None, size: int | None, by: str | None) -> None:
    given = [name for name, value in (("n", n), ("size", size), ("by", by)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"give only one of n=, size=, by= (got {', '.join(given)})")
    if n is not None and n < 1:
        raise ValueError("n must be >= 1")
    if size is not None and size < 1:
        raise ValueError("size must be >= 1")


class _TextHelpers:
    doc_fields: dict[str, str] = {}

    def __init__(self, text: str, default_chunk_chars: int) -> None:
        self._text = text
        self._default_size = default_chunk_chars

    def peek(self, start: int = 0, n: int = 2000) -> str:
        """Return context[start:start+n]: n characters from offset start (a negative start counts from the end)."""
        start = _normalize_start(start, len(self._text), n)
        return self._text[start : start + n]

    def grep(self, pattern: str, flags: int = 0, window: int = 0, max_matches: int = 1000) -> list[str]:
        """Find regex `pattern` in the context (re.MULTILINE is on; add flags such as re.I).

        window=0: one entry per matching line, "L<line number>: <line>" (lines over 500 chars are cut around the match).
        window>0: one entry per match, "@<char offset>: …<window chars>match<window chars>…".
        At most max_matches entries, then "… more matches not shown (max_matches=N)" if there were more.
        """
        regex = _compile(pattern, flags)
        _check_grep_args(window, max_matches)
        text, hits = self._text, []
        if window:
            for match in regex.finditer(text):
                if len(hits) == max_matches:
                    hits.append(_more(max_matches))
                    break
                hits.append(f"@{match.start()}: {_window(text, match.start(), match.end(), window)}")
            return hits
        line_no, counted, pos = 1, 0, 0
        # search() resumes after each reported line, so a line is reported once and never split off
        while pos <= len(text) and (match := regex.search(text, pos)) is not None:
            if len(hits) == max_matches:
                hits.append(_more(max_matches))
                break
            line_no += text.count("\n", counted, match.start())
            counted = match.start()
            begin = text.rfind("\n", 0, match.start()) + 1
            end = text.find("\n", match.start())
            end = len(text) if end == -1 else end
            hits.append(f"L{line_no}: {_cut_around(text, begin, end, match.start(), _LINE_CUT)}")
            pos = end + 1
        return hits

    def partition(self, n: int | None = None, size: int | None = None, by: str | None = None) -> list[str]:
        """Split the context into chunks; "".join(chunks) == context always.

        n=k: k nearly equal chunks; size=c: chunks of at most c chars; by=regex: a new chunk starts at every match
        (by=r'^# ' splits Markdown at its headers). With n or size a cut moves to just after a nearby newline so
        lines stay whole. No argument: size=$default_size.
        """
        _mode(n, size, by)
        if by is not None:
            cuts = self._cuts_by(by)
        elif n is not None:
            cuts = self._cuts_n(n)
        else:
            cuts = self._cuts_size(size or self._default_size)
        return [self._text[a:b] for a, b in itertools.pairwise(cuts)]

    def _cuts_n(self, n: int) -> list[int]:
        text, length = self._text, len(self._text)
        n = min(n, length)
        slack = length // n // 10
        cuts = [0]
        for i in range(1, n):
            # Moving forward by less than a tenth of a chunk keeps the cuts strictly increasing.
            cut = i * length // n
            newline = text.find("\n", cut - 1, cut + slack) if slack else -1
            cuts.append(cut if newline == -1 else newline + 1)
        return [*cuts, length]

    def _cuts_size(self, size: int) -> list[int]:
        text, length = self._text, len(self._text)
        slack = size // 10
        cuts = [0]
        while length - cuts[-1] > size:
            end = cuts[-1] + size
            # Only the last tenth is searched, so a newline early in the chunk cannot make it tiny.
            newline = text.rfind("\n", end - slack, end) if slack else -1
            cuts.append(end if newline == -1 else newline + 1)
        return [*cuts, length]

    def _cuts_by(self, by: str) -> list[int]:
        starts = {match.start() for match in _compile(by, 0).finditer(self._text)}
        return sorted(starts | {0, len(self._text)})


class _ItemHelpers(ABC):
    """peek/grep/partition over a sequence of items; subclasses say how to slice it and what an item's text is."""

    doc_fields: dict[str, str]

    def __init__(self, default_chunk_chars: int) -> None:
        self._default_size = default_chunk_chars

    @abstractmethod
    def _count(self) -> int: ...

    @abstractmethod
    def _take(self, start: int, stop: int) -> object: ...

    @abstractmethod
    def _groups(self, sizes: list[int]) -> list:
        """Consecutive groups of the given numbers of items."""

    @abstractmethod
    def _texts(self) -> Iterator[str]:
        """Each item's text, in order."""

    @abstractmethod
    def _default_sizes(self) -> list[int]:
        """Group sizes such that each group holds about default_chunk_chars characters."""

    def peek(self, start: int = 0, n: int = 2000) -> object:
        """Return $noun start..start+n-1 as $container (a negative start counts from the end)."""
        start = _normalize_start(start, self._count(), n)
        return self._take(start, start + n)

    def grep(self, pattern: str, flags: int = 0, window: int = 0, max_matches: int = 1000) -> list[str]:
        """Find regex `pattern` in the text of each $one ($text; re.MULTILINE is on; add flags such as re.I).

        window=0: one entry per matching $one, "[<position>] <text>" (texts over 300 chars are cut around the match).
        window>0: one entry per match, "[<position>] @<offset in that text>: …<window chars>match<window chars>…".
        <position> is the $one's position: peek(position, 1) returns it.
        At most max_matches entries, then "… more matches not shown (max_matches=N)" if there were more.
        """
        regex = _compile(pattern, flags)
        _check_grep_args(window, max_matches)
        hits: list[str] = []
        for position, text in enumerate(self._texts()):
            for match in regex.finditer(text):
                if len(hits) == max_matches:
                    hits.append(_more(max_matches))
                    return hits
                if not window:
                    hits.append(f"[{position}] {_cut_around(text, 0, len(text), match.start(), _ITEM_CUT)}")
                    break
                hits.append(f"[{position}] @{match.start()}: {_window(text, match.start(), match.end(), window)}")
        return hits

    def partition(self, n: int | None = None, size: int | None = None, by: str | None = None) -> list:
        """Split the context into consecutive groups of $noun, each $container, in order.

        n=k: k groups of nearly equal counts; size=c: groups of c $noun (the last may hold fewer).
        No argument: groups of about $default_size characters each. by= applies to text contexts only.
        """
        _mode(n, size, by)
        if by is not None:
            raise ValueError("by= applies to text contexts; use n= or size= here")
        count = self._count()
        if n is not None:
            groups, extra = divmod(count, min(n, count))
            sizes = [groups + 1] * extra + [groups] * (min(n, count) - extra)
        elif size is not None:
            sizes = [size] * (count // size) + ([count % size] if count % size else [])
        else:
            sizes = self._default_sizes()
        return self._groups(sizes)


def _sizes_by_chars(lengths: Iterable[int], budget: int) -> list[int]:
    """Greedy groups of consecutive items totalling at most `budget` chars (at least one item each)."""
    sizes: list[int] = []
    items = chars = 0
    for length in lengths:
        if items and chars + length > budget:
            sizes.append(items)
            items = chars = 0
        items += 1
        chars += length
    return [*sizes, items]


class _ListHelpers(_ItemHelpers):
    def __init__(self, items: list, default_chunk_chars: int) -> None:
        super().__init__(default_chunk_chars)
        self._items = items
        self._of_str = isinstance(items[0], str)
        text = "the str itself" if self._of_str else "json.dumps(item)"
        self.doc_fields = {"noun": "items", "one": "item", "container": "a list", "text": text}

    def _count(self) -> int:
        return len(self._items)

    def _take(self, start: int, stop: int) -> list:
        return self._items[start:stop]

    def _groups(self, sizes: list[int]) -> list:
        starts = itertools.accumulate(sizes, initial=0)
        return [self._items[start : start + size] for start, size in zip(starts, sizes)]

    def _texts(self) -> Iterator[str]:
        return iter(self._items) if self._of_str else map(_json, self._items)

    def _default_sizes(self) -> list[int]:
        lengths = map(len, self._items) if self._of_str else map(_record_chars, self._items)
        return _sizes_by_chars(lengths, self._default_size)


class _DictHelpers(_ItemHelpers):
    doc_fields = {"noun": "entries", "one": "entry", "container": "a dict", "text": "'key: value'"}

    def __init__(self, mapping: dict, default_chunk_chars: int) -> None:
        super().__init__(default_chunk_chars)
        self._mapping = mapping

    def _count(self) -> int:
        return len(self._mapping)

    def _take(self, start: int, stop: int) -> dict:
        return dict(itertools.islice(self._mapping.items(), start, stop))

    def _groups(self, sizes: list[int]) -> list:
        entries = iter(self._mapping.items())  # one pass: islice from the start for every group would be quadratic
        return [dict(itertools.islice(entries, size)) for size in sizes]

    def _texts(self) -> Iterator[str]:
        for key, value in self._mapping.items():
            yield f"{key}: {value if isinstance(value, str) else _json(value)}"

    def _default_sizes(self) -> list[int]:
        lengths = (len(str(key)) + len(str(value)) for key, value in self._mapping.items())
        return _sizes_by_chars(lengths, self._default_size)


# pandas DataFrame: only standard DataFrame methods, no pandas import. A frame can have millions of rows, so its
# length, hash and default chunking come from a sample of at most _FRAME_SAMPLE evenly spaced rows.

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


class _FrameHelpers(_ItemHelpers):
    doc_fields = {
        "noun": "rows",
        "one": "row",
        "container": "a DataFrame",
        "text": "'column: value | column: value …'",
    }

    def __init__(self, frame: Any, default_chunk_chars: int) -> None:
        super().__init__(default_chunk_chars)
        self._frame = frame

    def _count(self) -> int:
        return len(self._frame)

    def _take(self, start: int, stop: int) -> object:
        return self._frame.iloc[start:stop]

    def _groups(self, sizes: list[int]) -> list:
        starts = itertools.accumulate(sizes, initial=0)
        return [self._frame.iloc[start : start + size] for start, size in zip(starts, sizes)]

    def _texts(self) -> Iterator[str]:
        columns = [str(column) for column in self._frame.columns]
        for row in self._frame.itertuples(index=False, name=None):
            yield " | ".join(f"{column}: {cell}" for column, cell in zip(columns, row))

    def _default_sizes(self) -> list[int]:
        row_chars = _row_chars(_frame_sample(self._frame))
        per_group = max(1, self._default_size * len(row_chars) // max(1, sum(row_chars)))
        count = self._count()
        return [per_group] * (count // per_group) + ([count % per_group] if count % per_group else [])


# ---------------------------------------------------------------------------
# loading from files


def load_context(path_or_glob: str) -> object:
    """Load a context from a file, a directory or a glob pattern.

    One file: .json → the parsed value; .jsonl/.ndjson → a list of the parsed lines (blank lines skipped);
    .csv → list[dict] (csv.DictReader); any other extension → str (UTF-8; a BOM is dropped, line ends become \\n).
    A directory (recursive, hidden files and folders skipped) or a glob pattern (containing * ? or [) →
    list[dict] of {"path": str, "content": ...}, one per file in sorted path order, even when only one file
    matches; "content" is what loading that file alone gives (a str, or the parsed JSON/JSONL/CSV value).
    Raises ContextError, with a one-line message naming the path, when nothing is found, a file cannot be
    read or parsed, or the result is not a usable context.
    """
    path = os.path.expanduser(path_or_glob)
    if os.path.isfile(path):
        context = _load_file(path)
    elif os.path.isdir(path):
        files = _files_under(path)
        if not files:
            raise ContextError(f"no files in directory {path_or_glob} (hidden files are skipped)")
        context = [{"path": file, "content": _load_file(file)} for file in files]
    elif any(char in path for char in "*?["):
        files = sorted(match for match in glob.glob(path, recursive=True) if os.path.isfile(match))
        if not files:
            raise ContextError(f"no files match {path_or_glob}")
        context = [{"path": file, "content": _load_file(file)} for file in files]
    else:
        raise ContextError(f"no such file or directory: {path_or_glob}")
    try:
        check_context(context)
    except ContextError as error:
        raise ContextError(f"{path_or_glob}: {error}") from None
    return context


def _files_under(root: str) -> list[str]:
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        files += [os.path.join(folder, name) for name in names if not name.startswith(".")]
    return sorted(files)


def _load_file(path: str) -> object:
    extension = os.path.splitext(path)[1].lower()
    try:
        # utf-8-sig: a BOM would otherwise break json and end up in the first CSV column's name
        with open(path, encoding="utf-8-sig", newline="" if extension == ".csv" else None) as file:
            if extension == ".json":
                return json.load(file)
            if extension in (".jsonl", ".ndjson"):
                return _parse_jsonl(file, path)
            if extension == ".csv":
                return list(csv.DictReader(file))
            return file.read()
    except UnicodeDecodeError as error:
        raise ContextError(f"not UTF-8 text: {path} ({error.reason}); decode it yourself and pass a str") from None
    except json.JSONDecodeError as error:
        raise ContextError(f"invalid JSON in {path}: {error}") from None
    except csv.Error as error:
        raise ContextError(f"invalid CSV in {path}: {error}") from None
    except OSError as error:
        raise ContextError(f"cannot read {path}: {error.strerror or error}") from None


def _parse_jsonl(lines: Iterable[str], path: str) -> list:
    parsed = []
    for line_no, line in enumerate(lines, 1):
        if line.strip():
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ContextError(f"invalid JSON on line {line_no} of {path}: {error.msg}") from None
    return parsed
