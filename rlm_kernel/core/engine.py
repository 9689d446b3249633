"""RLM: ask a question about a context of any size. The loop itself is core/node.py."""

from __future__ import annotations

import asyncio
import functools
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rlm_kernel.core.aio import CancelScope, RunCancelled
from rlm_kernel.core.approve import Approver, console_approver
from rlm_kernel.core.batch import Batch, run_pool
from rlm_kernel.core.cache import with_cache
from rlm_kernel.core.context import check_context
from rlm_kernel.core.custom_tools import Tools, check_tools
from rlm_kernel.core.errors import ConfigError, RunInterrupted, UnpricedModelWarning
from rlm_kernel.core.ledger import Ledger, Limits
from rlm_kernel.core.lm import LM, LiteLLM
from rlm_kernel.core.node import Node
from rlm_kernel.core.openai_compatible import OpenAICompatibleLM, picks_direct
from rlm_kernel.core.repl import REPL, NamespaceREPL, isolation_factory
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.session import Session
from rlm_kernel.core.settings import BY_NAME, resolve
from rlm_kernel.core.trace import EventHandler
from rlm_kernel.core.tree import CallTree, Outcome
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
    function, put in every node's REPL and described in its system prompt).
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
        approve: bool | Approver = False,
        isolation: str | None = None,
        isolation_limits: Mapping[str, float | None] | None = None,
        sub_calls: bool = True,
        instructions: str | None = None,
        cache: str | None = None,
        session_tokens: int = 4000,
        trace_path: str | None = None,
        tools: Tools | None = None,
        router: list[dict[str, Any]] | None = None,
        lm: LM | None = None,
        repl_factory: Callable[[], REPL] | None = None,
    ) -> None:
        given = {name: value for name, value in locals().items() if name in BY_NAME}
        given["approve"] = approve if isinstance(approve, bool) else True
        self.settings = s = resolve(given)
        if s["model"] is None:
            raise ConfigError("no model: pass model=, or set RLM_MODEL")
        self.model: str = s["model"]
        self.sub_model: str = s["sub_model"] or self.model
        self.max_depth: int = s["max_depth"]
        self.max_iterations: int = s["max_iterations"]
        self.child_max_iterations: int = s["child_max_iterations"] or max(3, self.max_iterations // 2)
        self.limits = Limits(s["max_llm_calls"], s["max_tokens"], s["max_cost_usd"], s["max_seconds"])
        self.max_output_chars: int = s["max_output_chars"]
        self.max_output_tokens: int = s["max_output_tokens"]  # per-call cap, applied only under a token or cost budget
        self.concurrency: int = s["concurrency"]
        self.cell_timeout: float | None = s["cell_timeout"]
        self.call_timeout: float = s["call_timeout"]
        self.retries: int = s["retries"]
        self.retry_backoff: float = s["retry_backoff"]
        self.trace_path: str | None = s["trace_path"]
        self.api_key: str | None = s["api_key"]
        self.sub_api_key: str | None = s["sub_api_key"]
        self.isolation: str | None = s["isolation"]
        self.isolation_limits: dict[str, Any] = s["isolation_limits"] or {}
        self.sub_calls: bool = s["sub_calls"]
        self.instructions: str | None = s["instructions"]
        self.session_tokens: int = s["session_tokens"]
        self.tools = check_tools(tools)
        self.on_event = [on_event] if callable(on_event) else list(on_event or [])
        self.approve = approve
        self.root_params = _sampling(s["temperature"], s["top_p"], s["seed"], s["model_params"])
        self.sub_params = _sampling(
            _either(s["sub_temperature"], s["temperature"]),
            _either(s["sub_top_p"], s["top_p"]),
            _either(s["sub_seed"], s["seed"]),
            _either(s["sub_model_params"], s["model_params"]),
        )
        # An unknown isolation mode, or one that cannot work on this machine, fails here, before any model call.
        isolated = isolation_factory(self.isolation) if self.isolation is not None and repl_factory is None else None
        self._repl_factory = repl_factory
        self._isolated_factory = isolated
        self.sub_window: int | None = s["sub_window"]
        self._windows: dict[str, int | None] = {}
        self.stream: bool = s["stream"]
        prices = s["prices"]
        sub_base, sub_key = s["sub_api_base"] or s["api_base"], s["sub_api_key"] or s["api_key"]
        root_transport = _transport(s["transport"], self.model, s["api_base"], router)
        sub_transport = _transport(s["transport"], self.sub_model, sub_base, router)
        # Which way each model is called, as the trace records it ("lm" when the caller passed its own).
        self.transports = {"model": root_transport, "sub_model": sub_transport} if lm is None else {"model": "lm"}
        plain = lm or _make_lm(root_transport, s["api_base"], s["api_key"], router, prices, "api_key")
        self.lm: LM = with_cache(plain, s["cache"], getattr(plain, "api_base", None))
        separate_sub = lm is None and (
            s["sub_api_base"] is not None or s["sub_api_key"] is not None or sub_transport != root_transport
        )
        self.sub_lm: LM = (
            with_cache(_make_lm(sub_transport, sub_base, sub_key, router, prices, "sub_api_key"), s["cache"], sub_base)
            if separate_sub
            else self.lm
        )

    def sub_input_window(self, model: str) -> int | None:
        """Input tokens a sub-call to `model` may send: `sub_window`, else litellm's model info (None: unknown)."""
        if self.sub_window is not None:
            return self.sub_window
        if model not in self._windows:
            window = getattr(self.sub_lm, "input_window", None)
            self._windows[model] = window(model) if callable(window) else None
        return self._windows[model]

    def pricing_warnings(self) -> list[str]:
        """Why `max_cost_usd` cannot bind: one line per model of the run that has no price (none without a budget)."""
        if self.limits.max_cost_usd is None:
            return []
        pairs = [(self.model, self.lm), (self.sub_model, self.sub_lm)]
        unpriced = list(dict.fromkeys(model for model, lm in pairs if lm.price(model, 1, 1) is None))
        return [
            f"max_cost_usd={self.limits.max_cost_usd:g} cannot bind: litellm has no price for {model}; give one with "
            f'prices={{"{model}": {{"input": <$ per 1M tokens>, "output": <$ per 1M tokens>}}}} '
            "(rlm run --prices, %config RLMMagics.prices) or litellm.register_model"
            for model in unpriced
        ]

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
        return self._complete(context, query, repl, CancelScope(), answer_type=_typed(answer_type), history=history)

    async def acompletion(
        self, context: object, query: str, *, repl: REPL | None = None, answer_type: Any = None
    ) -> RLMResult:
        # Model code runs synchronously, so the loop runs in a worker thread (not the default pool, which
        # has only a few on a small machine); model calls stay async.
        scope = CancelScope()
        call = functools.partial(self._complete, context, query, repl, scope, answer_type=_typed(answer_type))
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
        **batch_limits: float | None,
    ) -> list[RLMResult]:
        """Answer many `(context, query)` pairs at once; results in order, each with its own status and usage.

        `concurrency` (default: the setting) bounds the questions and the model calls in flight, all together.
        Each question has the RLM's own budgets; `max_llm_calls`, `max_tokens`, `max_cost_usd` and
        `max_seconds` given here are one budget for the whole batch.
        """
        return Batch(self, questions, concurrency, _typed(answer_type), batch_limits).run()

    async def abatch(
        self,
        questions: Iterable[tuple[object, str]],
        *,
        concurrency: int | None = None,
        answer_type: Any = None,
        **batch_limits: float | None,
    ) -> list[RLMResult]:
        """`batch`, awaitable; cancelling it cancels every question."""
        return await Batch(self, questions, concurrency, _typed(answer_type), batch_limits).arun()

    def session(self, *, repl: REPL | None = None) -> Session:
        """Questions that remember: one REPL namespace and the conversation so far, across `session.completion` calls."""
        return Session(self, repl=repl)

    def new_repl(self) -> REPL:
        """A fresh namespace for a node: `repl_factory`'s, an isolated one, or a plain in-process namespace."""
        if self._repl_factory is not None:
            return self._repl_factory()
        if self._isolated_factory is not None:
            limits = self.isolation_limits
            return self._isolated_factory(
                cell_timeout=self.cell_timeout, max_output_chars=self.max_output_chars, **limits
            )
        return NamespaceREPL(cell_timeout=self.cell_timeout, max_output_chars=self.max_output_chars)

    def _complete(
        self,
        context: object,
        query: str,
        repl: REPL | None,
        scope: CancelScope,
        *,
        answer_type: AnswerType | None = None,
        history: str | None = None,
        ledger: Ledger | None = None,
        semaphore: asyncio.Semaphore | None = None,
    ) -> RLMResult:
        check_context(context)
        for warning in self.pricing_warnings():
            warnings.warn(warning, UnpricedModelWarning, stacklevel=3)
        approver = console_approver() if self.approve is True else None if self.approve is False else self.approve
        tree = CallTree(self, scope, approver, ledger=ledger, semaphore=semaphore)
        own_repl = repl is None
        repl = repl or self.new_repl()
        root = Node(
            self,
            tree,
            context,
            query,
            depth=0,
            parent_id=None,
            repl=repl,
            model=self.model,
            max_iterations=self.max_iterations,
            history=history,
            answer_type=answer_type,
        )
        try:
            outcome = root.run()
        except (KeyboardInterrupt, RunCancelled):
            scope.cancel()
            tree.stop_approval()
            left = tree.stop_children()
            tree.close_open_nodes()
            tree.close()
            partial = Outcome("interrupted", root.partial_answer(), "interrupted")
            raise RunInterrupted(tree.result(query, partial, left)) from None
        except BaseException:
            tree.close()
            raise
        finally:
            if own_repl:
                repl.close()
        # The run's whole tree ends with it: children a block left running are stopped, and no model call
        # starts after this returns (the scope refuses them); a thread blocked in C code is reported.
        scope.cancel(wait=False)  # the run's time is not spent on calls it no longer needs
        left = tree.stop_children()
        tree.close_open_nodes("the run ended before this call did")
        tree.close()
        return tree.result(query, outcome, left)


def _typed(answer_type: Any) -> AnswerType | None:
    return None if answer_type is None else AnswerType(answer_type)


def _either(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _sampling(temperature: float | None, top_p: float | None, seed: int | None, extra: Any) -> dict[str, Any]:
    """The sampling parameters sent with each call; unset ones are left to the provider."""
    named = {"temperature": temperature, "top_p": top_p, "seed": seed}
    return {**(extra or {}), **{k: v for k, v in named.items() if v is not None}}


def _transport(setting: str, model: str, api_base: str | None, router: list[dict[str, Any]] | None) -> str:
    """The transport a model is called through: the setting, with "auto" resolved for this model and server."""
    if setting != "auto":
        return setting
    return "direct" if picks_direct(model, api_base, router) else "litellm"


def _make_lm(
    transport: str,
    api_base: str | None,
    api_key: str | None,
    router: list[dict[str, Any]] | None,
    prices: Mapping[str, Any] | None,
    key_setting: str,
) -> LM:
    if transport == "litellm":
        return LiteLLM(api_base=api_base, api_key=api_key, router=router, prices=prices, key_setting=key_setting)
    if not api_base or router is not None:
        raise ConfigError("transport='direct' posts to one OpenAI-compatible server: it needs api_base and no router")
    return OpenAICompatibleLM(api_base=api_base, api_key=api_key, prices=prices, key_setting=key_setting)
