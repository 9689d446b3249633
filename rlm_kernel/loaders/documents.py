"""Documents as users have them: PDF, HTML and Parquet, and the files no loader can read.

PDF text comes through pypdf, an optional extra (`pip install 'rlm_kernel[pdf]'`), as a list of
`{"page": n, "text": ...}` (pages numbered from 1), so that the model can cite where an answer came from.
HTML becomes its visible text (scripts and styles left out, blocks on lines of their own). Parquet becomes
a list of records when pandas (with pyarrow or fastparquet) is installed. Every other file is read as
text by loaders.py; a file with NUL bytes is refused as binary. Every refusal is an `Unreadable` error,
which a folder's load can skip (`skip_unreadable=True`, `--skip-unreadable`).
"""

from __future__ import annotations

import html.parser
import importlib
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


def read_document(path: str) -> object:
    lowered = path.lower()
    if lowered.endswith(".pdf"):
        return read_pdf(path)
    if lowered.endswith((".html", ".htm")):
        return read_html(path)
    return read_parquet(path)


def refuse_binary(path: str) -> None:
    """Unreadable when the file looks binary (a NUL byte near its start): text decoding would be noise."""
    try:
        with open(path, "rb") as file:
            head = file.read(BINARY_PROBE_BYTES)
    except OSError as error:
        raise Unreadable(f"cannot read {path}: {error.strerror or error}") from None
    if b"\0" in head:
        raise Unreadable(f"binary file: {path}")


def _optional(module: str, purpose: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise Unreadable(f"{purpose} needs {module}, which is not installed: pip install {extra}") from None


def read_pdf(path: str) -> list[dict[str, Any]]:
    pypdf = _optional("pypdf", f"reading the PDF {path}", "'rlm_kernel[pdf]' (or pypdf)")
    try:
        reader = pypdf.PdfReader(path)
        if getattr(reader, "is_encrypted", False):
            raise Unreadable(f"encrypted PDF: {path}")
        return [{"page": number, "text": page.extract_text() or ""} for number, page in enumerate(reader.pages, 1)]
    except Unreadable:
        raise
    except Exception as error:  # pypdf raises many kinds on damaged files
        raise Unreadable(f"cannot read the PDF {path}: {type(error).__name__}: {error}") from None


class _TextOfHTML(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).splitlines())
        return "\n".join(line for line in lines if line)


def html_text(markup: str) -> str:
    parser = _TextOfHTML()
    parser.feed(markup)
    parser.close()
    return parser.text()


def read_html(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as file:
            return html_text(file.read())
    except OSError as error:
        raise Unreadable(f"cannot read {path}: {error.strerror or error}") from None


def read_parquet(path: str) -> list[dict[str, Any]]:
    pandas = _optional("pandas", f"reading the Parquet file {path}", "pandas pyarrow")
    try:
        records: list[dict[str, Any]] = pandas.read_parquet(path).to_dict("records")
    except ImportError as error:  # pandas without a Parquet engine
        raise Unreadable(f"reading the Parquet file {path} needs pyarrow or fastparquet: {error}") from None
    except Exception as error:
        raise Unreadable(f"cannot read the Parquet file {path}: {type(error).__name__}: {error}") from None
    return records
