"""The call tree's colours: JupyterLab's theme variables, with a light palette where a page defines none.

Inline styles only (the tree must read the same in nbconvert's HTML, on GitHub and in a saved
notebook), so each colour is `var(--jp-..., fallback)`: JupyterLab and nbconvert's lab template
(light or `--theme dark`) define the variables; elsewhere the tree carries its own light background,
so its dark fallback text stays readable on a dark page too.
"""

from __future__ import annotations

from pygments.style import Style
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, Punctuation, String, Token

TEXT = "var(--jp-content-font-color1,#1f2328)"
MUTED = "var(--jp-content-font-color2,#57606a)"
BACKGROUND = "var(--jp-layout-color0,#ffffff)"
PANEL = "var(--jp-cell-editor-background,#f6f8fa)"  # code
OUTPUT = "var(--jp-layout-color1,#fbfbfb)"
BORDER = "var(--jp-border-color2,#d0d7de)"
RULE = "var(--jp-border-color1,#afb8c1)"  # the dotted line before a sub-call
ERROR_BACKGROUND = "var(--jp-rendermime-error-background,#ffebe9)"
ERROR_TEXT = "var(--jp-content-font-color1,#82071e)"
LINK = "var(--jp-content-link-color,#0969da)"

# Status badges are white text on these, in every theme (each has a contrast ratio of 4.5 or more with white).
STATUS_COLOURS = {
    "running": "#0969da",
    "done": "#1a7f37",
    "error": "#cf222e",
    "budget": "#bc4c00",
    "interrupted": "#6e7781",
    "max_iterations": "#8250df",
    "queued": "#9a6700",
    "cancelled": "#59636e",
}
OTHER_STATUS = "#57606a"


def _editor(name: str, fallback: str) -> str:
    return f"var(--jp-mirror-editor-{name}-color,{fallback})"


class NotebookCodeStyle(Style):
    """Python highlighted with the colours of JupyterLab's own code editor (and its light ones as fallbacks)."""

    styles = {
        Token: _editor("variable", "#1f2328"),
        Comment: "italic " + _editor("comment", "#408080"),
        Keyword: "bold " + _editor("keyword", "#008000"),
        Operator: _editor("operator", "#7800c2"),
        Operator.Word: "bold " + _editor("keyword", "#008000"),
        Punctuation: _editor("punctuation", "#005aa0"),
        Name.Builtin: _editor("builtin", "#008000"),
        Name.Function: _editor("def", "#0000ff"),
        Name.Class: _editor("def", "#0000ff"),
        Name.Decorator: _editor("meta", "#aa22ff"),
        Name.Namespace: _editor("def", "#0000ff"),
        Number: _editor("number", "#008800"),
        String: _editor("string", "#ba2121"),
        String.Escape: _editor("string-2", "#770088"),
        String.Interpol: _editor("string-2", "#770088"),
        Error: _editor("error", "#ff0000"),
    }
