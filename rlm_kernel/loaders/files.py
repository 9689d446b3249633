"""Loading a context from files: text, Markdown, JSON, JSONL, CSV, PDF, HTML, Parquet, a folder or a glob.

A folder may come from anywhere (a tarball, a git checkout, a shared drive), so only its regular files are read:
a link that leads out of the folder is refused unless `follow_symlinks`, devices, FIFOs and sockets are skipped
with the reason (a FIFO is opened without blocking, so it never hangs the load), and each file is bounded in
bytes, rows, nesting and parse time (`LoadLimits`). Every failure is one ContextError line naming the file.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rlm_kernel.core.context import check_context
from rlm_kernel.core.errors import ContextError
from rlm_kernel.core.repl import contained
from rlm_kernel.loaders.documents import Unreadable, is_document, read_document, refuse_binary

SKIP_HINT = "skip_unreadable=True (--skip-unreadable) leaves such files out"


@dataclass(frozen=True)
class LoadLimits:
    """What one file may cost to load: a folder from elsewhere (a tarball, a checkout) is not trusted."""

    max_file_bytes: int = 512 * 1024 * 1024  # bytes read from one file
    max_rows: int = 1_000_000  # rows of one table (CSV, JSONL, Parquet), pages of one PDF
    parse_seconds: float = 60.0  # time to parse one file
    max_depth: int = 100  # nesting of one JSON value: deeper ones break copying and checking the context later
    follow_symlinks: bool = False  # read a folder's links that lead out of it


@dataclass
class Loaded:
    context: object
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of each file left out


# ---------------------------------------------------------------------------
# loading from files


def load_context(
    path_or_glob: str, *, skip_unreadable: bool = False, follow_symlinks: bool = False, limits: LoadLimits | None = None
) -> object:
    """Load a context from a file, a directory or a glob pattern (see `load_files`, which also says what it skipped).

    One file: .json → the parsed value; .jsonl/.ndjson → a list of the parsed lines (blank lines skipped);
    .csv → list[dict] (csv.DictReader); .pdf → list of {"page": n, "text": str} (pypdf, an optional extra);
    .html/.htm → its text; .parquet → list[dict] (pandas); any other extension → str (UTF-8; a BOM is dropped,
    line ends become \\n; a binary file is refused).
    A directory (recursive, hidden files and folders skipped) or a glob pattern (containing * ? or [) →
    list[dict] of {"path": str, "content": ...}, one per file in sorted path order, even when only one file
    matches; "content" is what loading that file alone gives (a str, or the parsed JSON/JSONL/CSV value).
    A directory's or a glob's links that lead outside it are refused unless `follow_symlinks`; anything not a
    regular file is refused; `limits` bounds each file (LoadLimits' defaults otherwise).
    Raises ContextError, with a one-line message naming the path, when nothing is found, a file cannot be
    read or parsed, or the result is not a usable context. With `skip_unreadable`, a folder's or a glob's
    files that cannot be read are left out instead.
    """
    return load_files(
        path_or_glob, skip_unreadable=skip_unreadable, follow_symlinks=follow_symlinks, limits=limits
    ).context


def load_files(
    path_or_glob: str, *, skip_unreadable: bool = False, follow_symlinks: bool = False, limits: LoadLimits | None = None
) -> Loaded:
    """`load_context`'s context, and the files it skipped with the reason for each."""
    limits = limits or LoadLimits()
    if follow_symlinks:
        limits = LoadLimits(**{**limits.__dict__, "follow_symlinks": True})
    path = os.path.expanduser(path_or_glob)
    if os.path.isdir(path):
        files = _files_under(path)
        if not files:
            raise ContextError(f"no files in directory {path_or_glob} (hidden files are skipped)")
        loaded = _load_many(path_or_glob, path, files, skip_unreadable, limits)
    elif os.path.lexists(path):
        loaded = Loaded(_load_file(path, None, limits))  # named by the user: a link is followed, to a regular file
    elif any(char in path for char in "*?["):
        files = sorted(match for match in glob.glob(path, recursive=True) if not os.path.isdir(match))
        if not files:
            raise ContextError(f"no files match {path_or_glob}")
        loaded = _load_many(path_or_glob, _glob_root(path), files, skip_unreadable, limits)
    else:
        raise ContextError(f"no such file or directory: {path_or_glob}")
    try:
        check_context(loaded.context)
    except ContextError as error:
        raise ContextError(f"{path_or_glob}: {error}") from None
    return loaded


def _load_many(source: str, root: str, files: list[str], skip_unreadable: bool, limits: LoadLimits) -> Loaded:
    documents, skipped = [], []
    for file in files:
        try:
            documents.append({"path": file, "content": _load_file(file, root, limits)})
        except ContextError as error:
            if not skip_unreadable:
                raise ContextError(f"{error}; {SKIP_HINT}") from None
            skipped.append((file, str(error)))
    if not documents:
        raise ContextError(f"no readable files in {source}: all {len(files)} were skipped")
    return Loaded(documents, skipped)


def describe_skipped(skipped: list[tuple[str, str]], shown: int = 10) -> str:
    """One line listing what a load left out."""
    reasons = "; ".join(why for _, why in skipped[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"skipped {len(skipped)} unreadable file{'s' if len(skipped) != 1 else ''}: {reasons}{more}"


def _files_under(root: str) -> list[str]:
    files = []
    for folder, subfolders, names in os.walk(root):  # links to folders are not walked into
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        files += [os.path.join(folder, name) for name in names if not name.startswith(".")]
    return sorted(files)


def _glob_root(pattern: str) -> str:
    """The folder a glob pattern searches: its leading parts without wildcards."""
    parts = pattern.split(os.sep)
    fixed = next((i for i, part in enumerate(parts) if any(char in part for char in "*?[")), len(parts))
    return os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else ".")


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _read_bytes(path: str, root: str | None, limits: LoadLimits) -> bytes:
    """The bytes of `path`, a regular file (inside `root` unless following links), at most max_file_bytes."""
    root_real = os.path.realpath(root) if root is not None else None
    if root_real is not None and not limits.follow_symlinks:
        target = os.path.realpath(path)
        if not _inside(target, root_real):
            raise Unreadable(
                f"{path} links to {target}, outside {root}: copy it into the folder, or load with follow_symlinks=True"
            )
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise Unreadable(f"cannot read {path}: {error.strerror or error}") from None
    with open(descriptor, "rb", closefd=True) as file:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise Unreadable(f"not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'special')}): {path}")
        opened = f"/proc/self/fd/{descriptor}"  # what was opened, should the link have changed since the check
        if root_real is not None and not limits.follow_symlinks and os.path.exists(opened):
            if not _inside(os.path.realpath(opened), root_real):
                raise Unreadable(f"{path} changed into a link outside {root} while it was read")
        try:
            data = file.read(limits.max_file_bytes + 1)
        except OSError as error:
            raise Unreadable(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > limits.max_file_bytes:
        raise Unreadable(
            f"{path} is larger than max_file_bytes={limits.max_file_bytes:,}: "
            "load it with limits=LoadLimits(max_file_bytes=...) or split it"
        )
    return data


def _load_file(path: str, root: str | None, limits: LoadLimits) -> object:
    data = _read_bytes(path, root, limits)
    value = _parse_contained(path, lambda: _parse(path, data, limits), limits)
    if _deeper_than(value, limits.max_depth):
        raise Unreadable(f"{path} is nested deeper than max_depth={limits.max_depth} levels")
    return value


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _parse_contained(path: str, parse: Callable[[], object], limits: LoadLimits) -> object:
    """`parse()` under the parse-time deadline; any failure (RecursionError, a parser's AssertionError, a bomb's
    MemoryError) becomes one line naming the file."""
    value = contained(parse, _Failed, limits.parse_seconds)
    if not isinstance(value, _Failed):
        return value
    error = value.error
    if isinstance(error, ContextError):
        raise error
    if isinstance(error, RecursionError):
        raise Unreadable(f"{path} is nested too deeply to parse")
    if isinstance(error, BaseException) and not isinstance(error, Exception):  # the deadline's stop
        raise Unreadable(
            f"{path} took longer than parse_seconds={limits.parse_seconds:g} s to parse: "
            "load it with limits=LoadLimits(parse_seconds=...) or convert it"
        )
    detail = " ".join(str(error).split())[:200]
    raise Unreadable(f"cannot parse {path}: {type(error).__name__}{': ' + detail if detail else ''}")


def _deeper_than(value: object, limit: int) -> bool:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _parse(path: str, data: bytes, limits: LoadLimits) -> object:
    extension = os.path.splitext(path)[1].lower()
    if is_document(path):
        return read_document(path, data, limits.max_rows, limits.max_file_bytes)
    refuse_binary(path, data)
    try:
        # utf-8-sig: a BOM would otherwise break json and end up in the first CSV column's name
        text = data.decode("utf-8-sig")
        if extension == ".csv":
            return _parse_csv(text, path, limits.max_rows)
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as text mode reads them
        if extension == ".json":
            return json.loads(text)
        if extension in (".jsonl", ".ndjson"):
            return _parse_jsonl(text.split("\n"), path, limits.max_rows)
        return text
    except UnicodeDecodeError as error:
        raise ContextError(f"not UTF-8 text: {path} ({error.reason}); decode it yourself and pass a str") from None
    except json.JSONDecodeError as error:
        raise ContextError(f"invalid JSON in {path}: {error}") from None
    except csv.Error as error:
        raise ContextError(f"invalid CSV in {path}: {error}") from None


def _too_many_rows(path: str, max_rows: int) -> ContextError:
    return Unreadable(f"{path} has more than max_rows={max_rows:,} rows: load it with limits=LoadLimits(max_rows=...)")


def _parse_csv(text: str, path: str, max_rows: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for row in csv.DictReader(io.StringIO(text, newline="")):
        if len(rows) == max_rows:
            raise _too_many_rows(path, max_rows)
        rows.append(row)
    return rows


def _parse_jsonl(lines: Iterable[str], path: str, max_rows: int) -> list[Any]:
    parsed: list[Any] = []
    for line_no, line in enumerate(lines, 1):
        if line.strip():
            if len(parsed) == max_rows:
                raise _too_many_rows(path, max_rows)
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ContextError(f"invalid JSON on line {line_no} of {path}: {error.msg}") from None
            except RecursionError:
                raise Unreadable(f"{path} is nested too deeply to parse (line {line_no})") from None
    return parsed
