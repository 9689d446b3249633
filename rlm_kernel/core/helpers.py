"""The helpers the model calls on its context: peek, grep, partition (for text, lists, dicts and DataFrames).

Nothing here copies a large context whole; a DataFrame's path is kept apart at the end.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import re
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rlm_kernel.core.context import _frame_sample, _json, _kind, _record_chars, _row_chars

# ---------------------------------------------------------------------------
# helpers called by the model

_LINE_CUT = 500  # grep shows at most this much of a matching line
_ITEM_CUT = 300  # grep shows at most this much of a matching item's text


def make_helpers(context: object, default_chunk_chars: int = 50_000) -> dict[str, Callable[..., Any]]:
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


def _expose(method: Callable[..., Any], fields: dict[str, str]) -> Callable[..., Any]:
    """A plain function calling `method`, whose docstring is filled in for this context."""

    @functools.wraps(method)
    def helper(*args: object, **kwargs: object) -> object:
        return method(*args, **kwargs)

    helper.__doc__ = string.Template(inspect.cleandoc(method.__doc__ or "")).substitute(fields)
    helper.__qualname__ = method.__name__
    return helper


def _compile(pattern: str, flags: int) -> re.Pattern[str]:
    if isinstance(flags, bool) or not isinstance(flags, int):
        raise TypeError(f"flags are re flags such as re.I or re.I | re.S (ints from the re module), not {flags!r}")
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
        text, hits = self._text, list[str]()
        if window:
            for found in regex.finditer(text):
                if len(hits) == max_matches:
                    hits.append(_more(max_matches))
                    break
                hits.append(f"@{found.start()}: {_window(text, found.start(), found.end(), window)}")
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
    def _groups(self, sizes: list[int]) -> list[Any]:
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

    def partition(self, n: int | None = None, size: int | None = None, by: str | None = None) -> list[Any]:
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
    def __init__(self, items: list[Any], default_chunk_chars: int) -> None:
        super().__init__(default_chunk_chars)
        self._items = items
        self._of_str = isinstance(items[0], str)
        text = "the str itself" if self._of_str else "json.dumps(item)"
        self.doc_fields = {"noun": "items", "one": "item", "container": "a list", "text": text}

    def _count(self) -> int:
        return len(self._items)

    def _take(self, start: int, stop: int) -> list[Any]:
        return self._items[start:stop]

    def _groups(self, sizes: list[int]) -> list[Any]:
        starts = itertools.accumulate(sizes, initial=0)
        return [self._items[start : start + size] for start, size in zip(starts, sizes)]

    def _texts(self) -> Iterator[str]:
        items = list.__iter__(self._items)  # only read: no read-only view of each item is needed
        return items if self._of_str else map(_json, items)

    def _default_sizes(self) -> list[int]:
        items = list.__iter__(self._items)
        lengths = map(len, items) if self._of_str else map(_record_chars, items)
        return _sizes_by_chars(lengths, self._default_size)


class _DictHelpers(_ItemHelpers):
    doc_fields = {"noun": "entries", "one": "entry", "container": "a dict", "text": "'key: value'"}

    def __init__(self, mapping: dict[Any, Any], default_chunk_chars: int) -> None:
        super().__init__(default_chunk_chars)
        self._mapping = mapping

    def _count(self) -> int:
        return len(self._mapping)

    def _take(self, start: int, stop: int) -> dict[Any, Any]:
        return dict(itertools.islice(self._mapping.items(), start, stop))

    def _groups(self, sizes: list[int]) -> list[Any]:
        entries = iter(self._mapping.items())  # one pass: islice from the start for every group would be quadratic
        return [dict(itertools.islice(entries, size)) for size in sizes]

    def _texts(self) -> Iterator[str]:
        for key, value in dict.items(self._mapping):  # only read: no read-only view of each value is needed
            yield f"{key}: {value if isinstance(value, str) else _json(value)}"

    def _default_sizes(self) -> list[int]:
        lengths = (len(str(key)) + len(str(value)) for key, value in dict.items(self._mapping))
        return _sizes_by_chars(lengths, self._default_size)


# pandas DataFrame: only standard DataFrame methods, no pandas import. A frame can have millions of rows, so its
# length, hash and default chunking come from a sample of at most _SAMPLE evenly spaced rows.


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

    def _groups(self, sizes: list[int]) -> list[Any]:
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
