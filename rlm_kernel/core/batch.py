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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rlm_kernel.core.aio import WAIT_SLICE_S, CancelScope
from rlm_kernel.core.clients import pricing_warnings
from rlm_kernel.core.config import RunConfig
from rlm_kernel.core.errors import ConfigError, RLMError, RunInterrupted, UnpricedModelWarning
from rlm_kernel.core.ledger import Budget, JointBudget, Ledger, Limits, Usage
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.run import Asker, run_question
from rlm_kernel.core.slots import CallSlots, Slots
from rlm_kernel.core.trace import Trace
from rlm_kernel.core.typed import AnswerType

BATCH_LIMITS = ("max_llm_calls", "max_tokens", "max_cost_usd", "max_seconds")
RUN_POOL_THREADS = 256  # threads start only as runs need them

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def run_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads `acompletion` runs model code in: asyncio's default pool has min(32, cores + 4)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(RUN_POOL_THREADS, thread_name_prefix="rlm-run")
        return _pool


def failed(query: str, error: str) -> RLMResult:
    """The result of a question that could not start (a context the engine refuses, bad settings)."""
    return RLMResult(None, "error", Usage(), Trace(), 0.0, error=error, query=query)


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

    def __call__(self) -> RLMResult:
        budget = None if self.shared is None else JointBudget(Ledger(self.config.limits), self.shared)
        return _answered(
            self.query,
            lambda: run_question(
                self.config, self.context, self.query, budget=budget, slots=self.slots, answer_type=self.answer_type
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
        executor: concurrent.futures.Executor | None = None,
        *,
        budget: Budget | None = None,
        slots: Slots | None = None,
    ) -> None:
        """`budget`: the batch's own (default: a Ledger of `limits`, when any is given); `slots`: the call slots every
        question shares (default: CallSlots of `concurrency` in this process, none for another process's questions)."""
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
        self.budget = budget or (Ledger(Limits(**given)) if given else None)  # type: ignore[arg-type]
        if "max_cost_usd" in given:  # as one run warns of its own limit
            for warning in pricing_warnings(rlm.config, rlm.local.models, given["max_cost_usd"]):
                warnings.warn(warning, UnpricedModelWarning, stacklevel=3)
        self.executor = executor
        # Threads of this process share its memory: the in-process budget, slots, clients and event handlers.
        self.in_process = executor is None or isinstance(executor, concurrent.futures.ThreadPoolExecutor)
        if not self.in_process and isinstance(self.budget, Ledger):
            raise ConfigError(
                "batch-wide limits with this executor need a budget that its processes reach: "
                "pass Batch(..., budget=...), or give the limits to the RLM (each question's own)"
            )
        self.slots = slots or (CallSlots(self.concurrency) if self.in_process else None)
        self.scopes = [CancelScope() for _ in self.questions]
        self.cancelled = threading.Event()
        self.usage = Usage()  # the whole batch, filled in when it ends
        self.telemetry_link: str | None = None

    def run(self) -> list[RLMResult]:
        """Every question to its end; an interrupt cancels them all and is raised again once they unwound."""
        executor = self.executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(self.questions) or 1), thread_name_prefix="rlm-batch"
        )
        telemetry = contextlib.ExitStack()  # the batch's span, which each question's own trace links to
        plugin = self.rlm.local.telemetry
        if plugin is not None:
            self.telemetry_link = telemetry.enter_context(plugin.batch(len(self.questions)))
        try:
            futures = [executor.submit(self._job(i)) for i in range(len(self.questions))]
            try:
                while not all(f.done() for f in futures):  # in slices, so that an interrupt is seen at once
                    concurrent.futures.wait(futures, timeout=WAIT_SLICE_S)
            except KeyboardInterrupt:
                self.cancel()
                for future in futures:
                    future.cancel()
                raise
            results = [f.result() for f in futures]
        finally:
            if self.executor is None:
                executor.shutdown(wait=not self.cancelled.is_set(), cancel_futures=True)
            telemetry.close()
        for result in results:
            self.usage.add(result.usage)
        return results

    async def arun(self) -> list[RLMResult]:
        try:
            return await asyncio.get_running_loop().run_in_executor(run_pool(), self.run)
        except asyncio.CancelledError:
            self.cancel()
            raise

    def cancel(self) -> None:
        self.cancelled.set()
        for scope in self.scopes:
            scope.cancel()

    def _job(self, index: int) -> Callable[[], RLMResult]:
        context, query = self.questions[index]
        if not self.in_process:
            return Question(self.rlm.config, context, query, self.answer_type, self.budget, self.slots)
        return lambda: self._one(index)

    def _one(self, index: int) -> RLMResult:
        context, query = self.questions[index]
        if self.cancelled.is_set():
            return failed(query, "cancelled before it started")
        rlm = self.rlm
        own = Ledger(rlm.config.limits)
        return _answered(
            query,
            lambda: run_question(
                rlm.config,
                context,
                query,
                local=rlm.local,
                budget=own if self.budget is None else JointBudget(own, self.budget),
                slots=self.slots,
                new_repl=rlm.new_repl,
                answer_type=self.answer_type,
                scope=self.scopes[index],
                telemetry_link=self.telemetry_link,
            ),
        )


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
