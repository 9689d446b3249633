"""Two runs side by side (`%rlm diff A B`): the settings that differ, then answer, tree, usage, time and code.

Read from the traces' events alone (the root's recorded settings, each node's iterations and blocks), so a run
in this session and one read back from a JSONL trace or an export compare alike. Usage is the trace's, worded as
every other view words it (`Usage.calls_text`, `Usage.cost_text`).
"""

from __future__ import annotations

import difflib
from typing import Any

from rlm_kernel.core.errors import TraceError
from rlm_kernel.core.trace import CallNode, Trace
from rlm_kernel.formats.progress import plural

SHOWN_CHARS = 80  # a question or an answer, on its one row


def compare_runs(a: Trace, b: Trace) -> list[tuple[str, str, str]]:
    """(what, run A's, run B's) rows: the question when they differ, the settings that differ, then the outcome."""
    root_a, root_b = _root(a), _root(b)
    rows = []
    if root_a.query != root_b.query:
        rows.append(("question", _one_line(root_a.query), _one_line(root_b.query)))
    settings_a, settings_b = _settings(a), _settings(b)
    for name in [*settings_a, *(n for n in settings_b if n not in settings_a)]:
        if settings_a.get(name) != settings_b.get(name):
            rows.append((f"setting {name}", _shown(settings_a.get(name)), _shown(settings_b.get(name))))
    for what, shown in _OUTCOME:
        rows.append((what, shown(a, root_a), shown(b, root_b)))
    return rows


def code_diff(a: Trace, b: Trace, name_a: str = "run A", name_b: str = "run B") -> str:
    """The code each run's nodes ran, depth first, as a unified diff ("" when they ran the same code)."""
    return "".join(difflib.unified_diff(_code(a), _code(b), fromfile=name_a, tofile=name_b))


def _root(trace: Trace) -> CallNode:
    if trace.root is None:
        raise TraceError("the run has no root call: nothing to compare")
    return trace.root


def _settings(trace: Trace) -> dict[str, Any]:
    settings = trace.root_start().get("settings")
    return dict(settings) if isinstance(settings, dict) else {}


def _code(trace: Trace) -> list[str]:
    lines = []
    for node in trace.walk():
        for iteration in node.iterations:
            for cell in iteration.cells:
                lines.append(f"# {node.id}:{iteration.index + 1} block {cell.index + 1}\n")
                lines.extend(line + "\n" for line in cell.code.rstrip().split("\n"))
    return lines


def _answer(trace: Trace, root: CallNode) -> str:
    return _one_line(root.answer) if root.answer is not None else f"(none: {root.error})"


def _iterations(trace: Trace, root: CallNode) -> str:
    everywhere = sum(len(node.iterations) for node in trace.walk())
    return f"{len(root.iterations):,} at the root, {everywhere:,} in all"


def _tree(trace: Trace, root: CallNode) -> str:
    nodes = list(trace.walk())
    return f"{plural(len(nodes), 'node')}, depth up to {max(node.depth for node in nodes)}"


def _blocks(trace: Trace, root: CallNode) -> str:
    cells = [cell for node in trace.walk() for iteration in node.iterations for cell in iteration.cells]
    failed = sum(1 for cell in cells if cell.error)
    return plural(len(cells), "code block") + (f", {failed:,} failed" if failed else "")


def _tokens(trace: Trace, root: CallNode) -> str:
    usage = trace.subtree_usage(root.id)
    return f"{usage.input_tokens:,} input + {usage.output_tokens:,} output"


_OUTCOME = (
    ("status", lambda trace, root: root.status),
    ("answer", _answer),
    ("iterations", _iterations),
    ("call tree", _tree),
    ("code", _blocks),
    ("model calls", lambda trace, root: trace.subtree_usage(root.id).calls_text()),
    ("tokens", _tokens),
    ("cost", lambda trace, root: trace.subtree_usage(root.id).cost_text() or "-"),
    ("time", lambda trace, root: f"{root.seconds:.2f} s"),
)


def _shown(value: object) -> str:
    return "not set" if value is None else str(value)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
