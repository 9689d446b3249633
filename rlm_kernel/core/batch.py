"""Many questions at once: `RLM.batch([(context, query), ...])` and `await RLM.abatch(...)`.

By default one bound covers the whole batch: at most `concurrency` questions run at once (each in a thread of
the batch's own pool, since model code is synchronous) and at most `concurrency` model calls are in flight,
sub-calls included (one `CallSlots` shared by every question's tree). Results come back in order, each with
its own status, usage and trace. Each question keeps the RLM's own budgets; limits given to the batch are one
more budget that every question's calls are also charged to (`JointBudget`).

`executor=` runs the questions on any `concurrent.futures.Executor`. A `ThreadPoolExecutor` shares this
process, so everything above holds. Any other (a process pool, a cluster's) gets each question as a
`Question`, which pickles: the run's `RunConfig` and the question; the process that runs it makes its own model
clients and REPLs from the config, bounds its own calls by `concurrency`, sends no live events (each result
carries its trace) and is not stopped once started. Batch-wide limits there need a `Budget` every process can
reach (`Batch(..., budget=...)`); this process's `Ledger` cannot leave it.

A batch can be watched as it runs (`BatchWatcher`): every question's events as they happen, each tagged with the
question's index, and each result as it comes. The package's notebook extension registers its live view here
(`register_batch_view`), so core imports no view; `view=False` leaves it out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import math
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rlm_kernel.core.aio import WAIT_SLICE_S, CancelScope, RunCancelled
from rlm_kernel.core.clients import pricing_warnings
from rlm_kernel.core.config import RunConfig
from rlm_kernel.core.deadlines import Deadline
from rlm_kernel.core.errors import (
    BatchCancelled,
    BatchInterrupted,
    ConfigError,
    RLMError,
    RunInterrupted,
    UnpricedModelWarning,
)
from rlm_kernel.core.fanout import SharedByProcesses
from rlm_kernel.core.ledger import Budget, JointBudget, Ledger, Limits, Usage
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.resume import DoneResults
from rlm_kernel.core.run import Asker, Local, run_question
from rlm_kernel.core.slots import CallSlots, Slots
from rlm_kernel.core.telemetry import SpansFromEvents
from rlm_kernel.core.trace import Event, Trace
from rlm_kernel.core.typed import AnswerType

BATCH_LIMITS = ("max_llm_calls", "max_tokens", "max_cost_usd", "max_seconds")
RUN_POOL_THREADS = 256  # threads start only as runs need them

STOP_GRACE_S = 5.0  # after an interrupt, how long the questions get to unwind and hand back their partial results

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
# executor="name": a loader per name, filled by the package root (core imports no engine of its own)
_EXECUTORS: dict[str, Callable[[], concurrent.futures.Executor]] = {}


class BatchWatcher(Protocol):
    """What watches a batch as it runs (a notebook's live view). Called from any thread: `event(index, event)` for
    each event of question `index` as it happens (`None`: the question started; events of different questions and
    workers come in any order), `finished(index, result)` as each question ends, and `close(results)` once, in the
    thread that ran the batch, when it has ended (`results`: every question's in order; None if the batch failed)."""

    def event(self, index: int, event: Event | None) -> None: ...

    def finished(self, index: int, result: RLMResult) -> None: ...

    def close(self, results: list[RLMResult] | None) -> None: ...


# What watches a batch unless it says otherwise: made from its queries and the results kept from an earlier run;
# None where nothing can show it (the notebook extension's maker outside a notebook).
BatchViewMaker = Callable[[list[str], Mapping[int, RLMResult]], BatchWatcher | None]
_batch_view: BatchViewMaker | None = None


def register_batch_view(make: BatchViewMaker | None) -> None:
    """Every batch not given `view=False` asks `make(queries, kept)` for its watcher (None: unregister)."""
    global _batch_view
    _batch_view = make


def batch_view() -> BatchViewMaker | None:
    return _batch_view


@runtime_checkable
class StreamsEvents(Protocol):
    """An executor of other processes that sends a question's events back as they happen."""

    def submit_question(
        self, question: Question, on_event: Callable[[Event | None], None]
    ) -> concurrent.futures.Future[RLMResult]:
        """Run `question`; `on_event` gets each of its events on this process as it arrives (`None`: it started)."""
        ...


def register_executor(name: str, make: Callable[[], concurrent.futures.Executor]) -> None:
    """`RLM.batch(..., executor=name)` runs on `make()`; `make` imports its engine and says what to install."""
    _EXECUTORS[name] = make


def resolve_executor(executor: concurrent.futures.Executor | str | None) -> concurrent.futures.Executor | None:
    if not isinstance(executor, str):
        return executor
    if executor not in _EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; known: {', '.join(sorted(_EXECUTORS)) or 'none'}")
    return _EXECUTORS[executor]()


@runtime_checkable
class ClusterExecutor(SharedByProcesses, Protocol):
    """An executor of other processes that also checks, before any question of a batch starts, that every question
    can be sent."""

    def check_sendable(self, questions: list[Question]) -> None: ...


def run_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads `acompletion` runs model code in: asyncio's default pool has min(32, cores + 4)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(RUN_POOL_THREADS, thread_name_prefix="rlm-run")
        return _pool


def failed(query: str, error: str, status: str = "error") -> RLMResult:
    """The result of a question that could not start (a context the engine refuses, bad settings) or ended
    without handing back its own (`interrupted` before it started or while it unwound)."""
    return RLMResult(None, status, Usage(), Trace(), 0.0, error=error, query=query)


@dataclass(frozen=True)
class Question:
    """One question of a batch as another process runs it: data only, so it pickles (with `shared` and `slots`
    when those can travel: a budget and slots that other processes reach)."""

    config: RunConfig
    context: object
    query: str
    answer_type: AnswerType | None = None
    shared: Budget | None = None  # the batch's budget
    slots: Slots | None = None  # None: this process bounds its own calls by the config's concurrency
    telemetry_link: str | None = None  # the batch's span (a W3C traceparent) this question's trace links to

    def __call__(self) -> RLMResult:
        return self.run()

    def run(self, local: Local | None = None) -> RLMResult:
        """`local`: this process's clients and event handlers (default: built from the config)."""
        budget = None if self.shared is None else JointBudget(Ledger(self.config.limits), self.shared)
        return _answered(
            self.query,
            lambda: run_question(
                self.config,
                self.context,
                self.query,
                local=local,
                budget=budget,
                slots=self.slots,
                answer_type=self.answer_type,
                telemetry_link=self.telemetry_link,
            ),
        )


class Batch:
    def __init__(
        self,
        rlm: Asker,
        questions: Iterable[tuple[object, str]],
        concurrency: int | None,
        answer_type: Any,
        limits: Mapping[str, float | None],
        executor: concurrent.futures.Executor | str | None = None,
        *,
        budget: Budget | None = None,
        slots: Slots | None = None,
        results_path: str | Path | None = None,
        view: bool | BatchWatcher = True,
    ) -> None:
        """`view`: True, the registered live view (a notebook's, when there is one); False, none; or a watcher;
        `budget`: the batch's own (default: a Ledger of `limits`, when any is given; a ClusterExecutor's shared
        one); `slots`: the call slots every question shares (default: CallSlots of `concurrency` in this process, a
        ClusterExecutor's shared ones, none for another process's questions); `results_path`: a file each finished
        result is added to as it completes, from which a re-run of the same batch takes what is done."""
        self.rlm = rlm
        self.answer_type = None if answer_type is None else AnswerType(answer_type)
        self.questions = [_pair(q, i) for i, q in enumerate(questions)]
        self.concurrency = rlm.config.loop.concurrency if concurrency is None else concurrency
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ConfigError(f"concurrency must be a whole number of at least 1, not {self.concurrency!r}")
        unknown = set(limits) - set(BATCH_LIMITS)
        if unknown:
            raise ConfigError(f"unknown batch limits {sorted(unknown)}; known: {', '.join(BATCH_LIMITS)}")
        given = {k: v for k, v in limits.items() if v is not None}
        self.executor = resolve_executor(executor)
        cluster = self.executor if isinstance(self.executor, ClusterExecutor) else None
        if budget is None and given:
            limited = Limits(**given)  # type: ignore[arg-type]
            budget = cluster.shared_budget(limited) if cluster else Ledger(limited)
        self.budget = budget
        if "max_cost_usd" in given:  # as one run warns of its own limit
            for warning in pricing_warnings(rlm.config, rlm.local.models, given["max_cost_usd"]):
                warnings.warn(warning, UnpricedModelWarning, stacklevel=3)
        executor = self.executor
        # Threads of this process share its memory: the in-process budget, slots, clients and event handlers.
        self.in_process = executor is None or isinstance(executor, concurrent.futures.ThreadPoolExecutor)
        if self.in_process and rlm.local.executor is not None:  # its children could not reach this process's budget
            raise ConfigError(
                "an RLM whose children run on another executor runs its batches there too: executor='ray'"
            )
        if not self.in_process and isinstance(self.budget, Ledger):
            raise ConfigError(
                "batch-wide limits with this executor need a budget that its processes reach: "
                "pass Batch(..., budget=...), or give the limits to the RLM (each question's own)"
            )
        if slots is None:
            slots = CallSlots(self.concurrency) if self.in_process else None
            slots = cluster.shared_slots(self.concurrency) if cluster else slots
        self.slots = slots
        self.cluster = cluster
        self.done = DoneResults(results_path, self.questions)
        self.scopes = [CancelScope() for _ in self.questions]
        # Each running question's code, stopped by a cancel: left running, an interrupted batch's questions went on
        # computing, and a block ending later put back the builtins as it had found them, under the next cells.
        self.running: list[Deadline] = []
        self.cancelled = threading.Event()
        self.usage = Usage()  # the whole batch, filled in when it ends
        self.telemetry_link: str | None = None
        self.spans: SpansFromEvents | None = None  # questions of other processes: their spans, made here
        self.view = view
        self.watcher: BatchWatcher | None = None

    # -- watching: the live view -----------------------------------------------------------------------------------
    def _open_watcher(self) -> None:
        if self.view is False:
            return
        if self.view is not True:
            self.watcher = self.view
            return
        make = _batch_view
        if make is None:
            return
        try:
            self.watcher = make([query for _, query in self.questions], dict(self.done.results))
        except Exception as exc:  # a view that cannot start must not stop the batch
            _view_failed(exc)

    def _close_watcher(self, results: list[RLMResult] | None) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            try:
                watcher.close(results)
            except Exception as exc:
                _view_failed(exc)

    def _tell(self, method: str, index: int, value: Event | RLMResult | None) -> None:
        watcher = self.watcher
        if watcher is None:
            return
        try:
            getattr(watcher, method)(index, value)
        except Exception as exc:  # a broken view must not break the batch: it is let go
            self.watcher = None
            _view_failed(exc)

    def _event(self, index: int, event: Event | None) -> None:
        if self.spans is not None:
            self.spans(index, event)
        self._tell("event", index, event)

    def _ended(self, index: int, future: concurrent.futures.Future[RLMResult]) -> None:
        self._tell("finished", index, self._result(index, future))

    def run(self) -> list[RLMResult]:
        """Every question to its end. An interrupt cancels them all and raises BatchInterrupted carrying every
        result once they unwound (at most STOP_GRACE_S): the finished ones whole, the others as far as they got."""
        self._open_watcher()
        results = None
        try:
            results = self._run()
        except BatchInterrupted as stop:
            results = stop.results
            raise
        finally:
            self._close_watcher(results)
        return results

    def _run(self) -> list[RLMResult]:
        todo = [i for i in range(len(self.questions)) if i not in self.done.results]
        executor = self.executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(todo) or 1), thread_name_prefix="rlm-batch"
        )
        futures: dict[int, concurrent.futures.Future[RLMResult]] = {}
        telemetry = contextlib.ExitStack()  # the batch's span, which each question's own trace links to
        plugin = self.rlm.local.telemetry
        if plugin is not None:
            self.telemetry_link = telemetry.enter_context(plugin.batch(len(self.questions)))
            if not self.in_process:
                self.spans = SpansFromEvents(plugin, self.telemetry_link)
        try:
            jobs = {i: self._job(i) for i in todo}  # after the batch's span opened: questions carry its link
            if self.cluster is not None:
                self.cluster.check_sendable([job for job in jobs.values() if isinstance(job, Question)])
            futures = {i: self._submit(executor, i, job) for i, job in jobs.items()}
            for index, future in futures.items():
                future.add_done_callback(functools.partial(self.done.keep, index))
                if self.watcher is not None:
                    future.add_done_callback(functools.partial(self._ended, index))
            while not all(f.done() for f in futures.values()):  # in slices, so that an interrupt is seen at once
                concurrent.futures.wait(futures.values(), timeout=WAIT_SLICE_S)
        except KeyboardInterrupt:
            self.cancel()
            for future in futures.values():
                future.cancel()
            concurrent.futures.wait(futures.values(), timeout=STOP_GRACE_S)
            raise BatchInterrupted(self._results(futures)) from None
        finally:
            if self.executor is None:
                executor.shutdown(wait=not self.cancelled.is_set(), cancel_futures=True)
            telemetry.close()
        for index, future in futures.items():  # a future's callbacks may still be running when its waiter wakes
            self.done.keep(index, future)
        results = self._results(futures)
        for result in results:
            self.usage.add(result.usage)
        return results

    async def arun(self) -> list[RLMResult]:
        """`run`, awaited; cancelling it raises BatchCancelled (an asyncio.CancelledError) carrying every result.
        The view opens and closes in the awaiting thread (a notebook's own), the batch runs in another."""
        self._open_watcher()
        results = None
        try:
            results = await self._arun()
        except BatchCancelled as stop:
            results = stop.results
            raise
        finally:
            self._close_watcher(results)
        return results

    async def _arun(self) -> list[RLMResult]:
        task = asyncio.get_running_loop().run_in_executor(run_pool(), self._run)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self.cancel()
            try:
                results = await asyncio.wait_for(task, STOP_GRACE_S)
            except BatchInterrupted as stop:
                results = stop.results
            except (asyncio.TimeoutError, asyncio.CancelledError):
                results = [
                    self.done.results.get(i) or failed(q, "interrupted", "interrupted")
                    for i, (_, q) in enumerate(self.questions)
                ]
            raise BatchCancelled(results) from None

    def _results(self, futures: Mapping[int, concurrent.futures.Future[RLMResult]]) -> list[RLMResult]:
        """Every question's result in order: kept from an earlier run, finished now, or interrupted."""
        return [self._result(index, futures.get(index)) for index in range(len(self.questions))]

    def _result(self, index: int, future: concurrent.futures.Future[RLMResult] | None) -> RLMResult:
        query = self.questions[index][1]
        if future is None or not future.done() or future.cancelled():
            kept = self.done.results.get(index)
            return kept or failed(query, "interrupted before it finished", "interrupted")
        if future.exception() is not None:
            return failed(query, f"{type(future.exception()).__name__}: {future.exception()}")
        return future.result()

    def _submit(
        self, executor: concurrent.futures.Executor, index: int, job: Callable[[], RLMResult]
    ) -> concurrent.futures.Future[RLMResult]:
        """A question of another process is watched when its executor sends its events back as they happen."""
        watched = self.watcher is not None or self.spans is not None
        if watched and isinstance(job, Question) and isinstance(executor, StreamsEvents):
            return executor.submit_question(job, functools.partial(self._event, index))
        return executor.submit(job)

    def cancel(self) -> None:
        self.cancelled.set()
        for scope in self.scopes:
            scope.cancel()
        for running in list(self.running):
            running.stop()

    def _job(self, index: int) -> Callable[[], RLMResult]:
        context, query = self.questions[index]
        if not self.in_process:
            return Question(
                self.rlm.config, context, query, self.answer_type, self.budget, self.slots, self.telemetry_link
            )
        return lambda: self._one(index)

    def _one(self, index: int) -> RLMResult:
        context, query = self.questions[index]
        if self.cancelled.is_set():
            return failed(query, "cancelled before it started")
        rlm = self.rlm
        own = Ledger(rlm.config.limits)
        local = rlm.local
        if self.watcher is not None:  # this question's events, tagged with its index (each run numbers its nodes n0...)
            self._event(index, None)
            local = dataclasses.replace(local, on_event=[*local.on_event, functools.partial(self._event, index)])
        with Deadline(math.inf, raises=RunCancelled) as stoppable:
            self.running.append(stoppable)
            if self.cancelled.is_set():  # cancelled between the check above and now
                stoppable.stop()
            return _answered(
                query,
                lambda: run_question(
                    rlm.config,
                    context,
                    query,
                    local=local,
                    budget=own if self.budget is None else JointBudget(own, self.budget),
                    slots=self.slots,
                    new_repl=rlm.new_repl,
                    answer_type=self.answer_type,
                    scope=self.scopes[index],
                    telemetry_link=self.telemetry_link,
                ),
            )


_view_said = threading.Event()


def _view_failed(exc: Exception) -> None:
    """A batch's view failed: said once a process, on stderr; the batch goes on without it."""
    if not _view_said.is_set():
        _view_said.set()
        print(f"rlm_kernel: the batch's view failed: {exc!r}", file=sys.stderr)


def _answered(query: str, ask: Callable[[], RLMResult]) -> RLMResult:
    """The question's result, also when it was interrupted (partial) or could not run (its error)."""
    try:
        return ask()
    except RunInterrupted as stop:
        return stop.result
    except RLMError as exc:
        return failed(query, str(exc))


def _pair(question: Any, index: int) -> tuple[object, str]:
    try:
        context, query = question
    except (TypeError, ValueError):
        raise ConfigError(f"question {index} is not a (context, query) pair: {question!r:.80}") from None
    if not isinstance(query, str):
        raise ConfigError(f"question {index}: the query must be a string, not {type(query).__name__}")
    return context, query
