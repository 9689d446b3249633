"""Documents as users have them: PDF, HTML and Parquet, and the files no loader can read.

PDF text comes through pypdf, an optional extra (`pip install 'rlm_kernel[pdf]'`), as a list of
`{"page": n, "text": ...}` (pages numbered from 1), so that the model can cite where an answer came from.
HTML becomes its visible text (scripts and styles left out, blocks on lines of their own). Parquet becomes
a list of records when pandas (with pyarrow or fastparquet) is installed. Every other file is read as
text by loaders.py; a file with NUL bytes is refused as binary. Every refusal is an `Unreadable` error,
which a folder's load can skip (`skip_unreadable=True`, `--skip-unreadable`).
"""

from __future__ import annotations

import html
import importlib
import io
import re
from typing import Any

from rlm_kernel.core.errors import ContextError

DOCUMENT_EXTENSIONS = (".pdf", ".html", ".htm", ".parquet")
BINARY_PROBE_BYTES = 8192
_BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "pre", "table"}
_HIDDEN = {"script", "style", "noscript", "template", "head"}


class Unreadable(ContextError):
    """A file no loader can read; a folder's load may skip it."""


def is_document(path: str) -> bool:
    return path.lower().endswith(DOCUMENT_EXTENSIONS)


def read_document(path: str, data: bytes, max_rows: int, max_bytes: int) -> object:
    """The document in `data` (read from `path`); PDF pages and Parquet rows bounded by max_rows, Parquet's
    decompressed size by max_bytes."""
    lowered = path.lower()
    if lowered.endswith(".pdf"):
        return read_pdf(path, data, max_rows)
    if lowered.endswith((".html", ".htm")):
        return html_text(data.decode("utf-8-sig", errors="replace"))
    return read_parquet(path, data, max_rows, max_bytes)


def refuse_binary(path: str, data: bytes) -> None:
    """Unreadable when the file looks binary (a NUL byte near its start): text decoding would be noise."""
    if b"\0" in data[:BINARY_PROBE_BYTES]:
        raise Unreadable(f"binary file: {path}")


def _optional(module: str, purpose: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise Unreadable(f"{purpose} needs {module}, which is not installed: pip install {extra}") from None


def read_pdf(path: str, data: bytes, max_rows: int) -> list[dict[str, Any]]:
    pypdf = _optional("pypdf", f"reading the PDF {path}", "'rlm_kernel[pdf]' (or pypdf)")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if getattr(reader, "is_encrypted", False):
            raise Unreadable(f"encrypted PDF: {path}")
        if len(reader.pages) > max_rows:
            raise Unreadable(f"{path} has more than max_rows={max_rows:,} pages")
        return [{"page": number, "text": page.extract_text() or ""} for number, page in enumerate(reader.pages, 1)]
    except Unreadable:
        raise
    except Exception as error:  # pypdf raises many kinds on damaged files
        raise Unreadable(f"cannot read the PDF {path}: {type(error).__name__}: {error}") from None


# html.parser takes cubic time on hostile markup ('<a ' * 20000: 41 s) and asserts on some broken input, so HTML
# is read by one linear scan: tags only matter for hiding scripts and styles and for line breaks.
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9:-]*)")
_TAG_END = re.compile(r"""(?:[^>"']|"[^"]*"|'[^']*')*>""")
_TAG_WINDOW = 4096  # characters a tag's quoted attributes are followed across: keeps each tag's scan bounded
_RAW_TEXT = {"script", "style"}  # their content is not markup: it ends only at the closing tag


def html_text(markup: str) -> str:
    """The visible text of an HTML page: hidden elements left out, blocks on lines of their own."""
    parts: list[str] = []
    hidden = 0
    at, size = 0, len(markup)
    while at < size:
        start = markup.find("<", at)
        if start < 0:
            start = size
        if not hidden and start > at:
            parts.append(html.unescape(markup[at:start]))
        if start == size:
            break
        tag = _TAG.match(markup, start)
        if tag is None:
            if markup.startswith("<!--", start):
                end = markup.find("-->", start + 4)
                at = size if end < 0 else end + 3
            elif markup.startswith(("<!", "<?"), start):
                end = markup.find(">", start)
                at = size if end < 0 else end + 1
            else:  # a lone "<" is text
                if not hidden:
                    parts.append("<")
                at = start + 1
            continue
        closing, name = tag.group(1), tag.group(2).lower()
        ended = _TAG_END.match(markup, tag.end(), tag.end() + _TAG_WINDOW)
        if ended is None:  # an unclosed quote, or a long attribute: the tag ends at the next ">", or the page does
            end = markup.find(">", tag.end())
            at = size if end < 0 else end + 1
        else:
            at = ended.end()
        if name in _HIDDEN:
            hidden = max(0, hidden - 1) if closing else hidden + 1
        elif name in _BLOCKS:
            parts.append("\n")
        if name in _RAW_TEXT and not closing:
            found = re.compile(f"</{name}", re.I).search(markup, at)
            at = found.start() if found else size
    lines = (" ".join(line.split()) for line in "".join(parts).splitlines())
    return "\n".join(line for line in lines if line)


def read_parquet(path: str, data: bytes, max_rows: int, max_bytes: int) -> list[dict[str, Any]]:
    pandas = _optional("pandas", f"reading the Parquet file {path}", "pandas pyarrow")
    _check_parquet_size(path, data, max_rows, max_bytes)
    try:
        records: list[dict[str, Any]] = pandas.read_parquet(io.BytesIO(data)).to_dict("records")
    except ImportError as error:  # pandas without a Parquet engine
        raise Unreadable(f"reading the Parquet file {path} needs pyarrow or fastparquet: {error}") from None
    except Exception as error:
        raise Unreadable(f"cannot read the Parquet file {path}: {type(error).__name__}: {error}") from None
    if len(records) > max_rows:
        raise Unreadable(
            f"{path} has more than max_rows={max_rows:,} rows: load it with limits=LoadLimits(max_rows=...)"
        )
    return records


def _check_parquet_size(path: str, data: bytes, max_rows: int, max_bytes: int) -> None:
    """Refuse a Parquet file whose rows or decompressed size exceed the limits, from its footer, before reading it:
    a few KB of zstd can hold GBs of zeros."""
    try:
        parquet = importlib.import_module("pyarrow.parquet")
    except ImportError:
        return  # fastparquet: the row count is checked after reading
    try:
        metadata = parquet.ParquetFile(io.BytesIO(data)).metadata
    except Exception as error:
        raise Unreadable(f"cannot read the Parquet file {path}: {type(error).__name__}: {error}") from None
    if metadata.num_rows > max_rows:
        raise Unreadable(
            f"{path} has more than max_rows={max_rows:,} rows: load it with limits=LoadLimits(max_rows=...)"
        )
    size = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if size > max_bytes:
        raise Unreadable(
            f"{path} holds {size:,} bytes decompressed, more than max_file_bytes={max_bytes:,}: "
            "load it with limits=LoadLimits(max_file_bytes=...)"
        )
