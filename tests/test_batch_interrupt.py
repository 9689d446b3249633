"""An interrupted batch keeps its answers (issue 23 item 6): Ctrl-C during `batch` raises BatchInterrupted and
cancelling `abatch` raises BatchCancelled, each carrying every question's result in order; `results_path` keeps
finished results so that a re-run asks only the rest."""

from __future__ import annotations

import _thread
import asyncio
import builtins
import sys
import threading
import time
import traceback
from collections.abc import Callable

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.errors import BatchCancelled, BatchInterrupted
from rlm_kernel.core.trace import Event
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block

# A question whose context is "slow" works for 30 s; the others answer with one sub-call.
POLICY = block(
    "import time\n"
    "if context == 'slow':\n"
    "    for _ in range(300):\n"
    "        time.sleep(0.1)\n"
    "FINAL(llm_query('q:' + context))"
)


def _policy() -> Recorder:
    return Recorder(lambda messages: POLICY)


def _interrupt_when(done: list[int], count: int) -> None:
    def wait() -> None:
        while len(done) < count:
            time.sleep(0.02)
        time.sleep(0.2)
        _thread.interrupt_main()

    threading.Thread(target=wait, daemon=True).start()


def _count_ends(finished: list[int]) -> Callable[[Event], None]:
    return lambda e: finished.append(1) if e.kind == "call_end" and e.parent_id is None else None


def test_ctrl_c_during_a_batch_returns_the_finished_answers_and_the_partial_ones():
    with ModelServer(_policy()) as server:
        finished: list[int] = []
        rlm = RLM(model="openai/policy", api_base=server.url, on_event=_count_ends(finished))
        _interrupt_when(finished, 2)
        started = time.monotonic()
        with pytest.raises(BatchInterrupted) as stopped:
            rlm.batch([("a", "fast a"), ("slow", "slow"), ("b", "fast b")], concurrency=3)
        took = time.monotonic() - started
    results = stopped.value.results
    assert [r.status for r in results] == ["done", "interrupted", "done"]
    assert [r.answer for r in results[::2]] == ["sub:q:a", "sub:q:b"]
    assert results[1].query == "slow" and results[1].trace.root_start() is not None  # partial, with its trace
    assert took < 10.0  # the slow question would take 30 s
    assert "2 of 3 results finished" in str(stopped.value)


def _threads_in_model_code() -> list[str]:
    frames = sys._current_frames()
    return [
        thread.name
        for thread in threading.enumerate()
        if any(frame.filename.startswith("<rlm-cell-") for frame in traceback.extract_stack(frames.get(thread.ident)))
    ]


def test_an_interrupted_batch_stops_its_running_questions_code_and_leaves_the_builtins_alone():
    with ModelServer(_policy()) as server:
        finished: list[int] = []
        rlm = RLM(model="openai/policy", api_base=server.url, on_event=_count_ends(finished))
        _interrupt_when(finished, 2)
        with pytest.raises(BatchInterrupted):
            rlm.batch([("a", "fast a"), ("slow", "slow"), ("b", "fast b")], concurrency=3)
        # What the user does next: a builtin of their own (IPython adds get_ipython at each cell's start).
        builtins.rlm_test_mine = 1
        try:
            ends = time.monotonic() + 2
            while _threads_in_model_code() and time.monotonic() < ends:
                time.sleep(0.05)
            assert _threads_in_model_code() == []  # the slow question's loop would have run on for 30 s
            assert builtins.rlm_test_mine == 1
        finally:
            del builtins.rlm_test_mine


def test_cancelling_abatch_raises_batch_cancelled_with_every_result():
    async def cancel_after_two(rlm: RLM, finished: list[int]) -> BatchCancelled:
        task = asyncio.ensure_future(rlm.abatch([("a", "fast a"), ("slow", "slow"), ("b", "fast b")]))
        while len(finished) < 2:
            await asyncio.sleep(0.02)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError as stop:
            # Python 3.10's Task raises a fresh CancelledError chained from the coroutine's own (3.11 keeps it).
            cancelled = stop if isinstance(stop, BatchCancelled) else stop.__context__
            if isinstance(cancelled, BatchCancelled):
                return cancelled
            raise
        raise AssertionError("abatch was not cancelled")

    with ModelServer(_policy()) as server:
        finished: list[int] = []
        rlm = RLM(model="openai/policy", api_base=server.url, on_event=_count_ends(finished))
        cancelled = asyncio.run(cancel_after_two(rlm, finished))
    assert isinstance(cancelled, asyncio.CancelledError)
    assert [r.status for r in cancelled.results] == ["done", "interrupted", "done"]


def test_a_rerun_with_results_path_asks_only_what_an_interrupt_left_undone(tmp_path):
    path = tmp_path / "batch.results"
    questions = [("a", "fast a"), ("slow", "slow"), ("b", "fast b")]
    with ModelServer(_policy()) as server:
        finished: list[int] = []
        rlm = RLM(model="openai/policy", api_base=server.url, on_event=_count_ends(finished))
        _interrupt_when(finished, 2)
        with pytest.raises(BatchInterrupted):
            rlm.batch(questions, results_path=path, concurrency=3)
        asked = server.stats()["requests"]
        again = rlm.batch([questions[0], ("c", "slow"), questions[2]], results_path=path)
        # the finished two were not asked again; the interrupted one (now with a quick context) was
        assert server.stats()["requests"] == asked + 2
    assert [r.answer for r in again] == ["sub:q:a", "sub:q:c", "sub:q:b"]
