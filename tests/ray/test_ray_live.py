"""A watched batch on Ray (the notebook's live view reads this stream): each question's events reach the driver while
the question runs, from whichever worker, and the counts read from them do not depend on their arrival order."""

from __future__ import annotations

import threading
import time

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import Event
from rlm_kernel.distributed import RayExecutor
from rlm_kernel.formats.batch import BatchProgress
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block

pytestmark = pytest.mark.usefixtures("cluster")
LATENCY_S = 1.0


class Arrivals:
    """A BatchWatcher that notes when each event and result reached the driver, and the counts it saw meanwhile."""

    def __init__(self, queries: list[str]) -> None:
        self.progress = BatchProgress(queries)
        self.events: list[tuple[float, int, Event | None]] = []
        self.results: dict[int, float] = {}
        self.counts: list[dict[str, int]] = []
        self.lock = threading.Lock()

    def event(self, index: int, event: Event | None) -> None:
        with self.lock:
            self.events.append((time.time(), index, event))
        self.progress.saw(index, event)
        self.counts.append(self.progress.counts())

    def finished(self, index: int, result: RLMResult) -> None:
        self.results[index] = time.time()
        self.progress.finished(index, result)

    def close(self, results: list[RLMResult] | None) -> None:
        self.progress.close()


def test_a_watched_batch_on_ray_gets_each_questions_worker_events_while_the_question_runs():
    queries = [f"q{i}" for i in range(4)]
    watcher = Arrivals(queries)
    policy = Recorder(lambda messages: block("FINAL(llm_query('q:' + context))"))
    with ModelServer(policy, latency_ms=int(LATENCY_S * 1000)) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        executor = RayExecutor(num_cpus=0.25)
        results = rlm.batch([(f"c{i}", q) for i, q in enumerate(queries)], executor=executor, view=watcher)
    assert [r.status for r in results] == ["done"] * 4
    for index in range(4):  # each question on its own: nothing here reads the order across questions
        own = [(arrived, event) for arrived, i, event in watcher.events if i == index and event is not None]
        wait = next(arrived for arrived, e in own if e.kind == "model_wait" and e.parent_id is None)
        replied = next(e.time for _, e in own if e.kind == "iteration")  # on the worker, when the reply came
        # the root's first model call lasts LATENCY_S: the driver knew it was waiting before the reply came
        assert wait < replied, (index, replied - wait)
        assert wait < watcher.results[index] - LATENCY_S / 2
        assert {e.kind for _, e in own} >= {"call_start", "model_wait", "iteration", "code_result", "call_end"}
    # the counts read from the stream as it came: questions were seen running before the batch ended
    assert any(c["running"] >= 1 and c["done"] < 4 for c in watcher.counts)
    assert watcher.progress.counts() == {"queued": 0, "running": 0, "done": 4, "failed": 0}
    assert watcher.progress.usage().llm_calls == sum(r.usage.llm_calls for r in results) == 8
    # the executor's own progress line counts a finished question as done, no longer running
    assert executor.progress.running == set() and executor.progress.line().startswith("4 done, 0 failed, 0 queued")
