"""A run as a picture: one bar a node from its start to its end, marked where it waited for its model and where
its code ran, with its tokens and cost, above a strip of how many model calls were in flight over time.

Read from the events' times and fields alone (an iteration's and a block's `seconds` end at their event; a plain
sub-call runs from its `subcall_start` to its `subcall_end`), so the live run, `%rlm show`, nbconvert's HTML and a
trace read back all draw the same picture. Plain HTML with inline styles and percentages: no script, no SVG.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from dataclasses import dataclass, field

from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.trace import Trace
from rlm_kernel.formats import theme
from rlm_kernel.formats.progress import plural

TIMELINE_ROWS = 40  # nodes drawn; the rest are counted under the picture
STRIP_BINS = 60  # columns of the calls-in-flight strip
STRIP_PX = 24
MODEL_COLOUR = "#0969da"  # waiting for a model (4.5:1 or more against white, and seen on a dark page)
CODE_COLOUR = "#1a7f37"  # running the node's code
SUBCALL_COLOUR = "#bc4c00"  # a plain sub-model call the code made
_MUTED = f"color:{theme.MUTED};font-size:12px"


@dataclass
class _Row:
    node_id: str
    depth: int
    start: float
    end: float
    model: list[tuple[float, float]] = field(default_factory=list)
    code: list[tuple[float, float]] = field(default_factory=list)
    subcalls: list[tuple[float, float]] = field(default_factory=list)


def _rows(trace: Trace) -> list[_Row]:
    rows: dict[str, _Row] = {}
    subcall_starts: dict[str, float] = {}
    last = max((e.time for e in trace.events), default=0.0)
    for event in trace.events:
        d = event.data
        if event.kind == "call_start":
            rows[event.node_id] = _Row(event.node_id, d["depth"], event.time, last)
        elif event.node_id not in rows:
            continue
        elif event.kind == "call_end":
            rows[event.node_id].end = event.time
        elif event.kind == "iteration":
            rows[event.node_id].model.append((event.time - float(d.get("seconds") or 0.0), event.time))
        elif event.kind == "code_result":
            rows[event.node_id].code.append((event.time - float(d.get("seconds") or 0.0), event.time))
        elif event.kind == "subcall_start" and d["kind"] == "llm":
            subcall_starts[d["subcall_id"]] = event.time
        elif event.kind == "subcall_end" and d["subcall_id"] in subcall_starts:
            rows[event.node_id].subcalls.append((subcall_starts.pop(d["subcall_id"]), event.time))
    return [rows[node.id] for node in trace.walk() if node.id in rows]


def render_timeline(trace: Trace, usage: Mapping[str, Usage] | None = None) -> str:
    """The picture as HTML ("" for a run with no node yet); `usage`: each node's subtree usage, when known."""
    rows = _rows(trace)
    if not rows:
        return ""
    begin = min(row.start for row in rows)
    span = max(max(row.end for row in rows) - begin, 1e-6)

    def bar(start: float, end: float, colour: str, top: int, height: int) -> str:
        left = 100 * (start - begin) / span
        width = max(100 * (end - start) / span, 0.4)  # a call of a few milliseconds stays visible
        return (
            f'<span style="position:absolute;left:{left:.2f}%;width:{width:.2f}%;top:{top}px;height:{height}px;'
            f'background:{colour}"></span>'
        )

    usage = usage or {node.id: trace.subtree_usage(node.id) for node in trace.walk()}
    lines = []
    for row in rows[:TIMELINE_ROWS]:
        u = usage[row.node_id]
        cost = u.cost_text()
        label = f"{'· ' * row.depth}{row.node_id} · {u.input_tokens + u.output_tokens:,} tok" + (
            f" · {cost}" if cost else ""
        )
        marks = [bar(row.start, row.end, theme.BORDER, 5, 4)]
        marks += [bar(s, e, MODEL_COLOUR, 1, 12) for s, e in row.model]
        marks += [bar(s, e, CODE_COLOUR, 1, 12) for s, e in row.code]
        marks += [bar(s, e, SUBCALL_COLOUR, 9, 4) for s, e in row.subcalls]
        lines.append(
            f'<div style="display:flex;align-items:center;gap:6px;height:16px">'
            f'<span style="flex:0 0 16em;{_MUTED};white-space:nowrap;overflow:hidden;text-overflow:ellipsis" '
            f'title="{html.escape(label)}">{html.escape(label)}</span>'
            f'<span style="position:relative;flex:1;height:14px;overflow:hidden">{"".join(marks)}</span></div>'
        )
    more = len(rows) - TIMELINE_ROWS
    if more > 0:
        lines.append(f'<div style="{_MUTED}">… {plural(more, "more node")} (subtree usage is in the tree below)</div>')
    in_flight = _in_flight(rows, begin, span)
    peak = max(in_flight)
    strip = "".join(
        f'<span style="flex:1;align-self:flex-end;height:{round(STRIP_PX * n / peak) if peak else 0}px;'
        f'background:{MODEL_COLOUR};opacity:0.6" title="{n} in flight"></span>'
        for n in in_flight
    )
    key = (
        f"{_swatch(MODEL_COLOUR, 10)} waiting for the model · {_swatch(CODE_COLOUR, 10)} running code · "
        f"{_swatch(SUBCALL_COLOUR, 4)} a plain sub-model call"
    )
    return (
        f'<div style="{_MUTED}">{key} · {span:.2f} s across</div>{"".join(lines)}'
        f'<div style="display:flex;align-items:center;gap:6px;margin-top:4px">'
        f'<span style="flex:0 0 16em;{_MUTED}">model calls in flight (up to {peak:,})</span>'
        f'<span style="display:flex;flex:1;height:{STRIP_PX}px;gap:1px">{strip}</span></div>'
    )


def _swatch(colour: str, height: int) -> str:
    """A key's sample of a mark: a box of colour, not a coloured character (text in these colours is too faint on a
    dark page)."""
    return f'<span style="display:inline-block;width:10px;height:{height}px;background:{colour}"></span>'


def _in_flight(rows: list[_Row], begin: float, span: float) -> list[int]:
    """The most model calls (nodes' own and plain sub-calls) in flight at once within each column of the strip."""
    changes = sorted(  # at one instant an end comes before a start (-1 sorts first): back-to-back calls are not two
        (time, step)
        for row in rows
        for start, end in row.model + row.subcalls
        for time, step in ((start, 1), (end, -1))
    )
    columns, running, at = [], 0, 0
    for column in range(STRIP_BINS):
        edge = begin + span * (column + 1) / STRIP_BINS
        most = running  # the calls still in flight from the column before
        while at < len(changes) and (changes[at][0] < edge or column == STRIP_BINS - 1):
            running += changes[at][1]
            most = max(most, running)
            at += 1
        columns.append(most)
    return columns


# -- the same picture as an SVG image, for the export (a Markdown cell's attachment: an <img>, which JupyterLab,
# nbconvert and GitHub all show, where a Markdown cell's inline styles are stripped) -------------------------------

SVG_WIDTH, SVG_LABEL, SVG_ROW = 720, 200, 16
SVG_TEXT = "#6e7781"  # an image cannot read the page's theme: a grey that reads on a light and a dark page


def timeline_svg(trace: Trace) -> str:
    """The picture as a standalone SVG document ("" for a run with no node yet)."""
    rows = _rows(trace)
    if not rows:
        return ""
    begin = min(row.start for row in rows)
    span = max(max(row.end for row in rows) - begin, 1e-6)
    plot = SVG_WIDTH - SVG_LABEL

    def bar(start: float, end: float, colour: str, y: float, height: float) -> str:
        x = SVG_LABEL + plot * (start - begin) / span
        width = max(plot * (end - start) / span, 2.0)
        return f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height}" fill="{colour}"/>'

    parts = []
    drawn = rows[:TIMELINE_ROWS]
    for number, row in enumerate(drawn):
        top = number * SVG_ROW
        u = trace.subtree_usage(row.node_id)
        cost = u.cost_text()
        label = f"{'· ' * row.depth}{row.node_id} · {u.input_tokens + u.output_tokens:,} tok" + (
            f" · {cost}" if cost else ""
        )
        parts.append(f'<text x="0" y="{top + 12}" fill="{SVG_TEXT}">{html.escape(label)}</text>')
        parts.append(bar(row.start, row.end, "#afb8c1", top + 6, 3))
        parts += [bar(s, e, MODEL_COLOUR, top + 2, 11) for s, e in row.model]
        parts += [bar(s, e, CODE_COLOUR, top + 2, 11) for s, e in row.code]
        parts += [bar(s, e, SUBCALL_COLOUR, top + 10, 3) for s, e in row.subcalls]
    strip_top = len(drawn) * SVG_ROW + 6
    in_flight = _in_flight(rows, begin, span)
    peak = max(in_flight) or 1
    column = plot / STRIP_BINS
    for index, count in enumerate(in_flight):
        height = STRIP_PX * count / peak
        x = SVG_LABEL + index * column
        parts.append(
            f'<rect x="{x:.1f}" y="{strip_top + STRIP_PX - height:.1f}" width="{max(column - 1, 1):.1f}" '
            f'height="{height:.1f}" fill="{MODEL_COLOUR}" opacity="0.6"/>'
        )
    more = f"; {len(rows) - len(drawn):,} more nodes not drawn" if len(rows) > len(drawn) else ""
    parts.append(
        f'<text x="0" y="{strip_top + 16}" fill="{SVG_TEXT}">calls in flight (up to {max(in_flight):,})</text>'
        f'<text x="0" y="{strip_top + STRIP_PX + 18}" fill="{SVG_TEXT}">blue: waiting for the model · green: running '
        f"code · orange: a plain sub-model call · {span:.2f} s across{more}</text>"
    )
    height = strip_top + STRIP_PX + 26
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{height}" '
        f'viewBox="0 0 {SVG_WIDTH} {height}" font-family="system-ui,sans-serif" font-size="11">{"".join(parts)}</svg>'
    )


def timeline_markdown(trace: Trace) -> tuple[str, dict[str, dict[str, str]]] | None:
    """An export's timeline cell: its Markdown source and the SVG it shows as an attachment (None: nothing to draw)."""
    picture = timeline_svg(trace)
    if not picture:
        return None
    source = "**Timeline**: when each node waited for its model and ran code\n\n![the run's timeline](attachment:timeline.svg)"
    # Base64, as nbconvert and JupyterLab put an attachment into a data: URL whatever its type.
    return source, {"timeline.svg": {"image/svg+xml": base64.b64encode(picture.encode()).decode("ascii")}}
