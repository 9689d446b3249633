"""RLM: ask a question about a context of any size. A thin facade: it resolves its settings into a RunConfig
(core/config.py) once, and every question runs through core/run.py's run_question; the loop is core/node.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from rlm_kernel.core.aio import CancelScope
from rlm_kernel.core.approve import Approver
from rlm_kernel.core.batch import Batch, BatchWatcher, resolve_executor, run_pool
from rlm_kernel.core.clients import Models, pricing_warnings
from rlm_kernel.core.config import RunConfig
from rlm_kernel.core.custom_tools import Tools, check_tools
from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.fanout import SharedByProcesses
from rlm_kernel.core.lm import LM
from rlm_kernel.core.repl import REPL
from rlm_kernel.core.repl import repl_factory as repl_factory_of
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.run import Local, run_question
from rlm_kernel.core.session import Session
from rlm_kernel.core.settings import BY_NAME
from rlm_kernel.core.telemetry import telemetry_for
from rlm_kernel.core.trace import EventHandler
from rlm_kernel.core.typed import AnswerType


class RLM:
    """A Recursive Language Model: ask a question about a context of any size.

    `max_depth` counts RLM levels: 1 gives a root with plain sub-model calls
    (`rlm_query` degrades to `llm_query`), 2 lets the root start child RLMs,
    and so on. Every call of the tree draws on one ledger of limits.

    Every run setting is described in rlm_kernel.core.settings (`rlm run --help` lists them
    too); a setting left as None takes its environment variable (RLM_MODEL, RLM_API_KEY, ...)
    when it has one. Beyond the settings: `on_event` (callables that receive every event),
    `approve` may be a callable `(code, node_id, depth) -> bool`, `router` (a litellm Router
    model list), `lm` (any object with the LM protocol) and `repl_factory` (a callable that
    returns a fresh REPL for each node), `tools` (the user's functions, a list or a dict of name to
    function, put in every node's REPL and described in its system prompt), `executor` (where the children of
    `rlm_query_batched` run: "ray" or a RayExecutor runs each as a Ray task, charged to the run's one budget and
    bounded by its concurrency across workers; default: threads of this process). The settings, resolved, are
    `rlm.config` (a RunConfig, which pickles); `rlm.models` are its model clients in this process.
    """

    def __init__(
        self,
        model: str | None,
        sub_model: str | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        max_depth: int = 1,
        max_iterations: int = 20,
        max_llm_calls: int | None = None,
        max_tokens: int | None = None,
        max_cost_usd: float | None = None,
        max_seconds: float | None = None,
        max_output_chars: int = 10_000,
        concurrency: int = 16,
        on_event: EventHandler | Iterable[EventHandler] | None = None,
        *,
        sub_api_base: str | None = None,
        sub_api_key: str | None = None,
        transport: str = "auto",
        tls_verify: bool = True,
        ca_bundle: str | None = None,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        sub_window: int | None = None,
        stream: bool = False,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        model_params: Mapping[str, Any] | None = None,
        sub_temperature: float | None = None,
        sub_top_p: float | None = None,
        sub_seed: int | None = None,
        sub_model_params: Mapping[str, Any] | None = None,
        child_max_iterations: int | None = None,
        max_output_tokens: int = 4096,
        cell_timeout: float | None = None,
        call_timeout: float = 120.0,
        retries: int = 3,
        retry_backoff: float = 0.5,
        max_retry_wait: float = 60.0,
        approve: bool | Approver = False,
        isolation: str | None = None,
        isolation_limits: Mapping[str, float | None] | None = None,
        sub_calls: bool = True,
        instructions: str | None = None,
        cache: str | None = None,
        cache_max_mb: float = 1024.0,
        session_tokens: int = 4000,
        trace_path: str | None = None,
        telemetry: str | None = None,
        tools: Tools | None = None,
        router: list[dict[str, Any]] | None = None,
        lm: LM | None = None,
        repl_factory: Callable[[], REPL] | None = None,
        executor: concurrent.futures.Executor | str | None = None,
    ) -> None:
        given = {name: value for name, value in locals().items() if name in BY_NAME}
        given["approve"] = approve if isinstance(approve, bool) else True
        self.config = RunConfig.from_settings(given, tools=check_tools(tools), router=router, own_lm=lm is not None)
        self.models = Models.connect(self.config, lm)
        self.on_event = [on_event] if callable(on_event) else list(on_event or [])
        self.telemetry = telemetry_for(self.config.telemetry)  # a plug-in (the package root's), or None: nothing loaded
        self.approve = approve
        self._repl_factory = repl_factory or repl_factory_of(self.config)  # an unusable isolation mode fails here
        self.executor = _fanout_executor(executor, lm, approve)

    @property
    def transports(self) -> dict[str, str]:
        """Which way each model is called, as the trace records it ("lm" when the caller passed its own)."""
        return dict(self.config.recorded["transports"])

    def sub_input_window(self, model: str) -> int | None:
        """Input tokens a sub-call to `model` may send: `sub_window`, else litellm's model info (None: unknown)."""
        return self.models.sub_input_window(self.config, model)

    def pricing_warnings(self) -> list[str]:
        """Why `max_cost_usd` cannot bind: one line per model of the run that has no price (none without a budget)."""
        return pricing_warnings(self.config, self.models)

    @property
    def local(self) -> Local:
        """What runs of this RLM use in this process besides its config: model clients, event handlers, approver."""
        approver = None if isinstance(self.approve, bool) else self.approve
        return Local(self.models, self.on_event, approver, self.telemetry, self.executor)

    def completion(
        self,
        context: object,
        query: str,
        *,
        repl: REPL | None = None,
        answer_type: Any = None,
        history: str | None = None,
    ) -> RLMResult:
        """Answer `query` about `context`. Raises RunInterrupted (a KeyboardInterrupt) with the partial result.

        `answer_type`: a type (int, list[str], a dataclass, a pydantic model) the answer must fit; a
        submission that does not fit goes back to the model with the reason, and `result.answer` is a T.
        `history`: what the root is told of earlier questions first (a session's memory, which a replay
        of a session's later question passes as recorded); `session()` keeps it for you.
        """
        return self._ask(context, query, repl, CancelScope(), _typed(answer_type), history)

    async def acompletion(
        self, context: object, query: str, *, repl: REPL | None = None, answer_type: Any = None
    ) -> RLMResult:
        # Model code runs synchronously, so the loop runs in a worker thread (not the default pool, which
        # has only a few on a small machine); model calls stay async.
        scope = CancelScope()
        call = functools.partial(self._ask, context, query, repl, scope, _typed(answer_type), None)
        try:
            return await asyncio.get_running_loop().run_in_executor(run_pool(), call)
        except asyncio.CancelledError:
            scope.cancel()
            raise

    def batch(
        self,
        questions: Iterable[tuple[object, str]],
        *,
        concurrency: int | None = None,
        answer_type: Any = None,
        executor: concurrent.futures.Executor | str | None = None,
        results_path: str | Path | None = None,
        view: bool | BatchWatcher = True,
        **batch_limits: float | None,
    ) -> list[RLMResult]:
        """Answer many `(context, query)` pairs at once; results in order, each with its own status and usage.

        `concurrency` (default: the setting) bounds the questions and the model calls in flight, all together.
        Each question has the RLM's own budgets; `max_llm_calls`, `max_tokens`, `max_cost_usd` and
        `max_seconds` given here are one budget for the whole batch. `executor` runs the questions (default: a
        pool of `concurrency` threads of this process; "ray": a Ray cluster); see core/batch.py for one of other
        processes. An interrupt raises BatchInterrupted, whose `.results` hold every question's result so far;
        `results_path` keeps finished results as they come, and a re-run with it asks only the others.
        In a notebook (the rlm_kernel extension loaded) a live view shows the batch as it runs, then its static
        page: questions queued / running / done / failed, calls, tokens, cost, elapsed time, each question's call
        tree; `view=False` leaves it out, and any `BatchWatcher` given as `view` watches instead.
        """
        batch = Batch(
            self, questions, concurrency, answer_type, batch_limits, executor, results_path=results_path, view=view
        )
        return batch.run()

    async def abatch(
        self,
        questions: Iterable[tuple[object, str]],
        *,
        concurrency: int | None = None,
        answer_type: Any = None,
        executor: concurrent.futures.Executor | str | None = None,
        results_path: str | Path | None = None,
        view: bool | BatchWatcher = True,
        **batch_limits: float | None,
    ) -> list[RLMResult]:
        """`batch`, awaitable; cancelling it cancels every question and raises BatchCancelled with `.results`."""
        batch = Batch(
            self, questions, concurrency, answer_type, batch_limits, executor, results_path=results_path, view=view
        )
        return await batch.arun()

    def session(self, *, repl: REPL | None = None) -> Session:
        """Questions that remember: one REPL namespace and the conversation so far, across `session.completion` calls."""
        return Session(self, repl=repl)

    def new_repl(self) -> REPL:
        """A fresh namespace for a node: `repl_factory`'s, an isolated one, or a plain in-process namespace."""
        return self._repl_factory()

    def _ask(
        self,
        context: object,
        query: str,
        repl: REPL | None,
        scope: CancelScope,
        answer_type: AnswerType | None,
        history: str | None,
    ) -> RLMResult:
        return run_question(
            self.config,
            context,
            query,
            local=self.local,
            repl=repl,
            new_repl=self.new_repl,
            history=history,
            answer_type=answer_type,
            scope=scope,
        )


def _fanout_executor(
    executor: concurrent.futures.Executor | str | None, lm: LM | None, approve: bool | Approver
) -> SharedByProcesses | None:
    """The executor a run's `rlm_query_batched` children run on: one of other processes that gives the run a budget
    and call slots they reach (executor="ray"); None: threads of this process."""
    resolved = resolve_executor(executor)
    if resolved is None:
        return None
    if not isinstance(resolved, SharedByProcesses):
        raise ConfigError(f"executor={executor!r} cannot run child RLMs: it gives them no budget or slots to share")
    if lm is not None:
        raise ConfigError("child RLMs on another executor need a model they can reach: a model name, not RLM(lm=...)")
    if approve:
        raise ConfigError("child RLMs on another executor cannot ask for approval here: leave approve off")
    return resolved


def _typed(answer_type: Any) -> AnswerType | None:
    return None if answer_type is None else AnswerType(answer_type)
