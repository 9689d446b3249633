"""Loading a context from files: text, Markdown, JSON, JSONL, CSV, PDF, HTML, Parquet, a folder or a glob."""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rlm_kernel.core.context import check_context
from rlm_kernel.core.errors import ContextError
from rlm_kernel.loaders.documents import is_document, read_document, refuse_binary

SKIP_HINT = "skip_unreadable=True (--skip-unreadable) leaves such files out"


@dataclass
class Loaded:
    context: object
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of each file left out


# ---------------------------------------------------------------------------
# loading from files


def load_context(path_or_glob: str, *, skip_unreadable: bool = False) -> object:
    """Load a context from a file, a directory or a glob pattern (see `load_files`, which also says what it skipped).

    One file: .json → the parsed value; .jsonl/.ndjson → a list of the parsed lines (blank lines skipped);
    .csv → list[dict] (csv.DictReader); .pdf → list of {"page": n, "text": str} (pypdf, an optional extra);
    .html/.htm → its text; .parquet → list[dict] (pandas); any other extension → str (UTF-8; a BOM is dropped,
    line ends become \\n; a binary file is refused).
    A directory (recursive, hidden files and folders skipped) or a glob pattern (containing * ? or [) →
    list[dict] of {"path": str, "content": ...}, one per file in sorted path order, even when only one file
    matches; "content" is what loading that file alone gives (a str, or the parsed JSON/JSONL/CSV value).
    Raises ContextError, with a one-line message naming the path, when nothing is found, a file cannot be
    read or parsed, or the result is not a usable context. With `skip_unreadable`, a folder's or a glob's
    files that cannot be read are left out instead.
    """
    return load_files(path_or_glob, skip_unreadable=skip_unreadable).context


def load_files(path_or_glob: str, *, skip_unreadable: bool = False) -> Loaded:
    """`load_context`'s context, and the files it skipped with the reason for each."""
    path = os.path.expanduser(path_or_glob)
    if os.path.isfile(path):
        loaded = Loaded(_load_file(path))
    elif os.path.isdir(path):
        files = _files_under(path)
        if not files:
            raise ContextError(f"no files in directory {path_or_glob} (hidden files are skipped)")
        loaded = _load_many(path_or_glob, files, skip_unreadable)
    elif any(char in path for char in "*?["):
        files = sorted(match for match in glob.glob(path, recursive=True) if os.path.isfile(match))
        if not files:
            raise ContextError(f"no files match {path_or_glob}")
        loaded = _load_many(path_or_glob, files, skip_unreadable)
    else:
        raise ContextError(f"no such file or directory: {path_or_glob}")
    try:
        check_context(loaded.context)
    except ContextError as error:
        raise ContextError(f"{path_or_glob}: {error}") from None
    return loaded


def _load_many(source: str, files: list[str], skip_unreadable: bool) -> Loaded:
    documents, skipped = [], []
    for file in files:
        try:
            documents.append({"path": file, "content": _load_file(file)})
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
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        files += [os.path.join(folder, name) for name in names if not name.startswith(".")]
    return sorted(files)


def _load_file(path: str) -> object:
    extension = os.path.splitext(path)[1].lower()
    if is_document(path):
        return read_document(path)
    refuse_binary(path)
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


def _parse_jsonl(lines: Iterable[str], path: str) -> list[Any]:
    parsed = []
    for line_no, line in enumerate(lines, 1):
        if line.strip():
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ContextError(f"invalid JSON on line {line_no} of {path}: {error.msg}") from None
    return parsed
