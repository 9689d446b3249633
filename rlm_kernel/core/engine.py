"""The RLM loop: the root model writes code against `context`, reads its output, and recurses."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import itertools
import random
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rlm_kernel.core.aio import CancelScope, RunCancelled
from rlm_kernel.core.approve import DECLINED, Approver, console_approver
from rlm_kernel.core.capture import truncate
from rlm_kernel.core.context import check_context, context_metadata, make_helpers
from rlm_kernel.core.errors import BudgetExhausted, ModelError, RunInterrupted, SubmitAnswer, TransientModelError
from rlm_kernel.core.ledger import Ledger, Limits, Usage
from rlm_kernel.core.lm import LM, Completion, LiteLLM, Messages
from rlm_kernel.core.openai_compatible import OpenAICompatibleLM
from rlm_kernel.core.parsing import ParsedReply, find_text_final, parse_reply
from rlm_kernel.core.prompts import (
    NO_CODE_MESSAGE,
    Capabilities,
    continue_message,
    first_user_message,
    out_of_iterations_message,
    system_prompt,
)
from rlm_kernel.core.redact import Redactor
from rlm_kernel.core.repl import REPL, ExecResult, NamespaceREPL, raise_in_thread
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import Event, EventHandler, JSONLWriter, Trace
from rlm_kernel.core.values import describe_value

NO_OUTPUT = "(no output: print what you need)"
PROMPT_PREVIEW_CHARS = 500
ANSWER_RECORD_CHARS = 100_000
_MISSING = object()
# Keyword arguments of rlm_kernel.isolation.KernelREPL that RLM(isolation_limits=...) passes on.
ISOLATION_LIMITS = ("memory_limit", "cpu_seconds", "file_size_limit")


class RLM:
    """A Recursive Language Model: ask a question about a context of any size.

    `max_depth` counts RLM levels: 1 gives a root with plain sub-model calls
    (`rlm_query` degrades to `llm_query`), 2 lets the root start child RLMs,
    and so on. Every call of the tree draws on one ledger of limits.

    Models are called through litellm (any provider). `transport="direct"`
    posts to the OpenAI-compatible `api_base` itself, skipping litellm's
    per-call CPU work: for large fan-outs against a local server.
    """

    def __init__(
        self,
        model: str,
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
        child_max_iterations: int | None = None,
        max_output_tokens: int = 4096,
        approve: bool | Approver = False,
        isolation: str | None = None,
        isolation_limits: Mapping[str, float | None] | None = None,
        cell_timeout: float | None = None,
        call_timeout: float = 120.0,
        retries: int = 3,
        retry_backoff: float = 0.5,
        trace_path: str | None = None,
        router: list[dict[str, Any]] | None = None,
        transport: str = "litellm",
        lm: LM | None = None,
    ) -> None:
        if max_depth < 1 or max_iterations < 1 or concurrency < 1:
            raise ValueError("max_depth, max_iterations and concurrency must be at least 1")
        self.model = model
        self.sub_model = sub_model or model
        self.max_depth = max_depth
        self.max_iterations = max_iterations
        self.child_max_iterations = child_max_iterations or max(3, max_iterations // 2)
        self.limits = Limits(max_llm_calls, max_tokens, max_cost_usd, max_seconds)
        self.max_output_chars = max_output_chars
        self.max_output_tokens = max_output_tokens  # per-call output cap, applied only under a token or cost budget
        self.concurrency = concurrency
        self.cell_timeout = cell_timeout
        self.call_timeout = call_timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.trace_path = trace_path
        self.on_event = [on_event] if callable(on_event) else list(on_event or [])
        self.api_key = api_key
        self.approve = approve
        if isolation not in (None, "kernel"):
            raise ValueError(f"isolation must be None or 'kernel', not {isolation!r}")
        self.isolation = isolation
        unknown = set(isolation_limits or {}) - set(ISOLATION_LIMITS)
        if unknown:
            raise ValueError(f"unknown isolation limits {sorted(unknown)}; known: {', '.join(ISOLATION_LIMITS)}")
        self.isolation_limits = dict(isolation_limits or {})
        self.lm: LM = lm or _make_lm(transport, api_base, api_key, router)

    def completion(self, context: object, query: str, *, repl: REPL | None = None) -> RLMResult:
        """Answer `query` about `context`. Raises RunInterrupted (a KeyboardInterrupt) with the partial result."""
        return self._complete(context, query, repl, CancelScope())

    async def acompletion(self, context: object, query: str, *, repl: REPL | None = None) -> RLMResult:
        # Model code runs synchronously, so the loop runs in a worker thread; model calls stay async.
        scope = CancelScope()
        try:
            return await asyncio.to_thread(self._complete, context, query, repl, scope)
        except asyncio.CancelledError:
            scope.cancel()
            raise

    def new_repl(self) -> REPL:
        """A fresh namespace for a node: in process, or in its own limited kernel when isolated."""
        if self.isolation == "kernel":
            # Imported here: the isolated kernel needs jupyter_client, which core does not import otherwise.
            from rlm_kernel.isolation import KernelREPL

            return KernelREPL(
                cell_timeout=self.cell_timeout, max_output_chars=self.max_output_chars, **self.isolation_limits
            )  # type: ignore[arg-type]
        return NamespaceREPL(cell_timeout=self.cell_timeout, max_output_chars=self.max_output_chars)

    def _complete(self, context: object, query: str, repl: REPL | None, scope: CancelScope) -> RLMResult:
        check_context(context)
        approver = console_approver() if self.approve is True else self.approve or None
        tree = _Tree(self, scope, approver)
        own_repl = repl is None
        repl = repl or self.new_repl()
        root = _Node(
            self,
            tree,
            context,
            query,
            depth=0,
            parent_id=None,
            repl=repl,
            model=self.model,
            max_iterations=self.max_iterations,
        )
        try:
            outcome = root.run()
        except (KeyboardInterrupt, RunCancelled):
            scope.cancel()
            tree.stop_approval()
            tree.close_open_nodes()
            raise RunInterrupted(
                tree.result(query, _Outcome("interrupted", root.partial_answer(), "interrupted"))
            ) from None
        finally:
            tree.close()
            if own_repl:
                _close(repl)
        return tree.result(query, outcome)


@dataclass
class _Outcome:
    status: str
    answer: Any = None
    error: str | None = None
    limit: str | None = None


class _Tree:
    """What every node of one call tree shares: the ledger, the cancel scope, the event stream."""

    def __init__(self, rlm: RLM, scope: CancelScope, approver: Approver | None = None) -> None:
        self.ledger = Ledger(rlm.limits)
        self.approver = approver
        self._approval_lock = threading.Lock()  # children ask from their threads: one question at a time
        self._approving: int | None = None  # the thread waiting for the user's answer
        self.redactor = Redactor([rlm.api_key])
        self.scope = scope
        self.trace = Trace()
        self.started = time.perf_counter()
        self.semaphore = asyncio.Semaphore(rlm.concurrency)
        self._ids = {"n": itertools.count(), "s": itertools.count()}  # nodes n0, n1...; sub-calls s0, s1...
        self._emit_lock = threading.Lock()
        self._writer = JSONLWriter(rlm.trace_path) if rlm.trace_path else None
        self._handlers: list[EventHandler] = [self.trace.add, *([self._writer] if self._writer else []), *rlm.on_event]
        self.closed = False
        self.handler_errors: list[str] = []

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids[prefix])}"

    def emit(self, kind: str, node_id: str, parent_id: str | None, /, **data: Any) -> None:
        event = Event(kind, node_id, parent_id, self.redactor.data(data))
        with self._emit_lock:
            for handler in self._handlers:
                try:
                    handler(event)
                except Exception as exc:  # a broken view must not break the run
                    if not self.handler_errors:
                        print(f"rlm_kernel: event handler failed: {exc!r}", file=sys.stderr)
                    self.handler_errors.append(repr(exc))

    def approves(self, code: str, node_id: str, depth: int) -> bool:
        if self.approver is None:
            return True
        with self._approval_lock:
            if self.scope.cancelled.is_set():
                raise RunCancelled()
            self._approving = threading.get_ident()
            try:
                return bool(self.approver(code, node_id, depth))
            finally:
                self._approving = None

    def stop_approval(self) -> None:
        """An interrupt reaches only the main thread: a child waiting for the user's answer is stopped here."""
        waiting = self._approving
        if waiting is not None and waiting != threading.main_thread().ident:
            raise_in_thread(waiting, RunCancelled)

    def close_open_nodes(self) -> None:
        for node in list(self.trace.nodes.values()):
            if node.status == "running":
                self.emit(
                    "call_end",
                    node.id,
                    node.parent_id,
                    status="interrupted",
                    error="interrupted",
                    seconds=time.perf_counter() - self.started,
                )
        self.closed = True

    def close(self) -> None:
        self.closed = True
        if self._writer:
            self._writer.close()

    def result(self, query: str, outcome: _Outcome) -> RLMResult:
        return RLMResult(
            answer=outcome.answer,
            status=outcome.status,
            usage=self.ledger.snapshot(),
            trace=self.trace,
            seconds=time.perf_counter() - self.started,
            error=outcome.error,
            limit=outcome.limit,
            query=query,
        )


class AnswerDict(dict):  # type: ignore[type-arg]
    """The `answer` variable: setting answer["ready"] to a true value submits answer["content"]."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        if key == "ready" and value:
            raise SubmitAnswer(self.get("content"), "answer")


class _Node:
    """One RLM call: a model, a REPL, a context, a question."""

    def __init__(
        self,
        rlm: RLM,
        tree: _Tree,
        context: object,
        query: str,
        *,
        depth: int,
        parent_id: str | None,
        repl: REPL,
        model: str,
        max_iterations: int,
    ) -> None:
        self.rlm, self.tree, self.context, self.query = rlm, tree, context, query
        self.depth, self.parent_id, self.repl, self.model = depth, parent_id, repl, model
        self.max_iterations = max_iterations
        self.id = tree.new_id("n")
        self.answer = AnswerDict(content="", ready=False)
        self.capabilities = Capabilities(
            depth=depth,
            max_depth=rlm.max_depth,
            max_iterations=max_iterations,
            max_output_chars=rlm.max_output_chars,
            sub_model=rlm.sub_model,
            limits=rlm.limits,
            concurrency=rlm.concurrency,
            cell_timeout=rlm.cell_timeout,
        )
        self.tools: dict[str, Any] = {}
        self._delta_start = 2  # the system and first user messages travel in call_start

    def emit(self, kind: str, /, **data: Any) -> None:
        self.tree.emit(kind, self.id, self.parent_id, **data)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> _Outcome:
        started = time.perf_counter()
        description = context_metadata(self.context)
        self._install_tools()
        messages: Messages = [
            {"role": "system", "content": system_prompt(self.capabilities)},
            {"role": "user", "content": first_user_message(self.query, description.describe())},
        ]
        self.emit(
            "call_start",
            depth=self.depth,
            model=self.model,
            query=self.query,
            context=description.to_dict(),
            system_prompt=messages[0]["content"],
            user_prompt=messages[1]["content"],
        )
        try:
            outcome = self._iterate(messages)
        except BudgetExhausted as exc:
            outcome = _Outcome("budget", self.partial_answer(), str(exc), exc.limit)
        except ModelError as exc:
            outcome = _Outcome("error", self.partial_answer(), f"model call failed: {exc}")
        except (KeyboardInterrupt, RunCancelled):
            self._end(_Outcome("interrupted", self.partial_answer(), "interrupted"), started)
            raise
        self._end(outcome, started)
        return outcome

    def _iterate(self, messages: Messages) -> _Outcome:
        for i in range(self.max_iterations):
            sent = len(messages)
            completion = self.call_model(messages)
            parsed = parse_reply(completion.text)
            messages.append({"role": "assistant", "content": parsed.kept})
            self._emit_iteration(i, completion, parsed, messages[self._delta_start : sent])
            self._delta_start = len(messages)
            observations, submitted, failed = self._run_blocks(i, parsed.blocks)
            if submitted is not None:
                return _Outcome("done", submitted.value)
            text_final = None if failed else find_text_final(parsed.prose)
            if text_final is not None:
                if text_final.kind == "FINAL":
                    return _Outcome("done", text_final.argument)
                value = self.repl.get(text_final.argument, _MISSING)
                if value is not _MISSING:
                    return _Outcome("done", value)
                observations.append(f"FINAL_VAR({text_final.argument}): there is no such variable; assign it first.")
            observation = "\n\n".join(observations) if observations else NO_CODE_MESSAGE
            messages.append({"role": "user", "content": continue_message(observation, i, self.max_iterations)})
        return self._out_of_iterations(messages)

    def _out_of_iterations(self, messages: Messages) -> _Outcome:
        why = f"no answer submitted within max_iterations={self.max_iterations}"
        partial = self.partial_answer()
        if partial is not None:
            return _Outcome("max_iterations", partial, why)
        messages.append({"role": "user", "content": out_of_iterations_message(self.max_iterations)})
        completion = self.call_model(messages)
        parsed = parse_reply(completion.text)
        parsed.blocks = []  # nothing runs after the last call
        self._emit_iteration(self.max_iterations, completion, parsed, messages[self._delta_start :])
        text_final = find_text_final(parsed.prose)
        if text_final is not None and text_final.kind == "FINAL":
            return _Outcome("max_iterations", text_final.argument, why)
        if text_final is not None:
            value = self.repl.get(text_final.argument, _MISSING)
            if value is not _MISSING:
                return _Outcome("max_iterations", value, why)
        return _Outcome("max_iterations", parsed.prose.strip() or None, why)

    def _run_blocks(self, iteration: int, blocks: list[str]) -> tuple[list[str], SubmitAnswer | None, bool]:
        observations: list[str] = []
        failed = False
        for index, code in enumerate(blocks):
            before = self._snapshot()
            left = self.tree.ledger.seconds_left()
            if self.tree.approves(code, self.id, self.depth):
                result = self.repl.execute(code, None if left is None else max(left, 0.001))
            else:
                result = ExecResult(stdout=DECLINED)
            submitted = result.submitted or self._restore_tools()
            created, rebound = _diff(before, self._snapshot())
            output = self.tree.redactor.text(truncate(result.observation(), self.rlm.max_output_chars))
            self.emit(
                "code_result",
                iteration=iteration,
                index=index,
                code=code,
                output=output,
                error=result.error,
                seconds=result.seconds,
                created=created,
                rebound=rebound,
                submitted=submitted is not None,
            )
            label = f"[block {index + 1} of {len(blocks)}]\n" if len(blocks) > 1 else ""
            observations.append(label + (output or NO_OUTPUT) + self._variables_note(created + rebound))
            failed = failed or result.error is not None
            if submitted is not None:
                return observations, submitted, failed
        return observations, None, failed

    def _emit_iteration(self, index: int, completion: Completion, parsed: ParsedReply, new_messages: Messages) -> None:
        """`new_messages`: what was added to the history since the last call (deltas, never the whole list)."""
        self.emit(
            "iteration",
            index=index,
            reply=completion.text,
            kept=None if parsed.kept == completion.text else parsed.kept,
            new_messages=new_messages,
            blocks=len(parsed.blocks),
            fabricated_output=parsed.fabricated_output,
            model=completion.model,
            usage=completion.usage.to_dict(),
            seconds=completion.seconds,
        )

    def _end(self, outcome: _Outcome, started: float) -> None:
        if self.tree.closed:  # the run already closed this node as interrupted
            return
        answer = None if outcome.answer is None else truncate(str(outcome.answer), ANSWER_RECORD_CHARS)
        self.emit(
            "call_end",
            status=outcome.status,
            answer=answer,
            error=outcome.error,
            limit=outcome.limit,
            seconds=time.perf_counter() - started,
        )

    def partial_answer(self) -> Any:
        content = self.answer.get("content")
        return None if content in (None, "") else content

    # -- model calls --------------------------------------------------------------------

    def call_model(self, messages: Messages, model: str | None = None) -> Completion:
        return self.tree.scope.run(self.acall_model(messages, model or self.model))

    async def acall_model(self, messages: Messages, model: str) -> Completion:
        """One model call with retries; every attempt is charged to the tree's ledger."""
        rlm, ledger = self.rlm, self.tree.ledger
        messages = [{**m, "content": self.tree.redactor.text(str(m["content"]))} for m in messages]
        estimate = rlm.lm.estimate_tokens(messages)
        in_rate = out_rate = 0.0
        if rlm.limits.max_cost_usd is not None:
            in_rate, out_rate = rlm.lm.price(model, 1, 0) or 0.0, rlm.lm.price(model, 0, 1) or 0.0
        for attempt in itertools.count():
            # Reserve inside the semaphore, so calls queued behind it hold no budget.
            async with self.tree.semaphore:
                while (reservation := ledger.reserve(estimate, rlm.max_output_tokens, in_rate, out_rate)) is None:
                    await asyncio.sleep(0.01)  # it fits once in-flight calls settle
                left = ledger.seconds_left()
                timeout = rlm.call_timeout if left is None else max(0.01, min(rlm.call_timeout, left))
                try:
                    completion = await rlm.lm.acomplete(
                        messages, model=model, max_output_tokens=reservation.output_cap, timeout=timeout
                    )
                except TransientModelError as exc:
                    ledger.settle(reservation, Usage())
                    failure = exc
                except BaseException:
                    ledger.settle(reservation, Usage())
                    raise
                else:
                    ledger.settle(reservation, completion.usage)
                    return completion
            if attempt >= rlm.retries:
                raise ModelError(f"{failure} (gave up after {attempt + 1} attempts)") from None
            await asyncio.sleep(rlm.retry_backoff * 2**attempt * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    async def _asub_llm(self, prompt: str, model: str | None) -> str:
        """A plain sub-model call; failures come back as text so one bad slot spoils nothing."""
        model = model or self.rlm.sub_model
        prompt = self.tree.redactor.text(prompt)
        sub_id = self.tree.new_id("s")
        self.emit(
            "subcall_start",
            subcall_id=sub_id,
            kind="llm",
            model=model,
            prompt_preview=prompt[:PROMPT_PREVIEW_CHARS],
            prompt_chars=len(prompt),
            prompt_sha256=hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest(),
        )
        started = time.perf_counter()
        usage, error = Usage(), None
        try:
            completion = await self.acall_model([{"role": "user", "content": prompt}], model)
            reply, usage = completion.text, completion.usage
        except BudgetExhausted as exc:
            reply = error = str(exc)
        except ModelError as exc:
            reply = error = f"Error: sub-model call failed: {exc}"
        except asyncio.CancelledError:
            self.emit(
                "subcall_end",
                subcall_id=sub_id,
                error="cancelled",
                usage=usage.to_dict(),
                seconds=time.perf_counter() - started,
            )
            raise
        self.emit(
            "subcall_end",
            subcall_id=sub_id,
            reply=reply,
            error=error,
            usage=usage.to_dict(),
            seconds=time.perf_counter() - started,
        )
        return reply

    # -- functions in the REPL ----------------------------------------------------------------

    def _install_tools(self) -> None:
        def llm_query(prompt: str, model: str | None = None) -> str:
            """Ask a sub-model one question; it sees only `prompt`."""
            return self.tree.scope.run(self._asub_llm(str(prompt), model))

        def llm_query_batched(prompts: list[str], model: str | None = None) -> list[str]:
            """Ask many prompts concurrently; replies in order, a failed slot holds its error text."""

            async def gather() -> list[str]:
                return list(await asyncio.gather(*(self._asub_llm(str(p), model) for p in prompts)))

            return self.tree.scope.run(gather())

        def rlm_query(context: object, query: str, model: str | None = None) -> Any:
            """Start a child RLM on `context` with its own question; returns its answer."""
            if not self.capabilities.can_recurse:
                return llm_query(f"{query}\n\n{_as_text(context)}", model)
            return self._child(context, str(query), model)

        def rlm_query_batched(pairs: Iterable[tuple[object, str]], model: str | None = None) -> list[Any]:
            """Run `[(context, query), ...]` as child RLMs in parallel; answers in order."""
            pairs = [tuple(p) for p in pairs]
            if not self.capabilities.can_recurse:
                return llm_query_batched([f"{q}\n\n{_as_text(c)}" for c, q in pairs], model)
            return self._children(pairs, model)

        def FINAL(value: Any) -> None:  # noqa: N802 - the protocol's name
            """Submit `value` as the answer; the run ends."""
            raise SubmitAnswer(value, "FINAL")

        def FINAL_VAR(name: Any) -> None:  # noqa: N802
            """Submit the variable called `name` as the answer; the run ends."""
            if not isinstance(name, str):
                raise SubmitAnswer(name, "FINAL_VAR")
            value = self.repl.get(name, _MISSING)
            if value is _MISSING:
                raise NameError(
                    f"FINAL_VAR: there is no variable named {name!r}; assign it first, or submit a value with FINAL(value)"
                )
            raise SubmitAnswer(value, "FINAL_VAR")

        def SHOW_VARS() -> str:  # noqa: N802
            """The variables you have made, with their types and sizes."""
            names = [n for n in self.repl.names() if n not in self.tools and not n.startswith("_")]
            return "\n".join(f"{n}: {describe_value(self.repl.get(n))}" for n in sorted(names)) or "(no variables yet)"

        self.tools = {
            "context": self.context,
            **make_helpers(self.context),
            "llm_query": llm_query,
            "llm_query_batched": llm_query_batched,
            "rlm_query": rlm_query,
            "rlm_query_batched": rlm_query_batched,
            "FINAL": FINAL,
            "FINAL_VAR": FINAL_VAR,
            "SHOW_VARS": SHOW_VARS,
            "answer": self.answer,
        }
        for name, value in self.tools.items():
            self.repl.set(name, value)

    def _restore_tools(self) -> SubmitAnswer | None:
        """Put back reserved names the model rebound; a rebound answer dict with ready=True submits."""
        submitted = None
        for name, value in self.tools.items():
            current = self.repl.get(name, _MISSING)
            if current is value:
                continue
            if name == "answer" and isinstance(current, dict) and current.get("ready"):
                submitted = SubmitAnswer(current.get("content"), "answer")
            self.repl.set(name, value)
        return submitted

    def _child(self, context: object, query: str, model: str | None) -> Any:
        check_context(context)
        rlm = self.rlm
        repl = rlm.new_repl()
        child = _Node(
            rlm,
            self.tree,
            context,
            query,
            depth=self.depth + 1,
            parent_id=self.id,
            repl=repl,
            model=model or rlm.sub_model,
            max_iterations=rlm.child_max_iterations,
        )
        sub_id = self.tree.new_id("s")
        self.emit(
            "subcall_start",
            subcall_id=sub_id,
            kind="rlm",
            child_id=child.id,
            model=child.model,
            prompt_preview=query[:PROMPT_PREVIEW_CHARS],
            prompt_chars=len(query),
        )
        started = time.perf_counter()
        try:
            outcome = child.run()
        finally:
            _close(repl)
        usage = self.tree.trace.subtree_usage(child.id)
        reply = outcome.answer if outcome.status in ("done", "max_iterations") and outcome.answer is not None else None
        self.emit(
            "subcall_end",
            subcall_id=sub_id,
            reply=None if reply is None else truncate(str(reply), ANSWER_RECORD_CHARS),
            error=outcome.error,
            usage=usage.to_dict(),
            seconds=time.perf_counter() - started,
        )
        if reply is None:
            return f"Error: the child RLM stopped ({outcome.status}): {outcome.error}"
        return reply

    def _children(self, pairs: list[tuple[Any, ...]], model: str | None) -> list[Any]:
        def one(pair: tuple[Any, ...]) -> Any:
            try:
                context, query = pair
                return self._child(context, str(query), model)
            except (KeyboardInterrupt, RunCancelled):
                raise
            except Exception as exc:
                return f"Error: {type(exc).__name__}: {exc}"

        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(self.rlm.concurrency, len(pairs) or 1), thread_name_prefix=f"rlm-{self.id}"
        )
        try:
            futures = [pool.submit(one, pair) for pair in pairs]
            return [self.tree.scope.wait(f) for f in futures]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _snapshot(self) -> dict[str, int]:
        return {n: v for n, v in self.repl.snapshot().items() if n not in self.tools and not n.startswith("_")}

    def _variables_note(self, names: list[str]) -> str:
        if not names:
            return ""
        described = ", ".join(f"{n} ({describe_value(self.repl.get(n))})" for n in names[:20])
        return f"\n[variables set: {described}{', ...' if len(names) > 20 else ''}]"


def _make_lm(transport: str, api_base: str | None, api_key: str | None, router: list[dict[str, Any]] | None) -> LM:
    if transport == "litellm":
        return LiteLLM(api_base=api_base, api_key=api_key, router=router)
    if transport != "direct":
        raise ValueError(f"transport must be 'litellm' or 'direct', not {transport!r}")
    if not api_base or router is not None:
        raise ValueError("transport='direct' posts to one OpenAI-compatible server: it needs api_base and no router")
    return OpenAICompatibleLM(api_base=api_base, api_key=api_key)


def _close(repl: REPL) -> None:
    """Release a REPL the engine made (an isolated kernel); an in-process namespace has nothing to release."""
    close = getattr(repl, "close", None)
    if close is not None:
        close()


def _diff(before: dict[str, int], after: dict[str, int]) -> tuple[list[str], list[str]]:
    created = [n for n in after if n not in before]
    rebound = [n for n in after if n in before and before[n] != after[n]]
    return created, rebound


def _as_text(context: object) -> str:
    return context if isinstance(context, str) else repr(context)
