"""A run as a notebook (nbformat v4) that reads as a report and re-runs offline.

The notebook, in order: `%load_ext rlm_kernel`; a Markdown header (question, models, status, usage, cost,
context); a hidden setup cell (tagged `rlm-replay`), one short line that names the replay data by its content id;
the run's timeline (formats/timeline.py, an SVG attachment); one section per call node, depth first, whose heading
shows its depth and question: each iteration's prose as Markdown, each code block that ran as a code cell tagged
`rlm-generated` with its recorded outputs and `metadata["rlm"]` (node, parent, depth, iteration, block, model,
usage), the sub-model calls it made in collapsed `<details>`; the final answer last, and a cell that checks the
replayed answer against it.

The replay data (the recorded events and, when it fits, the context, as compressed JSONL) lives in
the notebook's own metadata (`metadata.rlm_kernel.replay`, under its content id), which JupyterLab,
nbconvert's HTML and GitHub never show, so no reader meets encoded data. The setup cell finds the
notebook file that holds its id when it runs (jupyter/replay.py). Exports written before (the data in
the setup cell's source, `%%rlm_replay`) still read and replay.

Executing the notebook replays the run (see jupyter/replay.py): the setup cell starts it again on the `replay`
model backend, with no network; each depth-0 code cell runs its block in the notebook's namespace when it runs,
and a child's code cell shows what its block printed when the parent's call ran it. Everything written comes from
the trace's events, which the engine has already redacted; the context is checked before it is embedded.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm_kernel.core.context import is_recorded_context
from rlm_kernel.core.errors import ExportError
from rlm_kernel.core.parsing import parse_reply
from rlm_kernel.core.result import EarlierTurn
from rlm_kernel.core.trace import CONTEXT_RECORD, CallNode, Event, SubCall, Trace, context_record
from rlm_kernel.formats.links import CellLinks
from rlm_kernel.formats.progress import context_summary, plural
from rlm_kernel.formats.steps import step_line
from rlm_kernel.formats.timeline import timeline_markdown

# The kernelspec an exported notebook names, and `rlm install` installs (here: formats/ stays Jupyter-free).
KERNEL_NAME = "rlm"
DISPLAY_NAME = "Python 3 (RLM)"
GENERATED_TAG = "rlm-generated"
REPLAY_TAG = "rlm-replay"
SETUP_MAGIC = "%rlm_replay"  # the setup cell: `%rlm_replay ID`
WHOLE_FLAG = "--whole"  # `%rlm_replay ID --whole`: a session's earlier question, replayed whole in one cell
LEGACY_SETUP_MAGIC = "%%rlm_replay"  # older exports: the replay data in the setup cell's body
METADATA_KEY = "rlm_kernel"  # notebook metadata: {"replay": {ID: {"encoding": ..., "data": ...}}}
PAYLOAD_ENCODING = "zlib+base64 jsonl"
PAYLOAD_ID_CHARS = 16
MIN_PAYLOAD_CAP = 64 * 1024 * 1024  # bytes any payload may decompress to
MAX_PAYLOAD_RATIO = 64  # and a larger one, times its compressed size: JSONL events compress 5 to 20 times
CHECK_MAGIC = "%rlm_replay_check"
MAX_EMBEDDED_CONTEXT_CHARS = 20_000_000  # larger contexts are embedded only when asked
HEADING_CHARS = 100


@dataclass(frozen=True)
class Exported:
    path: Path
    cells: int
    context: str  # "embedded", or why the context was left out (the notebook then cannot re-run as it is)

    @property
    def rerunnable(self) -> bool:
        return self.context == "embedded"


def write_notebook(
    trace: Trace,
    path: str | Path,
    *,
    context: object = None,
    with_context: bool | None = None,
    earlier: Sequence[EarlierTurn] = (),
) -> Exported:
    """Write `trace` as a notebook at `path`.

    `context`: the run's context, embedded so that the notebook re-runs (checked against the
    recorded sha256); without it, a context recorded in the trace is used. `with_context`:
    None embeds contexts up to MAX_EMBEDDED_CONTEXT_CHARS, True any size, False none. `earlier`:
    the session's questions before this one, replayed whole first (hidden cells) when the notebook runs.
    """
    notebook, note = build_notebook(trace, context=context, with_context=with_context, earlier=earlier)
    path = Path(path)
    # json, not nbformat.write: nbformat validates and copies the whole notebook, several times slower on a large tree.
    with open(path, "w", encoding="utf-8") as f:
        json.dump(notebook, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return Exported(path, len(notebook["cells"]), note)


def build_notebook(
    trace: Trace, *, context: object = None, with_context: bool | None = None, earlier: Sequence[EarlierTurn] = ()
) -> tuple[dict[str, Any], str]:
    """The notebook as an nbformat v4 dict, and the context note (see `Exported.context`)."""
    root = trace.root
    if root is None:
        raise ExportError("the trace has no root call: nothing to export")
    record, note = _context_to_embed(trace, root, context, with_context)
    payloads: dict[str, dict[str, str]] = {}
    earlier_cells = _Cells()
    for number, turn in enumerate(earlier, 1):
        turn_note = _earlier_turn(earlier_cells, payloads, number, turn, with_context)
        if turn_note != "embedded" and note == "embedded":
            note = f"embedded, but question {number}'s is {turn_note}"
    cells = _Cells()
    cells.code("%load_ext rlm_kernel")
    cells.markdown(_header(trace, root, note))
    _tools(cells, [*(turn.trace for turn in earlier), trace])
    if earlier:
        cells.markdown(
            f"## Earlier in this session\n\nThis question followed {_earlier_questions(len(earlier))} in the same "
            "session. Each has a hidden cell below that replays it whole, first, so that the variables it made are "
            "there when this run's code uses them."
        )
        cells.extend(earlier_cells)
    payload_id = _add_payload(payloads, trace, record)
    cells.code(f"{SETUP_MAGIC} {payload_id}", tags=[REPLAY_TAG], jupyter={"source_hidden": True})
    if timeline := timeline_markdown(trace):  # an image attachment: a Markdown cell's inline styles would be stripped
        cells.markdown(*timeline)
    links = CellLinks.from_events(trace.events)
    results = {
        (e.node_id, e.data["iteration"], e.data["index"]): e.data for e in trace.events if e.kind == "code_result"
    }
    for node in trace.walk():
        _section(cells, trace, node, links, results)
    answer = as_written(root.answer) if root.answer is not None else f"*No answer* (status {root.status}: {root.error})"
    cells.markdown(f"## Final answer\n\n{answer}")
    cells.code(CHECK_MAGIC, tags=[REPLAY_TAG])
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": KERNEL_NAME, "display_name": DISPLAY_NAME, "language": "python"},
            "language_info": {"name": "python"},
            "rlm": {"root": root.id, "query": root.query, "status": root.status, "context": note},
            METADATA_KEY: {"replay": payloads},
        },
        "cells": cells.cells,
    }
    return notebook, note


def _add_payload(payloads: dict[str, dict[str, str]], trace: Trace, record: Event | None) -> str:
    """Store a run's replay data (its context too, when `record` holds it) under its content id."""
    # Streamed deltas are left out: each iteration event carries its whole reply.
    events = [e for e in trace.events if e.kind not in (CONTEXT_RECORD, "model_text")] + ([record] if record else [])
    payload_id, payload = encode_payload(events)
    payloads[payload_id] = {"encoding": PAYLOAD_ENCODING, "data": payload}
    return payload_id


def _earlier_questions(count: int) -> str:
    return "one earlier question" if count == 1 else f"{count} earlier questions"


def _earlier_turn(
    cells: _Cells, payloads: dict[str, dict[str, str]], number: int, turn: EarlierTurn, with_context: bool | None
) -> str:
    """A session's earlier question: a line that says what it asked and got, and its hidden whole replay."""
    root = turn.trace.root
    if root is None:
        raise ExportError(f"question {number} of the session has no root call: nothing to replay")
    record, note = _context_to_embed(turn.trace, root, turn.context, with_context)
    answer = _one_line(root.answer or "") or f"(no answer: {root.error})"
    asked = as_written(f"{_one_line(root.query)}\n→ {answer}")
    cells.markdown(f"**Question {number}** (`{root.status}`)\n\n{asked}")
    payload_id = _add_payload(payloads, turn.trace, record)
    cells.code(f"{SETUP_MAGIC} {payload_id} {WHOLE_FLAG}", tags=[REPLAY_TAG], jupyter={"source_hidden": True})
    return note


def _context_to_embed(
    trace: Trace, root: CallNode, context: object, with_context: bool | None
) -> tuple[Event | None, str]:
    sha256, chars = root.context["sha256"], root.context["length"]
    if with_context is False:
        return None, "left out, as asked"
    if context is None:
        recorded = trace.contexts.get(root.id, {})
        if "value" not in recorded:
            return None, f"not available ({recorded.get('omitted') or 'the trace does not hold it'})"
        context = recorded["value"]
    elif not is_recorded_context(context, sha256):
        return None, "left out: the context given is not the one this run used (its sha256 differs)"
    if with_context is None and chars > MAX_EMBEDDED_CONTEXT_CHARS:
        return (
            None,
            f"left out: {chars:,} characters is over the {MAX_EMBEDDED_CONTEXT_CHARS:,} embedded unless asked (--with-context)",
        )
    record = context_record(root.id, sha256, context)
    if "omitted" in record.data:
        return None, f"left out: {record.data['omitted']}"
    return record, "embedded"


# -- the replay payload: the trace's events (and the context) as compressed JSONL ----------------


def encode_payload(events: list[Event]) -> tuple[str, str]:
    """The events as (content id, compressed JSONL in base64); the id is the compressed data's sha256, shortened."""
    data = zlib.compress("\n".join(e.to_json() for e in events).encode("utf-8"))
    return _content_id(data), base64.b64encode(data).decode("ascii")


def decode_payload(text: str, payload_id: str | None = None) -> Trace:
    """The trace in a payload (whitespace ignored, as older exports wrapped it); checked against its id when given."""
    try:
        data = base64.b64decode("".join(text.split()))
        if payload_id is not None and _content_id(data) != payload_id:
            raise ValueError(f"its content does not match its id {payload_id}")
        decompressor, cap = zlib.decompressobj(), max(MIN_PAYLOAD_CAP, MAX_PAYLOAD_RATIO * len(data))
        data = decompressor.decompress(data, cap)  # capped: a few KB of zlib can hold GBs, and the file is not trusted
        if decompressor.unconsumed_tail or not decompressor.eof:
            raise ValueError(f"it is cut short, or it decompresses to more than {cap:,} bytes")
    except (ValueError, zlib.error) as exc:
        raise ExportError(f"the replay data is damaged: {exc}") from None
    return Trace.from_lines(data.decode("utf-8").split("\n"))


def _content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:PAYLOAD_ID_CHARS]


def setup_payload_id(source: str) -> str | None:
    """The id the run's setup cell (`%rlm_replay ID ...`) names; None for any other cell (an earlier question's)."""
    words = source.split("\n", 1)[0].split()
    return words[1] if len(words) > 1 and words[0] == SETUP_MAGIC and WHOLE_FLAG not in words else None


def notebook_payload(notebook: dict[str, Any], payload_id: str) -> Trace | None:
    """The trace a notebook (as JSON) holds under `payload_id` in its metadata; None if it holds no such id."""
    entry: Any = notebook
    for key in ("metadata", METADATA_KEY, "replay", payload_id):
        entry = entry.get(key) if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("data"), str):
        return None
    if entry.get("encoding") != PAYLOAD_ENCODING:
        raise ExportError(f"the replay data under id {payload_id} has an unknown encoding {entry.get('encoding')!r}")
    return decode_payload(entry["data"], payload_id)


def read_export(path: str | Path) -> Trace:
    """The recorded trace carried by an exported notebook: in its metadata, or (older exports) its setup cell."""
    with open(path, encoding="utf-8") as f:
        notebook = json.load(f)
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = source if isinstance(source, str) else "".join(source)
        if source.startswith(LEGACY_SETUP_MAGIC):
            return decode_payload(source.partition("\n")[2])
        payload_id = setup_payload_id(source)
        if payload_id is not None:
            trace = notebook_payload(notebook, payload_id)
            if trace is None:
                raise ExportError(f"{path} has lost its replay data: its metadata holds no id {payload_id}")
            return trace
    raise ExportError(f"{path} is not an rlm_kernel export: it has no {SETUP_MAGIC} cell")


# -- outputs -----------------------------------------------------------------------------------


def cell_outputs(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A code_result's outputs as notebook outputs: stdout, stderr, the trailing value, the error.

    The same function renders the recorded outputs into the export and the replayed ones
    when a cell re-runs, so a faithful replay gives equal outputs.
    """
    error = result.get("error")
    if "stdout" in result:  # the parts, when the engine recorded them separately
        outputs = [_stream("stdout", result["stdout"]), _stream("stderr", result["stderr"])]
        if result.get("value") is not None:
            outputs.append(
                {
                    "output_type": "execute_result",
                    "execution_count": None,
                    "data": {"text/plain": result["value"]},
                    "metadata": {},
                }
            )
    else:  # only the observation the model saw: stdout, stderr and value in one text, then the error
        text = result["output"]
        if error and text.endswith(error):
            text = text[: -len(error)].rstrip("\n")
        outputs = [_stream("stdout", text)]
    if error:
        outputs.append(error_output(error))
    return [o for o in outputs if o is not None]


def _stream(name: str, text: str) -> dict[str, Any] | None:
    return (
        {"output_type": "stream", "name": name, "text": text if text.endswith("\n") else text + "\n"} if text else None
    )


def error_output(traceback_text: str) -> dict[str, Any]:
    """An error output from a plain traceback: the exception's name and message from its last part."""
    lines = traceback_text.split("\n")
    # The exception line is the first one that is not a frame (indented) nor the "Traceback" banner.
    at = next(
        (i for i, line in enumerate(lines) if line and not line[0].isspace() and not line.startswith("Traceback ")),
        None,
    )
    ename, evalue = "Error", traceback_text
    if at is not None:
        match = re.match(r"([A-Za-z_][\w.]*)(?::\s?(.*))?$", lines[at])
        if match:
            ename, evalue = match.group(1), "\n".join([match.group(2) or "", *lines[at + 1 :]]).strip("\n")
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": lines}


# -- cells ---------------------------------------------------------------------------------------


def recorded_tools(trace: Trace) -> dict[str, str | None]:
    """The user's functions the recorded run gave its model, with their sources (None: not found)."""
    tools = trace.root_start().get("tools")
    return dict(tools) if isinstance(tools, dict) else {}


def _tools(cells: _Cells, traces: Sequence[Trace]) -> None:
    """The runs' tools, defined again, so that their code finds them when the notebook re-runs."""
    tools = {name: source for trace in traces for name, source in recorded_tools(trace).items()}
    if not tools:
        return
    names = ", ".join(f"`{name}`" for name in tools)
    lost = [f"`{name}`" for name, source in tools.items() if source is None]
    note = f" Define {', '.join(lost)} yourself before running: Python had no source for them." if lost else ""
    cells.markdown(f"The model could call your functions {names}; the cell below defines them as they were.{note}")
    sources = [source.rstrip() for source in tools.values() if source]
    if sources:
        cells.code("\n\n\n".join(sources))


class _Cells:
    def __init__(self) -> None:
        self.cells: list[dict[str, Any]] = []

    def _id(self) -> str:
        return f"rlm-{len(self.cells):05d}"

    def extend(self, more: _Cells) -> None:
        for cell in more.cells:
            self.cells.append({**cell, "id": self._id()})

    def markdown(self, source: str, attachments: dict[str, dict[str, str]] | None = None) -> None:
        extra = {"attachments": attachments} if attachments else {}
        self.cells.append({"cell_type": "markdown", "id": self._id(), "metadata": {}, "source": source, **extra})

    def code(
        self, source: str, outputs: list[dict[str, Any]] | None = None, tags: list[str] | None = None, **metadata: Any
    ) -> None:
        if tags:
            metadata["tags"] = tags
        self.cells.append(
            {
                "cell_type": "code",
                "id": self._id(),
                "metadata": metadata,
                "source": source,
                "outputs": outputs or [],
                "execution_count": None,
            }
        )


def _header(trace: Trace, root: CallNode, note: str) -> str:
    usage = trace.subtree_usage(root.id)
    nodes = list(trace.walk())
    others = sorted(({n.model for n in nodes} | {s.model for n in nodes for s in n.subcalls}) - {root.model})
    models = f"root `{root.model}`" + (
        f"; sub-calls and children {', '.join(f'`{m}`' for m in others)}" if others else ""
    )
    cost = f"${usage.cost_usd:.4f}" if usage.cost_known else f"${usage.cost_usd:.4f} + unknown (unpriced model)"
    status = root.status + (f": {root.error}" if root.error else "")
    rerun = (
        "Run all cells to replay the run offline: the hidden cell below serves the recorded model replies "
        "(the `replay` model backend, reading them from this notebook's metadata, so run the notebook from its "
        "folder), each model-written cell at depth 0 runs its code again in this notebook, and the last cell "
        "checks that the answer comes out the same."
        if note == "embedded"
        else f"The context is {note}, so this notebook cannot re-run as it is: load the context into a variable "
        f"and add `--context NAME` to the hidden setup cell (`{SETUP_MAGIC} ...`)."
    )
    rows = [
        ("status", status),
        ("models", models),
        (
            "usage",
            f"{usage.llm_calls:,} model calls, {usage.input_tokens:,} input + {usage.output_tokens:,} output tokens",
        ),
        ("cost", cost),
        ("time", f"{root.seconds:.2f} s"),
        ("call tree", f"{plural(len(nodes), 'call')}, depth up to {max(n.depth for n in nodes)}"),
        ("context", f"{context_summary(root.context)} (sha256 `{root.context['sha256'][:16]}…`); {note}"),
    ]
    table = "\n".join(f"| {name} | {_cell_text(value)} |" for name, value in rows)
    return f"# RLM run: {_one_line(root.query)}\n\n**Question**\n\n{_quote(root.query)}\n\n| | |\n|---|---|\n{table}\n\n{rerun}"


def _section(
    cells: _Cells, trace: Trace, node: CallNode, links: CellLinks, results: dict[tuple[str, int, int], dict[str, Any]]
) -> None:
    usage = trace.subtree_usage(node.id)
    lines = [
        f"{'#' * min(2 + node.depth, 6)} Depth {node.depth} · {node.id}: {_one_line(node.query)}",
        "",
        f"`{node.status}` · `{node.model}` · {plural(len(node.iterations), 'iteration')} · "
        f"{usage.input_tokens:,}+{usage.output_tokens:,} tokens · {node.seconds:.2f} s"
        + (f" · child of {node.parent_id}" if node.parent_id else ""),
    ]
    if _one_line(node.query) != node.query:
        lines += ["", _quote(node.query)]
    cells.markdown("\n".join(lines))
    subcalls = {s.id: s for s in node.subcalls}
    for iteration in node.iterations:
        u = iteration.usage
        prose = parse_reply(iteration.reply).prose.strip()
        head = f"**Iteration {iteration.index + 1}** · {u.input_tokens:,}+{u.output_tokens:,} tokens · {iteration.seconds:.2f} s"
        cells.markdown(f"{head}\n\n{prose}" if prose else head)
        for cell in iteration.cells:
            rlm = {
                "node": node.id,
                "parent": node.parent_id,
                "depth": node.depth,
                "iteration": iteration.index,
                "block": cell.index,
                "model": node.model,
                "usage": u.to_dict(),
            }
            tags = [GENERATED_TAG] + (["raises-exception"] if cell.error else [])
            source = f"{step_line(node.id, iteration.index, cell.index)}\n{cell.code.rstrip()}"
            cells.code(source, cell_outputs(results[(node.id, cell.iteration, cell.index)]), tags=tags, rlm=rlm)
            started = [subcalls[s] for s in links.of_cell(node.id, cell)]
            if started:
                cells.markdown(_subcalls(started))
    if node.error:
        cells.markdown(f"**{node.id} stopped** ({node.status}): {node.error}")
    elif node.depth and node.answer is not None:
        cells.markdown(f"**Answer of {node.id}:**\n\n{as_written(node.answer)}")


def _subcalls(subcalls: list[SubCall]) -> str:
    parts = []
    llm = [s for s in subcalls if s.kind == "llm"]
    if llm:
        inner = "".join(_llm_details(s) for s in llm)
        parts.append(
            f"<details><summary>{len(llm)} sub-model call{'s' if len(llm) > 1 else ''} (llm_query)</summary>\n{inner}</details>"
        )
    for sub in subcalls:
        if sub.kind == "rlm":
            reply = f" → {html.escape(_one_line(sub.reply))}" if sub.reply is not None else ""
            parts.append(
                f"↳ child RLM **{sub.child_id}** (its section is below): {html.escape(_one_line(sub.prompt_preview))}{reply}"
            )
    return "\n\n".join(parts)


def _llm_details(sub: SubCall) -> str:
    shown = len(sub.prompt_preview)
    length = plural(sub.prompt_chars, "char") + (f", first {shown:,} recorded" if shown < sub.prompt_chars else "")
    state = f"{sub.usage.input_tokens:,}+{sub.usage.output_tokens:,} tokens · {sub.seconds:.2f} s" + (
        " · error" if sub.error else ""
    )
    return (
        f"<details><summary>llm_query · {html.escape(sub.model)} · {length} · {state}</summary>"
        f"<b>prompt</b><pre>{html.escape(sub.prompt_preview)}</pre><b>reply</b><pre>{html.escape(sub.reply or '')}</pre></details>\n"
    )


def as_written(text: str) -> str:
    """Text in a Markdown cell exactly as written: a fenced block, which neither Markdown nor LaTeX touches."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _one_line(text: str, chars: int = HEADING_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.split("\n"))


def _cell_text(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
