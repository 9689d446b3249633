"""A run while it is under way, in words: what each running node does, a fan-out's counts, the run's totals.

Read from the trace alone (the `model_wait`, `model_text` and schema-2 sub-call events), so the
live widget, the static HTML and `rlm run`'s status line say the same thing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.trace import CallNode, SubCall, Trace

# The order statuses are counted in: what is still going on first.
CHILD_STATES = ("queued", "running", "done", "max_iterations", "budget", "error", "interrupted", "cancelled")


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 call`, `2 calls`: counts read as English."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


# The units of core's context summaries (core/context.py), which the model reads as they are: "1 lines" there stays.
_ONE_OF_A_UNIT = re.compile(r"(?<![\d.,])1 (char|line|token|item|record|key|row|column)s\b")


def context_summary(context: Mapping[str, Any]) -> str:
    """A node's context summary (its call_start's `context.summary`) as a reader sees it: `1 line`, not `1 lines`."""
    return _ONE_OF_A_UNIT.sub(r"1 \1", str(context.get("summary") or ""))


def node_activity(node: CallNode, now: float) -> str:
    """What a running node is doing and for how long ("" once it has ended)."""
    if node.status != "running":
        return ""
    return f"{_doing(node)} · {now - node.started:.1f} s"


def _doing(node: CallNode) -> str:
    waiting = node.waiting
    if waiting is not None:
        iteration = f"iteration {waiting['iteration'] + 1}"
        if node.streaming:
            return f"{waiting['model']} writing {iteration} ({plural(len(node.streaming), 'char')})"
        retry = f" (retry {waiting['attempt']})" if waiting.get("attempt") else ""
        return f"waiting for {waiting['model']}, {iteration}{retry}"
    last = node.iterations[-1] if node.iterations else None
    if last is None or len(last.cells) >= last.blocks:
        return "starting" if last is None else "between iterations"
    block = len(last.cells)
    doing = f"running code block {block + 1} of {last.blocks}, iteration {last.index + 1}"
    started = [s for s in node.subcalls if (s.iteration, s.block) == (last.index, block)]
    if started:
        doing += f" · {sum(s.done for s in started):,} of {plural(len(started), 'sub-call')} done"
    return doing


def child_state(trace: Trace, parent: CallNode, sub: SubCall) -> str:
    """A child RLM's state as its parent's sub-call sees it: queued until it starts, cancelled if it never did."""
    child = trace.nodes.get(sub.child_id or "")
    if child is None:
        return "queued" if parent.status == "running" and not sub.done else "cancelled"
    return child.status


def child_counts(trace: Trace, parent: CallNode, subcalls: Iterable[SubCall]) -> str:
    """One line for a fan-out: `50 child RLMs: 4 queued · 16 running · 30 done`."""
    states = Counter(child_state(trace, parent, s) for s in subcalls if s.kind == "rlm")
    total = sum(states.values())
    order = [s for s in CHILD_STATES if states[s]] + sorted(set(states) - set(CHILD_STATES))
    return f"{plural(total, 'child RLM')}: " + " · ".join(f"{states[s]:,} {s}" for s in order)


def call_counts(subcalls: Iterable[SubCall]) -> str:
    """One line for a batch of sub-model calls: `200 llm_query calls: 16 running · 180 done · 4 failed`."""
    states = Counter("running" if not s.done else "failed" if s.error else "done" for s in subcalls)
    order = [s for s in ("running", "done", "failed") if states[s]]
    total = sum(states.values())
    return f"{plural(total, 'llm_query call')}: " + " · ".join(f"{states[s]:,} {s}" for s in order)


def replaced_names(node: CallNode) -> list[str]:
    """Names the model's code rebound that it had not made itself: the caller's variables (at depth 0, the user's)."""
    made: set[str] = set()
    found: dict[str, None] = {}
    for iteration in node.iterations:
        for cell in iteration.cells:
            found.update((n, None) for n in cell.rebound if n not in made)
            made.update(cell.created)
    return list(found)


def run_totals(trace: Trace, now: float) -> str:
    """The whole tree in one line: its calls by status, model calls, tokens, cost, elapsed time."""
    root = trace.root
    if root is None:
        return "no calls yet"
    nodes = list(trace.walk())
    usage = trace.subtree_usage(root.id)
    states = Counter(n.status for n in nodes)
    by_status = ", ".join(f"{count:,} {status}" for status, count in states.items())
    seconds = now - root.started if root.status == "running" else root.seconds
    return " · ".join(
        [f"{root.status}", f"{plural(len(nodes), 'RLM call')} ({by_status})", *usage_parts(usage), f"{seconds:.1f} s"]
    )


def usage_parts(usage: Usage) -> list[str]:
    """Model calls (attempts sent, cached apart), tokens and cost, worded as every view words them."""
    cost = usage.cost_text()
    return [usage.calls_text(), f"{usage.input_tokens:,}+{usage.output_tokens:,} tok", *([cost] if cost else [])]
