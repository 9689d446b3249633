"""Many questions at once: `RLM.batch([(context, query), ...])` and `await RLM.abatch(...)`.

One bound covers the whole batch: at most `concurrency` questions run at once (each in a thread of the
batch's own pool, since model code is synchronous) and at most `concurrency` model calls are in flight,
sub-calls included (one semaphore shared by every question's tree). Results come back in order, each with
its own status, usage and trace. Each question keeps the RLM's own budgets; limits given to the batch are
one more ledger that every question's calls are also charged to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlm_kernel.core.aio import WAIT_SLICE_S, CancelScope
from rlm_kernel.core.errors import BudgetExhausted, ConfigError, RLMError, RunInterrupted
from rlm_kernel.core.ledger import Ledger, Limits, Reservation, Usage
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import Trace

if TYPE_CHECKING:
    from rlm_kernel.core.engine import RLM
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


@dataclass
class _Linked(Reservation):
    shared: Reservation | None = None


class BatchLedger(Ledger):
    """One question's ledger that also charges the batch's: a call goes out only when both have room."""

    def __init__(self, limits: Limits, batch: Ledger) -> None:
        super().__init__(limits)
        self.batch = batch

    def seconds_left(self) -> float | None:
        left = [s for s in (super().seconds_left(), self.batch.seconds_left()) if s is not None]
        return min(left) if left else None

    def reserve(
        self, input_tokens: int, max_output: int, input_rate: float = 0.0, output_rate: float = 0.0
    ) -> Reservation | None:
        own = super().reserve(input_tokens, max_output, input_rate, output_rate)
        if own is None:
            return None
        cap = max_output if own.output_cap is None else own.output_cap
        try:
            shared = self.batch.reserve(input_tokens, cap, input_rate, output_rate)
        except BudgetExhausted as exc:
            super().release(own)
            self.stopped_by = self.stopped_by or exc.limit
            raise
        if shared is None:
            super().release(own)
            return None
        caps = [c for c in (own.output_cap, shared.output_cap) if c is not None]
        return _Linked(own.tokens, own.cost_usd, min(caps) if caps else None, shared=shared)

    def settle(self, reservation: Reservation, actual: Usage) -> None:
        if isinstance(reservation, _Linked) and reservation.shared is not None:
            self.batch.settle(reservation.shared, actual)
        super().settle(reservation, actual)

    def record_cached(self) -> None:
        super().record_cached()
        self.batch.record_cached()


def failed(query: str, error: str) -> RLMResult:
    """The result of a question that could not start (a context the engine refuses, bad settings)."""
    return RLMResult(None, "error", Usage(), Trace(), 0.0, error=error, query=query)


class Batch:
    def __init__(
        self,
        rlm: RLM,
        questions: Iterable[tuple[object, str]],
        concurrency: int | None,
        answer_type: AnswerType | None,
        limits: Mapping[str, float | None],
    ) -> None:
        self.rlm, self.answer_type = rlm, answer_type
        self.questions = [_pair(q, i) for i, q in enumerate(questions)]
        self.concurrency = rlm.concurrency if concurrency is None else concurrency
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ConfigError(f"concurrency must be a whole number of at least 1, not {self.concurrency!r}")
        unknown = set(limits) - set(BATCH_LIMITS)
        if unknown:
            raise ConfigError(f"unknown batch limits {sorted(unknown)}; known: {', '.join(BATCH_LIMITS)}")
        given = {k: v for k, v in limits.items() if v is not None}
        self.ledger = Ledger(Limits(**given)) if given else None  # type: ignore[arg-type]
        self.scopes = [CancelScope() for _ in self.questions]
        self.cancelled = threading.Event()
        self.usage = Usage()  # the whole batch, filled in when it ends
        self.telemetry_link: str | None = None

    def run(self) -> list[RLMResult]:
        """Every question to its end; an interrupt cancels them all and is raised again once they unwound."""
        semaphore = asyncio.Semaphore(self.concurrency)
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(self.questions) or 1), thread_name_prefix="rlm-batch"
        )
        telemetry = contextlib.ExitStack()  # the batch's span, which each question's own trace links to
        if self.rlm.telemetry is not None:
            self.telemetry_link = telemetry.enter_context(self.rlm.telemetry.batch(len(self.questions)))
        try:
            futures = [pool.submit(self._one, i, semaphore) for i in range(len(self.questions))]
            try:
                while not all(f.done() for f in futures):  # in slices, so that an interrupt is seen at once
                    concurrent.futures.wait(futures, timeout=WAIT_SLICE_S)
            except KeyboardInterrupt:
                self.cancel()
                raise
            results = [f.result() for f in futures]
        finally:
            pool.shutdown(wait=not self.cancelled.is_set(), cancel_futures=True)
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

    def _one(self, index: int, semaphore: asyncio.Semaphore) -> RLMResult:
        context, query = self.questions[index]
        if self.cancelled.is_set():
            return failed(query, "cancelled before it started")
        ledger = BatchLedger(self.rlm.limits, self.ledger) if self.ledger is not None else None
        try:
            return self.rlm._complete(
                context,
                query,
                None,
                self.scopes[index],
                answer_type=self.answer_type,
                ledger=ledger,
                semaphore=semaphore,
                telemetry_link=self.telemetry_link,
            )
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
