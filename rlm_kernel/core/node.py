"""One RLM call: the model replies, its code blocks run in the node's REPL, the output goes back, until an answer."""

from __future__ import annotations

import concurrent.futures
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from rlm_kernel.core.aio import RunCancelled
from rlm_kernel.core.answers import MISSING
from rlm_kernel.core.approve import DECLINED
from rlm_kernel.core.calls import TextStream, call_with_retries
from rlm_kernel.core.capture import truncate
from rlm_kernel.core.context import check_context, context_metadata, shared_view
from rlm_kernel.core.custom_tools import awaiting, describe_tools, tool_sources
from rlm_kernel.core.deadlines import Deadline, shielded
from rlm_kernel.core.errors import AnswerMismatch, BudgetExhausted, ModelError, SubmitAnswer
from rlm_kernel.core.ledger import BUDGET_NUDGE, Usage
from rlm_kernel.core.lm import LM, Completion, Messages
from rlm_kernel.core.lm.support import sub_capacity_chars
from rlm_kernel.core.parsing import ParsedReply, TextFinal, find_text_final, parse_reply
from rlm_kernel.core.prompts import (
    NO_CODE_MESSAGE,
    Capabilities,
    child_stopped_message,
    continue_message,
    first_user_message,
    out_of_iterations_message,
    system_prompt,
)
from rlm_kernel.core.repl import REPL, ExecResult, contained
from rlm_kernel.core.tools import PROMPT_PREVIEW_CHARS, AnswerDict, make_tools
from rlm_kernel.core.trace import EVENT_SCHEMA
from rlm_kernel.core.tree import CallTree, Outcome
from rlm_kernel.core.typed import AnswerType
from rlm_kernel.core.values import describe_value

NO_OUTPUT = "(no output: print what you need)"
ANSWER_RECORD_CHARS = 100_000
CALL_GRACE_S = 0.25  # past the time budget, how long a model call's own timeout may take to end it


class Node:
    """One RLM call: a model, a REPL, a context, a question; children are Nodes of the same tree."""

    def __init__(
        self,
        tree: CallTree,
        context: object,
        query: str,
        *,
        depth: int,
        parent_id: str | None,
        repl: REPL,
        model: str | None = None,
        node_id: str | None = None,
        history: str | None = None,
        answer_type: AnswerType | None = None,
    ) -> None:
        config = self.config = tree.config
        loop, sub = config.loop, config.sub
        # Model code gets a read-only view of the caller's object, never a copy: a child handed the same
        # context shares it, and no node's code can change what another node (or the caller) sees.
        self.tree, self.context, self.query = tree, shared_view(context), query
        self.depth, self.parent_id, self.repl = depth, parent_id, repl
        # The root talks to the root model's server; children, like sub-calls, to the sub-model's.
        spec = config.root if depth == 0 else sub
        self.model, self.params = model or spec.model, spec.params
        self.lm: LM = tree.models.root if depth == 0 else tree.models.sub
        self.max_iterations = loop.max_iterations if depth == 0 else loop.child_max_iterations
        self.history = history  # a session's earlier questions and answers, told before the question
        self.answer_type = answer_type
        self.id = node_id or tree.new_id("n")
        self.answer = AnswerDict(content="", ready=False)
        self.capabilities = Capabilities(
            depth=depth,
            max_depth=loop.max_depth,
            max_iterations=self.max_iterations,
            max_output_chars=loop.max_output_chars,
            sub_model=sub.model,
            limits=config.limits,
            concurrency=loop.concurrency,
            cell_timeout=loop.cell_timeout,
            sub_capacity_chars=sub_capacity_chars(tree.models.sub_input_window(config, sub.model)),
            tools=describe_tools(config.tool_functions),
            instructions=loop.instructions,
            answer_shape=None if answer_type is None else answer_type.shape(),
            sub_calls=loop.sub_calls,
        )
        self.tools: dict[str, Any] = {}
        self._block: tuple[int, int] | None = None  # (iteration, block) of the code now running
        self._delta_start = 2  # the system and first user messages travel in call_start
        self._made: set[str] = set()  # names this node's finished blocks bound
        self._before_block: dict[str, int] | None = None  # the namespace as the running block found it

    def emit(self, kind: str, /, **data: Any) -> None:
        self.tree.emit(kind, self.id, self.parent_id, **data)

    def current_block(self) -> dict[str, int | None]:
        """Which of this node's code blocks is running: sub-calls record it, so no consumer has to infer it."""
        iteration, block = self._block or (None, None)
        return {"iteration": iteration, "block": block}

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> Outcome:
        started = time.perf_counter()
        description = context_metadata(self.context)
        tools = self.config.tool_functions
        self.tools = {**make_tools(self), **awaiting(tools, self.tree.scope.run)}
        for name, value in self.tools.items():
            self.repl.set(name, value)
        messages: Messages = [
            {"role": "system", "content": system_prompt(self.capabilities)},
            {"role": "user", "content": first_user_message(self.query, description.describe(), self.history)},
        ]
        self.emit(
            "call_start",
            schema=EVENT_SCHEMA,
            depth=self.depth,
            model=self.model,
            query=self.query,
            context=description.to_dict(),
            system_prompt=messages[0]["content"],
            user_prompt=messages[1]["content"],
            max_iterations=self.max_iterations,
            **({"answer_type": self.answer_type.name} if self.answer_type else {}),
            **({"history": self.history} if self.history else {}),
            **({"tools": tool_sources(tools)} if self.depth == 0 and tools else {}),
            **({"settings": dict(self.config.recorded)} if self.depth == 0 else {}),
        )
        try:
            outcome = self._iterate(messages)
        except BudgetExhausted as exc:
            outcome = Outcome("budget", self.partial_answer(), str(exc).removesuffix(f" {BUDGET_NUDGE}"), exc.limit)
        except ModelError as exc:
            outcome = Outcome("error", self.partial_answer(), f"model call failed: {exc}")
        except (KeyboardInterrupt, RunCancelled):
            self._end(Outcome("interrupted", self.partial_answer(), "interrupted"), started)
            raise
        finally:
            # the tools refer back to this node: a cycle that kept its context alive until the collector's next pass
            self.tools = {}
        if self.answer_type is not None and outcome.status != "done":
            outcome.answer, outcome.error = self.answer_type.fitted(outcome.answer, outcome.error)
        self._end(outcome, started)
        return outcome

    def _iterate(self, messages: Messages) -> Outcome:
        for i in range(self.max_iterations):
            sent = len(messages)
            completion = self.call_model(messages, i)
            parsed = parse_reply(completion.text)
            messages.append({"role": "assistant", "content": parsed.kept})
            self._emit_iteration(i, completion, parsed, messages[self._delta_start : sent])
            self._delta_start = len(messages)
            observations, submitted, failed = self._run_blocks(i, parsed.blocks)
            if submitted is not None:
                return Outcome("done", submitted.value)
            if parsed.fabricated_output:
                observations.append(_fabrication_note(parsed.dropped_blocks))
            text_final = None if failed else find_text_final(parsed.prose)
            if text_final is not None:
                value, source = self._text_final_value(text_final)
                if value is not MISSING:
                    value, mismatch = self._typed(value)
                    if mismatch is None:
                        return Outcome("done", value, answer_from=source)
                    observations.append(mismatch)
                else:
                    observations.append(
                        f"FINAL_VAR({text_final.argument}): there is no such variable; assign it first."
                    )
            observation = "\n\n".join(observations) if observations else NO_CODE_MESSAGE
            messages.append({"role": "user", "content": continue_message(observation, i, self.max_iterations)})
        return self._out_of_iterations(messages)

    def _out_of_iterations(self, messages: Messages) -> Outcome:
        why = f"no answer submitted within max_iterations={self.max_iterations}"
        partial = self.partial_answer()
        if partial is not None:
            return Outcome("max_iterations", partial, why)
        messages.append({"role": "user", "content": out_of_iterations_message(self.max_iterations)})
        completion = self.call_model(messages, self.max_iterations)
        parsed = parse_reply(completion.text)
        parsed.blocks = []  # nothing runs after the last call
        self._emit_iteration(self.max_iterations, completion, parsed, messages[self._delta_start :])
        text_final = find_text_final(parsed.prose)
        value, source = (MISSING, None) if text_final is None else self._text_final_value(text_final)
        if value is not MISSING:
            return Outcome("max_iterations", value, why, answer_from=source)
        return Outcome("max_iterations", parsed.prose.strip() or None, why)

    def _text_final_value(self, text_final: TextFinal) -> tuple[Any, str | None]:
        """What a prose FINAL submits: FINAL(x), x a variable of the REPL, is x's value as in code (gpt-4o writes it)."""
        if text_final.kind == "FINAL_VAR":
            return self.repl.get(text_final.argument, MISSING), None
        name = text_final.name
        value = MISSING if name is None or name in self.tools else self.repl.get(name, MISSING)
        if value is MISSING:
            return text_final.argument, None
        return value, f"FINAL({name}) in prose: the value of the REPL variable {name}"

    def _run_blocks(self, iteration: int, blocks: list[str]) -> tuple[list[str], SubmitAnswer | None, bool]:
        observations: list[str] = []
        failed = False
        for index, code in enumerate(blocks):
            before = self._before_block = self._snapshot()
            left = self.tree.budget.seconds_left()
            self._block = (iteration, index)
            try:
                if self.tree.approves(code, self.id, self.depth):
                    result = self.repl.execute(code, None if left is None else max(left, 0.001))
                else:
                    result = ExecResult(stdout=DECLINED)
            except (KeyboardInterrupt, RunCancelled):
                # The block that was running when the run stopped stays in the trace, marked as interrupted.
                self._emit_code_result(iteration, index, code, ExecResult(error="interrupted"), [], [], False)
                raise
            finally:
                self._block = None
            submitted = result.submitted or self._restore_tools()
            if submitted is not None:
                submitted.value, mismatch = self._typed(submitted.value)
                if mismatch is not None:  # not accepted: the model hears why, and the run goes on
                    submitted, result.error = None, mismatch
            self._before_block = None
            created, rebound = _diff(before, self._snapshot())
            self._made.update(created + rebound)
            output = self._emit_code_result(iteration, index, code, result, created, rebound, submitted is not None)
            label = f"[block {index + 1} of {len(blocks)}]\n" if len(blocks) > 1 else ""
            observations.append(label + (output or NO_OUTPUT) + self._variables_note(created + rebound))
            failed = failed or result.error is not None
            if submitted is not None:
                return observations, submitted, failed
        return observations, None, failed

    def _emit_code_result(
        self,
        iteration: int,
        index: int,
        code: str,
        result: ExecResult,
        created: list[str],
        rebound: list[str],
        submitted: bool,
    ) -> str:
        """Record one block's result; returns the output as the model sees it."""
        redact = self.tree.redactor.text
        output = redact(truncate(result.observation(), self.config.loop.max_output_chars))
        self.emit(
            "code_result",
            iteration=iteration,
            index=index,
            code=code,
            output=output,
            stdout=redact(result.stdout),
            stderr=redact(result.stderr),
            value=None if result.value is None else redact(result.value),
            error=result.error,
            seconds=result.seconds,
            created=created,
            rebound=rebound,
            submitted=submitted,
        )
        return output

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

    def _end(self, outcome: Outcome, started: float) -> None:
        if self.tree.closed:  # the run already closed this node as interrupted
            return
        answer = None if outcome.answer is None else answer_text(outcome.answer)
        self.emit(
            "call_end",
            status=outcome.status,
            answer=answer,
            error=outcome.error,
            limit=outcome.limit,
            seconds=time.perf_counter() - started,
            **({"answer_from": outcome.answer_from} if outcome.answer_from else {}),
        )

    def _typed(self, value: Any) -> tuple[Any, str | None]:
        """The submitted value as the answer type, or the message that says why it does not fit."""
        if self.answer_type is None:
            return value, None
        try:
            return self.answer_type.convert(value), None
        except AnswerMismatch as exc:
            return value, self.answer_type.mismatch_message(exc)

    def partial_answer(self) -> Any:
        content = self.answer.get("content")
        return None if content in (None, "") else content

    # -- model calls --------------------------------------------------------------------

    def call_model(self, messages: Messages, iteration: int) -> Completion:
        """A reply of this node's model: `model_wait` before each attempt; streamed as model_text when the run streams."""
        stream = TextStream(self.emit, iteration, self.tree.redactor) if self.config.loop.stream else None

        def waiting(attempt: int) -> None:
            self.emit("model_wait", iteration=iteration, model=self.model, attempt=attempt)

        call = self.acall_model(messages, self.model, lm=self.lm, params=self.params, stream=stream, on_attempt=waiting)
        left = self.tree.budget.seconds_left()
        try:  # the call's own timeouts run on the loop: if the loop is held up, the time budget still ends the wait
            completion = self.tree.scope.run(call, None if left is None else max(left, 0.0) + CALL_GRACE_S)
        except TimeoutError:
            self.tree.budget.check_time()
            raise ModelError(f"{self.model} sent no reply in time") from None
        if stream is not None:
            stream.flush()
        return completion

    async def acall_model(
        self,
        messages: Messages,
        model: str,
        *,
        lm: LM,
        params: Mapping[str, Any],
        on_attempt: Callable[[int], None] | None = None,
        stream: TextStream | None = None,
    ) -> Completion:
        """One model call with retries, charged to the tree's budget (core/calls.py)."""
        return await call_with_retries(self.tree, messages, model, lm, params, on_attempt, stream)

    # -- the REPL's reserved names and child RLMs ----------------------------------------------

    def _restore_tools(self) -> SubmitAnswer | None:
        """Put back the functions the model rebound; a rebound `answer` is the model's to keep.

        A dict bound to `answer` becomes the answer dict (with ready=True it submits now, and a later
        answer["ready"] = True submits its content); any other value stays, so FINAL_VAR(answer) finds it.
        """
        submitted = None
        for name, value in self.tools.items():
            current = self.repl.get(name, MISSING)
            if current is value:
                continue
            if name != "answer":
                self.repl.set(name, value)
            elif isinstance(current, dict) and current.get("ready"):
                submitted = SubmitAnswer(current.get("content"), "answer")  # the run ends: nothing to put back
            elif isinstance(current, dict):
                self.answer = AnswerDict(current)
                self.tools["answer"] = self.answer
                self.repl.set("answer", self.answer)
        return submitted

    def child(self, context: object, query: str, model: str | None) -> Any:
        """Run a child RLM one level deeper, in its own REPL; its answer, or its error as text."""
        return self._run_child(*self._queue_child(context, query, model))

    def _queue_child(self, context: object, query: str, model: str | None) -> tuple[object, str, str, str, str]:
        """Name a child and announce its sub-call (the views show it queued until its call_start)."""
        check_context(context)
        child_id, sub_id, model = self.tree.new_id("n"), self.tree.new_id("s"), model or self.config.sub.model
        self.emit(
            "subcall_start",
            subcall_id=sub_id,
            kind="rlm",
            child_id=child_id,
            model=model,
            prompt_preview=query[:PROMPT_PREVIEW_CHARS],
            prompt_chars=len(query),
            **self.current_block(),
        )
        return context, query, model, child_id, sub_id

    def _run_child(self, context: object, query: str, model: str, child_id: str, sub_id: str) -> Any:
        started = time.perf_counter()
        try:
            repl = shielded(self.tree.new_repl)  # a stop landing midway would leave its worker running
        except Exception as exc:  # its announced sub-call still ends, as failed
            error = f"{type(exc).__name__}: {exc}"
            self.emit("subcall_end", subcall_id=sub_id, error=error, usage=Usage().to_dict(), seconds=0.0)
            raise
        try:
            depth = self.depth + 1
            child = Node(
                self.tree, context, query, depth=depth, parent_id=self.id, repl=repl, model=model, node_id=child_id
            )
            outcome = child.run()
        finally:
            shielded(repl.close)
        return self.end_child(child_id, sub_id, outcome, started)

    def end_child(self, child_id: str, sub_id: str, outcome: Outcome, started: float) -> Any:
        """End a child's sub-call with what its subtree used (in the trace); its answer, or its error as text."""
        usage = self.tree.trace.subtree_usage(child_id)
        reply = outcome.answer if outcome.status in ("done", "max_iterations") and outcome.answer is not None else None
        self.emit(
            "subcall_end",
            subcall_id=sub_id,
            reply=None if reply is None else answer_text(reply),
            error=outcome.error,
            usage=usage.to_dict(),
            seconds=time.perf_counter() - started,
        )
        if reply is None:
            return child_stopped_message(outcome.status, outcome.error)
        return reply

    def children(self, pairs: list[tuple[Any, ...]], model: str | None) -> list[Any]:
        """Child RLMs in parallel: all announced (queued) first, in order, then run `concurrency` at a time."""
        queued: list[tuple[object, str, str, str, str] | str] = []
        for pair in pairs:
            try:
                context, query = pair
                queued.append(self._queue_child(context, str(query), model))
            except Exception as exc:
                queued.append(f"Error: {type(exc).__name__}: {exc}")
        if self.tree.fan_out is not None:
            return self.tree.fan_out(self, queued)
        started: list[Deadline] = []

        def one(child: tuple[object, str, str, str, str] | str) -> Any:
            if isinstance(child, str):
                return child
            # So that the block's end, or the run's, can stop a child its parent left running.
            with Deadline(math.inf, raises=RunCancelled) as stoppable, self.tree.running_child(stoppable):
                started.append(stoppable)
                try:
                    return self._run_child(*child)
                except (KeyboardInterrupt, RunCancelled):
                    raise
                except Exception as exc:
                    return f"Error: {type(exc).__name__}: {exc}"

        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(self.config.loop.concurrency, len(pairs) or 1), thread_name_prefix=f"rlm-{self.id}"
        )
        try:
            futures = [pool.submit(one, child) for child in queued]
            return [self.tree.scope.wait(f) for f in futures]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            for stoppable in started:  # the block stopped waiting (a timeout, an interrupt): its children stop too
                stoppable.stop()

    def made_names(self) -> set[str]:
        """The names this node's code has bound so far, the running block's included (what SHOW_VARS lists)."""
        if self._before_block is None:
            return set(self._made)
        created, rebound = _diff(self._before_block, self._snapshot())
        return self._made | set(created) | set(rebound)

    def _snapshot(self) -> dict[str, int]:
        return {n: v for n, v in self.repl.snapshot().items() if n not in self.tools and not n.startswith("_")}

    def _variables_note(self, names: list[str]) -> str:
        if not names:
            return ""
        described = ", ".join(f"{n} ({self._described(n)})" for n in names[:20])
        return f"\n[variables set: {described}{', ...' if len(names) > 20 else ''}]"

    def _described(self, name: str) -> str:
        value = self.repl.get(name)
        return contained(lambda: describe_value(value), lambda exc: type(value).__name__)


def answer_text(answer: object) -> str:
    """The answer as the trace records it; an answer whose str() raises, recurses or hangs is named, not run."""

    def unprintable(exc: BaseException) -> str:
        return f"<unprintable {type(answer).__name__}: {type(exc).__name__}>"

    return contained(lambda: truncate(str(answer), ANSWER_RECORD_CHARS), unprintable)


def _fabrication_note(dropped_blocks: int) -> str:
    later = f", with the {dropped_blocks} code block(s) after it, which did not run" if dropped_blocks else ""
    return (
        f"[Your reply went on after a code block with text posing as its output; it was cut there{later}. "
        "Only executed code produces output: end your reply after the code and read the real output.]"
    )


def _diff(before: dict[str, int], after: dict[str, int]) -> tuple[list[str], list[str]]:
    created = [n for n in after if n not in before]
    rebound = [n for n in after if n in before and before[n] != after[n]]
    return created, rebound
