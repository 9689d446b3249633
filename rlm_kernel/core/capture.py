"""Per-thread capture of stdout/stderr.

The reference implementation swaps the process-wide `sys.stdout` per execution,
so child RLMs running in parallel threads steal each other's output. Here a
proxy is installed once while any capture is active and routes each write to
the buffer of the thread that made it; other threads write through unchanged.
"""

from __future__ import annotations

import re
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_local = threading.local()
_install_lock = threading.Lock()
_active = 0


_NOTE = re.compile(r"\n\[\.\.\. ([\d,]+) of ([\d,]+) chars omitted: keep large results in variables [^\]]*\]\n")


def truncate(text: str, limit: int) -> str:
    """Head and tail of `text` within about `limit` chars, stating how much of the original was left out.

    `text` may already hold abridged parts (a block's stdout and its value, each cut before they are
    joined): their notes count as the characters they stand for, so the numbers stay true when cut again.
    """
    if len(text) <= limit:
        return text
    notes = list(_NOTE.finditer(text))
    total = _original_chars(text, notes, 0, len(text))
    return _abridged(text, text, total, limit, notes)


def _original_chars(text: str, notes: list[re.Match[str]], start: int, end: int) -> int:
    """How many characters of the original text[start:end] stands for (notes inside it count as what they cut)."""
    chars = end - start
    for note in notes:
        if start <= note.start() and note.end() <= end:
            chars += int(note.group(1).replace(",", "")) - len(note.group(0))
    return chars


def _outside_notes(position: int, notes: list[re.Match[str]], toward_start: bool) -> int:
    """`position` moved out of any note it falls inside, so no cut splits a note."""
    for note in notes:
        if note.start() < position < note.end():
            return note.start() if toward_start else note.end()
    return position


def _abridged(head_source: str, tail_source: str, total: int, limit: int, notes: list[re.Match[str]] = []) -> str:  # noqa: B006 - read only
    # Leave room for the note so that the result fits in `limit` and is never cut twice.
    room = limit - 160 if limit > 320 else limit // 2
    head_end = _outside_notes(min(len(head_source), room * 2 // 3), notes, toward_start=True)
    head = head_source[:head_end]
    tail_start = len(tail_source) - (room - len(head)) if room > len(head) else len(tail_source)
    tail_start = max(head_end, _outside_notes(tail_start, notes, toward_start=False))
    tail = tail_source[tail_start:]
    kept = _original_chars(head_source, notes, 0, head_end) + _original_chars(
        tail_source, notes, tail_start, len(tail_source)
    )
    omitted = total - kept
    return (
        f"{head}\n[... {omitted:,} of {total:,} chars omitted: keep large results in variables "
        f"and print slices or summaries ...]\n{tail}"
    )


class BoundedText:
    """A write buffer that keeps only its head and tail, and the true length."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._head: list[str] = []
        self._head_len = 0
        self._tail: deque[str] = deque()
        self._tail_len = 0
        self.total = 0

    def write(self, s: str) -> int:
        n = len(s)
        self.total += n
        room = self._keep - self._head_len
        if room > 0:
            self._head.append(s[:room])
            self._head_len += min(room, n)
            s = s[room:]
        if s:
            self._tail.append(s)
            self._tail_len += len(s)
            while self._tail and self._tail_len - len(self._tail[0]) >= self._keep:
                self._tail_len -= len(self._tail.popleft())
        return n

    def text(self, limit: int) -> str:
        """The captured text, abridged to about `limit` chars (`limit` <= keep)."""
        kept = "".join(self._head) + "".join(self._tail)
        if self.total <= limit:
            return kept
        return _abridged(kept, kept, self.total, limit)


class _ThreadRoutedStream:
    """Stands in for sys.stdout/sys.stderr; routes writes by the writing thread."""

    def __init__(self, fallback: TextIO, slot: str) -> None:
        self._fallback = fallback
        self._slot = slot

    def write(self, s: str) -> int:
        target = getattr(_local, self._slot, None)
        return (target or self._fallback).write(s)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if getattr(_local, self._slot, None) is None:
            self._fallback.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fallback, name)


def _install() -> None:
    global _active
    with _install_lock:
        _active += 1
        if not isinstance(sys.stdout, _ThreadRoutedStream):
            sys.stdout = _ThreadRoutedStream(sys.stdout, "out")
        if not isinstance(sys.stderr, _ThreadRoutedStream):
            sys.stderr = _ThreadRoutedStream(sys.stderr, "err")


def _uninstall() -> None:
    global _active
    with _install_lock:
        _active -= 1
        if _active:
            return
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if isinstance(stream, _ThreadRoutedStream):
                setattr(sys, name, stream._fallback)


@contextmanager
def capture_thread_output(keep: int) -> Iterator[tuple[BoundedText, BoundedText]]:
    """Capture what this thread writes to stdout and stderr, keeping head and tail."""
    out, err = BoundedText(keep), BoundedText(keep)
    saved = getattr(_local, "out", None), getattr(_local, "err", None)
    _local.out, _local.err = out, err
    _install()
    try:
        yield out, err
    finally:
        _local.out, _local.err = saved
        _uninstall()
