"""Text the magics display: answers and notes."""

from __future__ import annotations

from typing import Any


class RLMAnswer(str):
    """A text answer: a real str that a notebook renders as Markdown."""

    def _repr_markdown_(self) -> str:
        return str(self)


class Text:
    """Markdown for notebooks, the same text for terminals (IPython's Markdown has no text/plain)."""

    def __init__(self, markdown: str) -> None:
        self.markdown = markdown

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/markdown": self.markdown, "text/plain": self.markdown}
