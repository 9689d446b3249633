"""What the engine tells the views while a run is under way: model waits, queued children, quiet interrupts."""

from __future__ import annotations

import gc
import re
import time
import warnings
from typing import Any

from rlm_kernel import RLM
from rlm_kernel.core.aio import CancelScope
from rlm_kernel.core.errors import TransientModelError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import Completion
from rlm_kernel.core.trace import Event, Trace
from rlm_kernel.formats.html import render_html
from rlm_kernel.jupyter.view import TraceView
from tests.conftest import question_of, repl


class FlakyLM:
    """Fails its first call with a transient error, then answers FINAL('ok')."""

    def __init__(self) -> None:
        self.calls = 0

    async def acomplete(self, messages: Any, *, model: str, **kwargs: Any) -> Completion:
        self.calls += 1
        if self.calls == 1:
            raise TransientModelError("503 from the server")
        return Completion(repl("FINAL('ok')"), Usage(llm_calls=1, input_tokens=5, output_tokens=2), model, 0.01)

    def estimate_tokens(self, messages: Any) -> int:
        return 10

    def price(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        return None


def test_model_wait_comes_before_each_attempt_of_a_nodes_own_call():
    events: list[Event] = []
    result = RLM(model="m/flaky", lm=FlakyLM(), retry_backoff=0.0, on_event=events.append).completion("text", "q")
    assert result.answer == "ok"
    waits = [(e.kind, e.data) for e in events if e.kind in ("model_wait", "iteration")]
    assert waits[:2] == [
        ("model_wait", {"iteration": 0, "model": "m/flaky", "attempt": 0}),
        ("model_wait", {"iteration": 0, "model": "m/flaky", "attempt": 1}),
    ]
    assert waits[2][0] == "iteration"
    root = result.trace.root
    assert root.waiting is None and root.streaming == ""  # the reply arrived: nothing is awaited


def test_model_text_deltas_build_the_reply_being_written_until_the_iteration_has_it():
    trace = Trace()
    start = {"depth": 0, "model": "m", "query": "q", "context": {}}
    trace.add(Event("call_start", "n0", None, start))
    trace.add(Event("model_wait", "n0", None, {"iteration": 0, "model": "m", "attempt": 0}))
    for delta in ("Revenue grew ", "from $5M"):
        trace.add(Event("model_text", "n0", None, {"iteration": 0, "text": delta}))
    assert trace.root.streaming == "Revenue grew from $5M" and trace.root.waiting["model"] == "m"
    trace.add(Event("model_wait", "n0", None, {"iteration": 0, "model": "m", "attempt": 1}))
    assert trace.root.streaming == ""  # a retry writes its reply again


def test_a_fan_out_announces_every_child_before_any_starts(scripted):
    def policy(messages: list[dict[str, Any]]) -> str:
        if question_of(messages) == "root":
            if len(messages) > 2:
                return repl("FINAL(outs)")
            return repl("outs = rlm_query_batched([(str(i), f'child {i}') for i in range(6)])")
        return repl("FINAL(context)")

    events: list[Event] = []
    result = RLM(model=scripted(policy), max_depth=2, concurrency=2, on_event=events.append).completion("x", "root")
    assert result.answer == [str(i) for i in range(6)]
    kinds = [(e.kind, e.node_id) for e in events if e.kind in ("subcall_start", "call_start") and e.node_id != "n0"]
    announced = [e.data["child_id"] for e in events if e.kind == "subcall_start"]
    assert announced == [f"n{i}" for i in range(1, 7)]  # numbered in the order they were asked for
    first_child_start = next(i for i, e in enumerate(events) if e.kind == "call_start" and e.parent_id == "n0")
    assert all(e.kind != "subcall_start" for e in events[first_child_start:])
    assert kinds  # children did start
    assert [s.child_id for s in result.trace.root.subcalls] == announced


def test_an_interrupt_before_the_call_reaches_the_loop_leaves_no_warning(monkeypatch):
    def interrupted() -> None:
        raise KeyboardInterrupt  # as a kernel interrupt lands while the first call starts the loop

    monkeypatch.setattr("rlm_kernel.core.aio.background_loop", interrupted)

    async def call() -> int:
        return 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            CancelScope().run(call())
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the interrupted call returned")
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


# -- what the views show of it ----------------------------------------------------------------------


def _start(node_id: str, parent: str | None, query: str, depth: int = 0) -> Event:
    return Event("call_start", node_id, parent, {"depth": depth, "model": "m/slow", "query": query, "context": {}})


def _fan_out(children: int, started: int, done: int) -> list[Event]:
    """A root whose one block announced `children` child RLMs; `started` of them began, `done` ended."""
    events = [
        _start("n0", None, "root"),
        Event(
            "iteration", "n0", None, {"index": 0, "reply": "...", "usage": Usage().to_dict(), "seconds": 1, "blocks": 1}
        ),
    ]
    for i in range(1, children + 1):
        sub = {"subcall_id": f"s{i}", "kind": "rlm", "model": "m/slow", "prompt_preview": f"part {i}"}
        events.append(
            Event(
                "subcall_start", "n0", None, {**sub, "prompt_chars": 6, "child_id": f"n{i}", "iteration": 0, "block": 0}
            )
        )
    for i in range(1, started + 1):
        events.append(_start(f"n{i}", "n0", f"part {i}", depth=1))
    for i in range(1, done + 1):
        end = {"status": "done", "answer": str(i), "seconds": 0.5}
        events.append(Event("call_end", f"n{i}", "n0", end))
        events.append(
            Event(
                "subcall_end",
                "n0",
                None,
                {"subcall_id": f"s{i}", "reply": str(i), "usage": Usage().to_dict(), "seconds": 0.5},
            )
        )
    return events


def test_a_running_nodes_title_says_what_it_waits_for_and_its_time_moves():
    view = TraceView(throttle_s=0.01)
    view(_start("n0", None, "q"))
    view(Event("model_wait", "n0", None, {"iteration": 2, "model": "openai/gpt-4o", "attempt": 0}))
    title = _wait_for(lambda: view.tree.children and view.tree.children[0].titles[0])
    assert "waiting for openai/gpt-4o, iteration 3" in title
    first = _elapsed(title)
    later = _wait_for(lambda: (t := view.tree.children[0].titles[0]) and _elapsed(t) >= first + 1.0 and t, timeout=4)
    assert "waiting for openai/gpt-4o" in later
    assert "RLM run</b> running · 1 RLM call (1 running) · 1 model call" in view._header.value
    view.close()


def test_streamed_text_appears_in_its_node_before_the_reply_ends():
    view = TraceView(throttle_s=0.01)
    view(_start("n0", None, "q"))
    view(Event("model_wait", "n0", None, {"iteration": 0, "model": "m/slow", "attempt": 0}))
    view(Event("model_text", "n0", None, {"iteration": 0, "text": "Revenue grew from $5M\n"}))
    view(Event("model_text", "n0", None, {"iteration": 0, "text": "to $7M | a_b"}))
    details = _wait_for(
        lambda: view._nodes.get("n0") and "a_b" in view._nodes["n0"].details.value and view._nodes["n0"].details.value
    )
    assert "Revenue grew from $5M\nto $7M | a_b" in details  # in a <pre>, as written
    assert "m/slow writing iteration 1" in view.tree.children[0].titles[0]
    view.close()


def test_a_fan_out_shows_one_line_of_counts_and_compact_children():
    view = TraceView()
    for event in _fan_out(50, started=46, done=30):
        view(event)
    view.close()
    root = view._nodes["n0"].details.value
    assert "50 child RLMs: 4 queued · 16 running · 30 done (each has its own section below)" in root
    assert "part 7" not in root  # no pointer line per child repeats the children's own entries
    assert len(view._nodes["n0"].children.children) == 46
    assert all(
        " · " in node.accordion.titles[0] and "\n" not in node.accordion.titles[0] for node in view._nodes.values()
    )
    view.expand_all(True)
    assert {node.accordion.selected_index for node in view._nodes.values()} == {0}
    view.expand_all(False)
    assert {node.accordion.selected_index for node in view._nodes.values()} == {None}
    page = render_html(view.trace)
    assert "50 child RLMs: 4 queued · 16 running · 30 done" in page


def test_children_that_never_started_read_as_cancelled_once_the_parent_stopped():
    events = _fan_out(5, started=3, done=3)
    events.append(Event("call_end", "n0", None, {"status": "interrupted", "error": "interrupted", "seconds": 2}))
    page = render_html(_trace(events))
    assert "5 child RLMs: 3 done · 2 cancelled" in page
    assert page.count(">cancelled</span> child RLM") == 2


def test_a_cancelled_sub_call_is_shown_as_cancelled_not_as_an_error():
    trace = _trace(
        [
            _start("n0", None, "q"),
            Event(
                "subcall_start",
                "n0",
                None,
                {
                    "subcall_id": "s0",
                    "kind": "llm",
                    "model": "m",
                    "prompt_preview": "p",
                    "prompt_chars": 1,
                    "iteration": 0,
                    "block": 0,
                },
            ),
            Event(
                "subcall_end",
                "n0",
                None,
                {"subcall_id": "s0", "error": "cancelled", "usage": Usage().to_dict(), "seconds": 0.1},
            ),
        ]
    )
    page = render_html(trace)
    assert ">cancelled</span>" in page and ">error</span>" not in page


def _trace(events: list[Event]) -> Trace:
    trace = Trace()
    for event in events:
        trace.add(event)
    return trace


def _wait_for(probe: Any, timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)  # the view draws from its own thread
    raise AssertionError("the view did not get there in time")


def _elapsed(title: str) -> float:
    return float(re.search(r"· (\d+\.\d) s$", title).group(1))
