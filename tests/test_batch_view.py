"""A batch as it runs: the events and results every batch gives its watcher, the counts read from them in any
order, the static page, and the notebook's live view (without a kernel; tests/test_kernel_frontend.py has one)."""

from __future__ import annotations

import random
import re
import threading
from typing import Any

import ipywidgets as widgets
import pytest

from rlm_kernel import RLM
from rlm_kernel.core import batch as core_batch
from rlm_kernel.core.errors import ModelError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import Completion
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import Event
from rlm_kernel.formats.batch import BatchProgress, render_batch_html
from rlm_kernel.jupyter.batch_view import BatchView
from tests.conftest import question_of, repl
from tests.test_event_order import interleaved

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
QUESTIONS = [("alpha beta", "Question one?"), ("gamma", "Question <two>?"), ("delta", "Question fails?")]


class PolicyLM:
    """Offline model: a root asks one sub-model call, then submits it; the question that 'fails' gets a model error."""

    async def acomplete(self, messages: Any, *, model: str, **kwargs: Any) -> Completion:
        if messages[0]["role"] != "system":
            return Completion(
                "sub:" + messages[-1]["content"], Usage(llm_calls=1, input_tokens=3, output_tokens=2), model, 0.001
            )
        if "fails" in question_of(messages):
            raise ModelError("the model refused")
        turn = sum(m["role"] == "assistant" for m in messages)
        text = [repl("said = llm_query('say ' + context)\nprint(said)"), repl("FINAL(said)")][turn]
        return Completion(text, Usage(llm_calls=1, input_tokens=20, output_tokens=10), model, 0.01)

    def estimate_tokens(self, messages: Any) -> int:
        return 10

    def price(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        return None


class Recorder:
    """A BatchWatcher that keeps what it is told, in the order it came."""

    def __init__(self) -> None:
        self.events: list[tuple[int, Event | None]] = []
        self.results: dict[int, RLMResult] = {}
        self.closed: list[RLMResult] | None = None
        self.lock = threading.Lock()

    def event(self, index: int, event: Event | None) -> None:
        with self.lock:
            self.events.append((index, event))

    def finished(self, index: int, result: RLMResult) -> None:
        self.results[index] = result

    def close(self, results: list[RLMResult] | None) -> None:
        self.closed = results


def _rlm() -> RLM:
    return RLM(model="m/policy", lm=PolicyLM(), retries=0)


@pytest.fixture(scope="module")
def watched() -> Recorder:
    recorder = Recorder()
    results = _rlm().batch(QUESTIONS, concurrency=3, view=recorder)
    assert [r.status for r in results] == ["done", "done", "error"]
    assert recorder.closed == results
    return recorder


def test_a_batch_tells_its_watcher_each_questions_events_tagged_with_its_index_and_each_result(watched):
    for index in range(3):
        own = [event for i, event in watched.events if i == index]
        assert own[0] is None  # it started
        kinds = [e.kind for e in own[1:]]  # then its own events, in its own order
        assert kinds[0] == "call_start" and kinds[-1] == "call_end"
        assert own[1].data["query"] == QUESTIONS[index][1]
        assert watched.results[index].query == QUESTIONS[index][1]


def _shuffled(watched: Recorder, rng: random.Random) -> list[tuple[int, Event | None]]:
    """Every question's events in an order each question's own run could have sent them (its nodes interleaved, each
    node's own order kept), the questions merged at random, as workers deliver them."""
    queues = []
    for index in range(3):
        events = [e for i, e in watched.events if i == index and e is not None]
        queues.append([(index, None), *((index, e) for e in interleaved(events, rng))])
    merged = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        merged.append(queue.pop(0))
    return merged


def test_counts_and_usage_are_the_same_whatever_order_the_events_and_results_arrive_in(watched):
    expected_usage = sum((r.usage.llm_calls for r in watched.results.values()), 0)
    seen = set()
    for seed in range(8):
        rng = random.Random(seed)
        stream = _shuffled(watched, rng)
        seen.add(tuple((i, e and e.kind) for i, e in stream))
        progress = BatchProgress([q for _, q in QUESTIONS])
        assert progress.counts() == {"queued": 3, "running": 0, "done": 0, "failed": 0}
        for index, event in stream:
            progress.saw(index, event)
        # every event in, no result yet: all three ran, and the events alone give what they used
        assert progress.counts() == {"queued": 0, "running": 3, "done": 0, "failed": 0}
        assert progress.usage().llm_calls == expected_usage
        assert progress.usage().tokens == sum(r.usage.tokens for r in watched.results.values())
        # results in any order, a late event after its question's result changes nothing
        for index in rng.sample(range(3), 3):
            progress.finished(index, watched.results[index])
        progress.saw(0, stream[-1][1])
        assert progress.counts() == {"queued": 0, "running": 0, "done": 2, "failed": 1}
        assert progress.usage().llm_calls == expected_usage
        assert [q.status for q in progress.questions] == ["done", "done", "error"]
    assert len(seen) > 1, "the orders should differ"


def test_a_result_alone_counts_and_a_started_question_is_running_until_its_result():
    progress = BatchProgress(["a", "b", "c"], kept={2: RLMResult("kept", "done", Usage(llm_calls=4), _empty(), 1.0)})
    progress.saw(1, None)
    assert progress.counts() == {"queued": 1, "running": 1, "done": 1, "failed": 0}
    progress.finished(0, RLMResult(None, "error", Usage(), _empty(), 0.0, error="could not start", query="a"))
    assert progress.counts() == {"queued": 0, "running": 1, "done": 1, "failed": 1}
    assert progress.usage().llm_calls == 4
    assert "could not start" in progress.tree_html(0)
    line = progress.line()
    assert line.startswith("3 questions: 0 queued · 1 running · 1 done · 1 failed · 4 model calls")


def _empty() -> Any:
    from rlm_kernel.core.trace import Trace

    return Trace()


def test_the_static_page_has_the_counts_and_each_questions_call_tree_escaped(watched):
    progress = BatchProgress([q for _, q in QUESTIONS])
    for index, event in watched.events:
        progress.saw(index, event)
    for index, result in watched.results.items():
        progress.finished(index, result)
    page = render_batch_html(progress)
    assert "2 done" in page and "1 failed" in page and "0 queued" in page
    assert page.count("<details") >= 6  # a row a question, each holding its tree
    assert "Question &lt;two&gt;?" in page and "<two>" not in page
    assert "say gamma" in page  # the tree inside the row: the sub-call's prompt
    assert "the model refused" in page
    assert "var(--jp-" in page  # the theme's variables, as the run's tree
    assert render_batch_html(progress, trees=1).count("<details") < page.count("<details")


def test_a_registered_view_watches_every_batch_unless_it_says_view_false():
    made: list[Recorder] = []

    def make(queries: list[str], kept: Any) -> Recorder:
        assert queries == [q for _, q in QUESTIONS[:2]]
        made.append(Recorder())
        return made[-1]

    previous = core_batch.batch_view()
    core_batch.register_batch_view(make)
    try:
        _rlm().batch(QUESTIONS[:2])
        _rlm().batch(QUESTIONS[:2], view=False)
    finally:
        core_batch.register_batch_view(previous)
    assert len(made) == 1 and made[0].closed is not None and len(made[0].results) == 2


def test_a_broken_view_does_not_break_the_batch():
    class Broken(Recorder):
        def event(self, index: int, event: Event | None) -> None:
            raise RuntimeError("the view broke")

    results = _rlm().batch(QUESTIONS[:2], view=Broken())
    assert [r.status for r in results] == ["done", "done"]


class Handle:
    def __init__(self) -> None:
        self.updates: list[Any] = []

    def update(self, value: Any) -> None:
        self.updates.append(value)


def test_the_live_view_draws_counts_and_rows_then_leaves_the_static_page_and_no_widgets(watched):
    view = BatchView([q for _, q in QUESTIONS], throttle_s=0.01)
    view._handle = handle = Handle()
    view.flush()
    header = view._header.value
    assert "3 queued" in header and "0 running" in header
    rows = view._rows_box.children
    assert len(rows) == 3 and all(isinstance(r, widgets.Accordion) for r in rows)
    for index, event in watched.events:
        view.event(index, event)
    view.flush()
    assert "3 running" in view._header.value
    assert "say alpha beta" in view._rows[0][1].value  # the question's tree, as it runs, in its folded row
    assert rows[0].selected_index is None
    view.finished(0, watched.results[0])
    view.flush()
    assert "1 done" in view._header.value and "2 running" in view._header.value
    assert rows[0].titles[0].startswith("✅ #0 · done · Question one?")
    models = [rows[0], view._header, view._root]
    view.close([watched.results[i] for i in range(3)])
    (page,) = handle.updates
    bundle = page._repr_mimebundle_()
    assert "2 done" in bundle["text/html"] and "1 failed" in bundle["text/html"]
    assert re.search(r"#2 · error · Question fails\?", bundle["text/plain"])
    assert all(model.comm is None for model in models)  # every widget model closed
