"""The call tree as self-contained HTML: nested <details>, inline styles only, no CSS or JS.

Everything the model or the user wrote is escaped. The same pieces serve the static page
(`render_html`: nbconvert, GitHub, a saved notebook) and the live widget (`render_node_html`:
one node's details, its children being widgets of their own).
"""

from __future__ import annotations

import functools
import html
import time
from collections.abc import Collection, Iterator

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.parsing import parse_reply
from rlm_kernel.core.trace import CallNode, Iteration, SubCall, Trace
from rlm_kernel.formats import theme
from rlm_kernel.formats.links import CellLinks
from rlm_kernel.formats.progress import (
    call_counts,
    child_counts,
    child_state,
    context_summary,
    node_activity,
    plural,
    replaced_names,
    run_totals,
    usage_parts,
)
from rlm_kernel.formats.timeline import render_timeline

STATUS_ICONS = {
    "running": "⏳",
    "done": "✅",
    "error": "❌",
    "budget": "💰",
    "interrupted": "⏹",
    "max_iterations": "🔁",
    "queued": "⏸",
    "cancelled": "⏹",
}
QUESTION_CHARS = 80
POINTER_REPLY_CHARS = 200
FAN_OUT_LISTED = 3  # a block that starts more sub-calls of a kind than this gets one line of counts for them
SHOWN_SUBCALLS = 20  # a block's sub-calls listed before the rest fold under "show N more"

_PAGE = (
    f"font-family:system-ui,sans-serif;font-size:13px;line-height:1.45;color:{theme.TEXT};background:{theme.BACKGROUND}"
)
_PRE = (
    "margin:3px 0;padding:4px 8px;border-radius:4px;white-space:pre-wrap;word-break:break-word;"
    "max-height:28em;overflow:auto;font-family:ui-monospace,monospace;font-size:12px;line-height:1.35"
)
_CODE_PRE = f"{_PRE};background:{theme.PANEL};color:{theme.TEXT};border-left:3px solid {theme.BORDER}"
_OUT_PRE = f"{_PRE};background:{theme.OUTPUT};color:{theme.TEXT};border:1px solid {theme.BORDER}"
_ERR_PRE = f"{_PRE};background:{theme.ERROR_BACKGROUND};border-left:3px solid #cf222e;color:{theme.ERROR_TEXT}"
_MUTED = f"color:{theme.MUTED};font-size:12px"
_PROSE = "white-space:pre-wrap;word-break:break-word;margin:3px 0"
_SUB = f"margin:3px 0 3px 12px;padding-left:6px;border-left:2px dotted {theme.RULE}"

_LEXER = PythonLexer()
_FORMATTER = HtmlFormatter(noclasses=True, nowrap=True, style=theme.NotebookCodeStyle)


def render_html(trace: Trace, opened: Collection[str] | None = None, *, error_below: bool = False) -> str:
    """The whole tree as nested <details>: the nodes in `opened` open (default: the root alone).

    `error_below`: the cell's own error says the root's error, so the tree points to it rather than repeat it."""
    if trace.root is None:
        return f'<div style="{_PAGE}"><i>RLM trace: no calls yet</i></div>'
    renderer = _Renderer(trace, CellLinks.from_events(trace.events), nested=True, usage=_subtree_usages(trace))
    renderer.opened = {trace.root.id} if opened is None else set(opened)
    renderer.error_below = error_below
    header = f'<div style="{_MUTED}">RLM run: {_e(run_totals(trace, time.time()))}</div>'
    tree = renderer.assemble(renderer.details(trace.root))
    # The timeline below the tree, folded: it adds one line, and the tree stays the first thing a reader opens.
    return f'<div style="{_PAGE}">{header}{_failed_nodes(trace)}{tree}{_timeline(trace, renderer.usage)}</div>'


def render_node_html(trace: Trace, node_id: str, links: CellLinks | None = None) -> str:
    """One node's details without its summary; child RLMs appear as pointers to their own section."""
    renderer = _Renderer(trace, links or CellLinks.from_events(trace.events), nested=False, usage={})
    return f'<div style="{_PAGE}">{renderer.assemble(renderer.body(trace.nodes[node_id]))}</div>'


def node_summary(trace: Trace, node: CallNode, usage: Usage | None = None) -> str:
    """One plain-text line: status, id, depth, model, question, iterations, the node's own and its subtree's
    model calls, tokens and cost (labelled), seconds."""
    return " · ".join([node.status, *_summary_parts(node, usage or trace.subtree_usage(node.id))])


@functools.lru_cache(maxsize=4096)  # the live view redraws a node's cells on every flush
def highlight_code(code: str) -> str:
    """Python code as a <pre> with inline colours (no stylesheet needed)."""
    return f'<pre style="{_CODE_PRE}">{highlight(code, _LEXER, _FORMATTER).rstrip()}</pre>'


def _summary_parts(node: CallNode, usage: Usage) -> list[str]:
    """`usage`: the node's subtree's; a node with children gets its own and its subtree's, each labelled."""
    question = _shorten(" ".join(node.query.split()), QUESTION_CHARS)
    parts = [node.id, f"d{node.depth}", node.model, question, f"{len(node.iterations)} it"]
    if node.children:
        parts += [f"this node: {', '.join(usage_parts(node.usage))}", f"with children: {', '.join(usage_parts(usage))}"]
    else:
        parts += usage_parts(usage)
    if node.status != "running":
        parts.append(_seconds(node.seconds))
    return parts


def _subtree_usages(trace: Trace) -> dict[str, Usage]:
    """Every node's subtree usage in one pass (children before their parents)."""
    totals: dict[str, Usage] = {}
    for node in reversed(list(trace.walk())):
        total = Usage()
        total.add(node.usage)
        for child in node.children:
            total.add(totals[child])
        totals[node.id] = total
    return totals


FAILED_STATUSES = ("error", "budget", "interrupted", "cancelled")


def _timeline(trace: Trace, usage: dict[str, Usage]) -> str:
    """The run as a picture (formats/timeline.py), folded: when each node waited for its model and ran code."""
    picture = render_timeline(trace, usage or None)
    summary = (
        f'<summary style="cursor:pointer;{_MUTED}">timeline: when each node waited for its model and ran code</summary>'
    )
    return f"<details>{summary}{picture}</details>" if picture else ""


def _failed_nodes(trace: Trace) -> str:
    """A folded list of the nodes that failed, one line each: the tree filtered to failures, with no script."""
    nodes = list(trace.walk())
    failed = [n for n in nodes if n.status in FAILED_STATUSES]
    if not failed or len(nodes) == 1:  # a one-node tree is its own list
        return ""
    lines = "".join(
        f'<div style="{_SUB}">{badge(n.status)} <b>{_e(n.id)}</b> d{n.depth} · '
        f"{_e(_shorten(' '.join(n.query.split()), QUESTION_CHARS))} · {_e(_shorten(n.error or '', 200))}</div>"
        for n in failed
    )
    summary = f'<summary style="cursor:pointer;{_MUTED}">failed only: {_e(plural(len(failed), "node"))}</summary>'
    return f"<details>{summary}{lines}</details>"


def _e(text: object) -> str:
    return html.escape(str(text))


def _pre(text: str, style: str = _OUT_PRE) -> str:
    return f'<pre style="{style}">{_e(text)}</pre>'


def badge(status: str, text: str | None = None) -> str:
    """A status as a coloured badge (its own words, or `text`)."""
    colour = theme.STATUS_COLOURS.get(status, theme.OTHER_STATUS)
    return (
        f'<span style="background:{colour};color:#fff;border-radius:3px;padding:0 5px;'
        f'font-size:11px;font-weight:600">{_e(text or status)}</span>'
    )


def _seconds(seconds: float) -> str:
    return f"{seconds:.2f}s"


def _shorten(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


class _Renderer:
    """Renders nodes as a stream of HTML strings, yielding a child CallNode where its <details> goes."""

    def __init__(self, trace: Trace, links: CellLinks, *, nested: bool, usage: dict[str, Usage]) -> None:
        self.trace, self.links, self.nested, self.usage = trace, links, nested, usage
        self.opened: set[str] = set()
        self.error_below = False

    def assemble(self, first: Iterator[str | CallNode]) -> str:
        # An explicit stack, not recursion: a deep tree must not hit the recursion limit.
        out: list[str] = []
        stack = [first]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
            elif isinstance(item, str):
                out.append(item)
            else:
                stack.append(self.details(item))
        return "".join(out)

    def details(self, node: CallNode) -> Iterator[str | CallNode]:
        usage = self.usage.get(node.id) or self.trace.subtree_usage(node.id)
        colour = theme.STATUS_COLOURS.get(node.status, theme.OTHER_STATUS)
        parts = " · ".join(_e(p) for p in _summary_parts(node, usage))
        opened = " open" if node.id in self.opened else ""
        yield (
            f'<details{opened} style="margin:3px 0;padding-left:8px;border-left:3px solid {colour}">'
            f'<summary style="cursor:pointer">{badge(node.status)} {parts}</summary>'
        )
        yield from self.body(node)
        yield "</details>"

    def body(self, node: CallNode) -> Iterator[str | CallNode]:
        yield f'<div style="{_MUTED}">question:</div><div style="{_PROSE}">{_e(node.query)}</div>'
        if node.context.get("summary"):
            yield f'<div style="{_MUTED}">context: {_e(context_summary(node.context))}</div>'
        subcalls = {s.id: s for s in node.subcalls}
        for iteration in node.iterations:
            yield from self.iteration(node, iteration, subcalls)
        unfinished = self.links.running(node.id)
        last = node.iterations[-1] if node.iterations else None
        if last is not None and len(last.cells) < last.blocks:
            yield from self.pending_block(node, last)
        if unfinished:
            yield from self.started(node, [subcalls[s] for s in unfinished])
        if node.status == "running" and node.waiting is not None:
            yield f'<div style="margin-top:8px;{_MUTED}">{_e(node_activity(node, time.time()))}</div>'
            if node.streaming:
                yield _pre(node.streaming)
        if node.answer is not None:
            yield f'<div style="{_MUTED}">answer:</div>{_pre(node.answer)}'
        if node.error and node.depth == 0 and self.error_below:
            yield f'<div style="{_MUTED}">error: {_e(node.status)}, as the cell\'s error below says</div>'
        elif node.error:
            yield f'<div style="{_MUTED}">error:</div>{_pre(node.error, _ERR_PRE)}'
        if node.depth == 0:
            yield self.variables(node)

    def iteration(self, node: CallNode, iteration: Iteration, subcalls: dict[str, SubCall]) -> Iterator[str | CallNode]:
        u = iteration.usage
        # As the rlms viewer marks them: FINAL, the iteration submitted the answer; ERR, one of its blocks raised.
        submitted, raised = any(c.submitted for c in iteration.cells), any(c.error for c in iteration.cells)
        marks = (" " + badge("done", "FINAL") if submitted else "") + (" " + badge("error", "ERR") if raised else "")
        yield (
            f'<div style="margin-top:8px;{_MUTED}">iteration {iteration.index + 1}{marks} · '
            f"{u.input_tokens:,}+{u.output_tokens:,} tok · {_seconds(iteration.seconds)}</div>"
        )
        prose = parse_reply(iteration.reply).prose.strip()
        if prose:
            yield f'<div style="{_PROSE}">{_e(prose)}</div>'
        for cell in iteration.cells:
            yield highlight_code(cell.code)
            yield from self.started(node, [subcalls[s] for s in self.links.of_cell(node.id, cell)])
            if cell.output or not cell.submitted:
                yield _pre(cell.output or "(no output)", _ERR_PRE if cell.error else _OUT_PRE)
            if cell.submitted:
                yield f'<div style="{_MUTED}">submitted the answer</div>'

    def pending_block(self, node: CallNode, iteration: Iteration) -> Iterator[str]:
        """The code block that runs now (or never ended, in a stopped run), shown before its output exists."""
        index = len(iteration.cells)
        state = "running" if node.status == "running" else "did not finish"
        yield f'<div style="{_MUTED}">code block {index + 1} of {iteration.blocks} {state}:</div>'
        blocks = parse_reply(iteration.reply).blocks
        if index < len(blocks):
            yield highlight_code(blocks[index])

    def started(self, node: CallNode, subs: list[SubCall]) -> Iterator[str | CallNode]:
        """The sub-calls one block started: a batch gets one line of counts, and past SHOWN_SUBCALLS the rest fold."""
        children = [s for s in subs if s.kind == "rlm"]
        calls = [s for s in subs if s.kind == "llm"]
        grouped = len(children) > FAN_OUT_LISTED
        if grouped:
            where = "" if self.nested else " (each has its own section below)"
            yield f'<div style="{_SUB}">↳ {_e(child_counts(self.trace, node, children))}{_e(where)}</div>'
        if len(calls) > FAN_OUT_LISTED:
            yield f'<div style="{_SUB}">↳ {_e(call_counts(calls))}</div>'
        listed = [s for s in subs if s.kind == "llm" or self.nested or not grouped]
        for shown, sub in enumerate(listed):
            if shown == SHOWN_SUBCALLS:
                more = len(listed) - shown
                yield f'<details style="{_SUB}"><summary style="cursor:pointer;{_MUTED}">show {more:,} more</summary>'
            yield from self.subcall(sub) if sub.kind == "llm" else self.child(node, sub)
        if len(listed) > SHOWN_SUBCALLS:
            yield "</details>"

    def subcall(self, sub: SubCall) -> Iterator[str | CallNode]:
        if not sub.done:
            state = " · " + badge("running")
        else:
            state = f" · {sub.usage.input_tokens:,}+{sub.usage.output_tokens:,} tok · {_seconds(sub.seconds)}"
            if sub.error:
                state += " · " + badge("cancelled" if sub.error == "cancelled" else "error")
        shown = len(sub.prompt_preview)
        length = plural(sub.prompt_chars, "char") + (f", first {shown:,} shown" if shown < sub.prompt_chars else "")
        yield (
            f'<details style="{_SUB}"><summary style="cursor:pointer;{_MUTED}">llm_query · {_e(sub.model)} · '
            f"{length}{state}</summary>"
            f'<div style="{_MUTED}">prompt:</div>{_pre(sub.prompt_preview)}'
        )
        if sub.done:
            yield f'<div style="{_MUTED}">reply:</div>{_pre(sub.reply or "", _ERR_PRE if sub.error else _OUT_PRE)}'
        yield "</details>"

    def child(self, parent: CallNode, sub: SubCall) -> Iterator[str | CallNode]:
        node = self.trace.nodes.get(sub.child_id or "")
        if node is None:  # announced, not started: queued behind the concurrency limit, or cancelled
            state = child_state(self.trace, parent, sub)
            yield f'<div style="{_SUB};{_MUTED}">{badge(state)} child RLM {_e(sub.child_id)}: {_e(sub.prompt_preview)}</div>'
        elif self.nested:
            yield '<div style="margin-left:12px">'
            yield node
            yield "</div>"
        else:
            reply = f" → {_e(_shorten(sub.reply, POINTER_REPLY_CHARS))}" if sub.done and sub.reply is not None else ""
            yield (
                f'<div style="{_SUB}">↳ child RLM <b>{_e(node.id)}</b> (its own section below): '
                f"{_e(sub.prompt_preview)}{reply}</div>"
            )

    def variables(self, node: CallNode) -> str:
        created: dict[str, None] = {}
        for iteration in node.iterations:
            for cell in iteration.cells:
                created.update(dict.fromkeys(cell.created))
        found = replaced_names(node)
        if not created and not found:
            return ""
        line = "variables made by the model: " + (", ".join(created) or "none")
        if found:
            line += f" (rebound: {', '.join(found)})"
        return f'<div style="margin-top:6px;{_MUTED}">{_e(line)}</div>'
