"""What the engine tells the views while a run is under way: model waits, queued children, quiet interrupts."""

from __future__ import annotations

import gc
import warnings
from typing import Any

from rlm_kernel import RLM
from rlm_kernel.core.aio import CancelScope
from rlm_kernel.core.errors import TransientModelError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import Completion
from rlm_kernel.core.trace import Event, Trace
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
