"""Text the magics display: answers, tables and notes.

What the model submitted is shown as written: plain text (no Markdown, no LaTeX), so `$`,
line breaks, pipes and underscores survive. Tables are HTML the math typesetter skips, with
aligned plain text for terminals.
"""

from __future__ import annotations

import html
from typing import Any

# MathJax 3 (JupyterLab) and 2 (nbconvert, classic Notebook) leave elements of these classes alone.
NO_MATH = "mathjax_ignore tex2jax_ignore"


class RLMAnswer(str):
    """A text answer: a real str that a notebook shows exactly as written."""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": str(self)}

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


class Text:
    """Markdown for notebooks, the same text for terminals (IPython's Markdown has no text/plain)."""

    def __init__(self, markdown: str) -> None:
        self.markdown = markdown

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/markdown": self.markdown, "text/plain": self.markdown}


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
