"""Events as the only truth: every consumer gives the same result however the events of different nodes interleave.

Events from other processes (a batch's workers, a sandbox elsewhere) keep each node's own order, and a child's
come after the sub-call that started it, but nothing else: the shuffles below are such orders.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.trace import Event, Trace
from rlm_kernel.formats.html import render_html
from rlm_kernel.formats.notebook import build_notebook
from rlm_kernel.formats.reference import reference_lines
from rlm_kernel.formats.rerun import replay_run
from rlm_kernel.models.policies import register_policy
from tests.conftest import repl

CONTEXT = "\n".join(f"line {i}: part {'AB'[i % 2]}" for i in range(40))
QUESTION = "What do the parts say?"
SHUFFLES = 6


def fan_out_policy(messages: list[dict[str, Any]]) -> str:
    """Root: three sub-model calls and two child RLMs at once, then submit. Each child: a sub-model call, submit."""
    if messages[0]["role"] != "system":
        return "sub:" + messages[-1]["content"][:12]
    turn = sum(m["role"] == "assistant" for m in messages)
    if "Question: Part " in messages[1]["content"]:
        return [repl("note = llm_query('child asks ' + context[:10])\nprint(note)"), repl("FINAL(note)")][turn]
    return [
        repl(
            "notes = llm_query_batched(['a ' + context[:8], 'b', 'c'])\n"
            "parts = rlm_query_batched([(context[:50], 'Part A?'), (context[50:], 'Part B?')])\nprint(notes, parts)"
        ),
        repl("FINAL(' / '.join(parts))"),
    ][turn]


@pytest.fixture(scope="module")
def recorded() -> Trace:
    result = RLM(model=register_policy(fan_out_policy), max_depth=2, concurrency=4).completion(CONTEXT, QUESTION)
    assert result.status == "done", result.error
    assert len(result.trace.nodes) == 3
    return result.trace


def interleaved(events: list[Event], rng: random.Random) -> list[Event]:
    """The events in a random order that keeps each node's own order and starts a child after its sub-call."""
    queues: dict[str, list[Event]] = {}
    for event in events:
        queues.setdefault(event.node_id, []).append(event)
    announced = {e.node_id for e in events if e.parent_id is None}
    shuffled: list[Event] = []
    while len(shuffled) < len(events):
        ready = [node for node, queue in queues.items() if queue and node in announced]
        event = queues[rng.choice(ready)].pop(0)
        if event.kind == "subcall_start" and event.data.get("child_id"):
            announced.add(event.data["child_id"])
        shuffled.append(event)
    return shuffled


def orders(recorded: Trace) -> list[Trace]:
    rng = random.Random(21)
    traces = [Trace.from_events(interleaved(recorded.events, rng)) for _ in range(SHUFFLES)]
    kinds_by_arrival = [[(e.node_id, e.kind) for e in t.events] for t in traces]
    assert len({tuple(k) for k in kinds_by_arrival}) > 1, "the shuffles should differ"
    return traces


def tree_of(trace: Trace) -> list[Any]:
    return [
        (
            node.id,
            node.status,
            node.answer,
            node.children,
            [(s.id, s.iteration, s.block, s.reply, s.child_id) for s in node.subcalls],
            [(it.index, [(c.index, c.stdout, c.value, c.error) for c in it.cells]) for it in node.iterations],
        )
        for node in trace.walk()
    ]


def exported_cells(trace: Trace) -> list[Any]:
    """The export's cells, the setup cell's payload id (a hash of the events as they arrived) set aside."""
    notebook, _ = build_notebook(trace, context=CONTEXT)
    return [
        (cell["cell_type"], re.sub(r"%rlm_replay \w+", "%rlm_replay ID", cell["source"]), cell.get("outputs"))
        for cell in notebook["cells"]
    ]


def test_every_consumer_reads_the_same_run_from_any_interleaving(recorded):
    expected = {
        "tree": tree_of(recorded),
        "outline": recorded.outline(10_000),
        "html": render_html(recorded),
        "reference": reference_lines(recorded),
        "export": exported_cells(recorded),
    }
    assert sum(cell[0] == "code" for cell in expected["export"]) > 3  # the blocks of all three nodes
    for trace in orders(recorded):
        assert tree_of(trace) == expected["tree"]
        assert trace.outline(10_000) == expected["outline"]
        assert render_html(trace) == expected["html"]
        assert reference_lines(trace) == expected["reference"]
        assert exported_cells(trace) == expected["export"]


def test_the_sub_calls_of_a_block_are_found_by_the_fields_their_events_carry(recorded):
    root = recorded.root
    first_block = [s for s in root.subcalls if (s.iteration, s.block) == (0, 0)]
    assert [s.kind for s in first_block] == ["llm", "llm", "llm", "rlm", "rlm"]
    reference = reference_lines(recorded)[1]["code_blocks"][0]["result"]["rlm_calls"]
    assert [call["prompt"] for call in reference][-2:] == ["Part A?", "Part B?"]


def test_a_replay_of_any_interleaving_answers_as_recorded(recorded):
    for trace in orders(recorded)[:2]:
        replayed = replay_run(trace, CONTEXT)
        assert replayed.matches, (replayed.replayed.status if replayed.replayed else None, replayed.result.error)


def test_the_widget_view_draws_the_same_nodes_from_any_interleaving(recorded):
    pytest.importorskip("ipywidgets")
    from rlm_kernel.jupyter.view import TraceView

    def drawn(trace: Trace) -> dict[str, Any]:
        view = TraceView()  # fed as a live run feeds it, event by event
        for event in trace.events:
            view(event)
        view.close()
        nodes = {node_id: (w.accordion.titles, w.details.value) for node_id, w in view._nodes.items()}
        view.release()
        return nodes

    expected = drawn(recorded)
    for trace in orders(recorded)[:3]:
        assert drawn(trace) == expected
