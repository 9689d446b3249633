"""Text the magics display: answers, tables and notes.

What the model submitted is shown as written: plain text (no Markdown, no LaTeX), so `$`,
line breaks, pipes and underscores survive. Tables are HTML the math typesetter skips, with
aligned plain text for terminals.
"""

from __future__ import annotations

import html
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlm_kernel.core.trace import Trace
    from rlm_kernel.formats.batch import BatchProgress

# MathJax 3 (JupyterLab) and 2 (nbconvert, classic Notebook) leave elements of these classes alone.
NO_MATH = "mathjax_ignore tex2jax_ignore"


class RLMAnswer(str):
    """A text answer: a real str that a notebook shows exactly as written."""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": str(self)}

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


class MarkdownAnswer(str):
    """A text answer asked for as Markdown (`--format markdown`): rendered in a notebook, as written in a terminal."""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/markdown": str(self), "text/plain": str(self)}

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


class Text:
    """Markdown for notebooks, the same text for terminals (IPython's Markdown has no text/plain)."""

    def __init__(self, markdown: str) -> None:
        self.markdown = markdown

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/markdown": self.markdown, "text/plain": self.markdown}


class Note:
    """One line shown as written (no Markdown, no LaTeX: prices carry `$`), HTML for notebooks, text for terminals."""

    def __init__(self, line: str) -> None:
        self.line = line

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/html": f'<div class="{NO_MATH}">{html.escape(self.line)}</div>', "text/plain": self.line}


class Table:
    """Rows of plain values: an HTML table for notebooks, aligned columns for terminals; every value as written."""

    def __init__(self, header: list[str], rows: list[list[str]]) -> None:
        self.header, self.rows = header, rows

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/html": self.html(), "text/plain": self.plain()}

    def html(self) -> str:
        def row(cells: list[str], tag: str) -> str:
            return "<tr>" + "".join(f'<{tag} style="text-align:left">{html.escape(c)}</{tag}>' for c in cells) + "</tr>"

        body = "".join(row(r, "td") for r in self.rows)
        return f'<table class="{NO_MATH}"><thead>{row(self.header, "th")}</thead><tbody>{body}</tbody></table>'

    def plain(self) -> str:
        widths = [max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [self.header, *self.rows]
        ]
        return "\n".join(lines)


class TreePage:
    """A run's call tree with no widgets: nested <details> (the nodes in `opened` open) and its outline as text.

    What a finished run leaves in its output and `%rlm show` displays, so nbconvert, papermill, a notebook
    saved with widget state and GitHub show the same tree as JupyterLab.
    """

    def __init__(self, trace: Trace, opened: Collection[str] | None = None, *, error_below: bool = False) -> None:
        self.trace, self.opened, self.error_below = trace, opened, error_below

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from rlm_kernel.formats.html import render_html  # pygments only when a tree is drawn

        return {
            "text/html": render_html(self.trace, self.opened, error_below=self.error_below),
            "text/plain": self.trace.outline() or "RLM trace: no calls yet",
        }


class BatchPage:
    """A batch with no widgets: its counts and one folded row a question with its call tree, and the same as text.

    What a finished batch leaves in its output, as `TreePage` is what a finished run leaves."""

    def __init__(self, progress: BatchProgress) -> None:
        self.progress = progress

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from rlm_kernel.formats.batch import render_batch_html  # pygments only when a tree is drawn

        return {"text/html": render_batch_html(self.progress), "text/plain": self.progress.outline()}
