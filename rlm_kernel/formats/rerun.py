"""Replaying a recorded run with no model (`replay_run`, `%rlm replay`, an export's setup cell).

`replay_rlm(trace)` builds an RLM set up as the recorded run was (its settings come from the
root's `call_start` event) whose every model call goes to a new replay session of the
`replay/<session>` provider (rlm_kernel.models.recorded).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm_kernel.core.context import is_recorded_context
from rlm_kernel.core.engine import RLM
from rlm_kernel.core.errors import ReplayError, RunInterrupted
from rlm_kernel.core.prompts import child_stopped_message
from rlm_kernel.core.repl import REPL, ExecResult, NamespaceREPL
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.tools import context_as_text
from rlm_kernel.core.trace import CallNode, Event, EventHandler, Trace
from rlm_kernel.formats.notebook import read_export, recorded_tools
from rlm_kernel.models.recorded import ReplayLM, register_replay, respond


def load_trace(path: str | Path) -> Trace:
    """The recorded run in an exported notebook (.ipynb) or a JSONL trace."""
    return read_export(path) if str(path).endswith(".ipynb") else Trace.from_jsonl(path)


def replay_context(trace: Trace, context: object = None) -> object:
    """The context to replay with: `context`, checked against the recorded hash, or the one the trace holds."""
    root = root_call(trace)
    if context is None:
        recorded = trace.contexts.get(root.id, {})
        if "value" not in recorded:
            why = recorded.get("omitted") or "it was not recorded"
            raise ReplayError(f"the recording holds no context ({why}): pass the run's context to replay it")
        return recorded["value"]
    if not is_recorded_context(context, root.context["sha256"]):
        raise ReplayError("that context is not the one the recorded run used (its sha256 differs)")
    return context


@dataclass(frozen=True)
class Replayed:
    result: RLMResult
    recorded: CallNode  # the recorded root call

    @property
    def replayed(self) -> CallNode | None:
        return self.result.trace.root

    @property
    def matches(self) -> bool:
        """The replay ended as the recording did, with the same answer (as recorded: text)."""
        now = self.replayed
        return now is not None and (now.status, now.answer) == (self.recorded.status, self.recorded.answer)


def replay_run(
    trace_or_path: Trace | str | Path,
    context: object = None,
    *,
    repl: REPL | None = None,
    on_event: EventHandler | None = None,
    tools: Mapping[str, Callable[..., Any]] | None = None,
) -> Replayed:
    """Run a recorded run again through the `replay` model backend, offline; see `Replayed.matches`.

    `tools`: where to find the functions the recorded run was given, by name (its code calls them again);
    the notebook passes its namespace.
    """
    trace = trace_or_path if isinstance(trace_or_path, Trace) else load_trace(trace_or_path)
    value = replay_context(trace, context)
    rlm = replay_rlm(trace, on_event=on_event, tools=tools_for_replay(trace, tools or {}))
    result = rlm.completion(value, root_call(trace).query, repl=repl, history=recorded_history(trace))
    return Replayed(result, root_call(trace))


def tools_for_replay(trace: Trace, available: Mapping[str, Any]) -> dict[str, Callable[..., Any]]:
    """The recorded run's tools, found by name in `available`; ReplayError naming those that are missing."""
    names = list(recorded_tools(trace))
    missing = [name for name in names if not callable(available.get(name))]
    if missing:
        raise ReplayError(
            f"the recorded run used tools that are not defined here: {', '.join(missing)}; define them first"
        )
    return {name: available[name] for name in names}


def root_call(trace: Trace) -> CallNode:
    if trace.root is None:
        raise ReplayError("the recording has no root call")
    return trace.root


# -- the recorded run's settings ------------------------------------------------------------------

# What a replay takes from the recording: the settings that shape prompts and the tree, never the time
# budget (a replay stepped through cell by cell takes its own time), keys or where models were served.
REPLAYED_SETTINGS = (
    "model",
    "sub_model",
    "max_depth",
    "max_iterations",
    "child_max_iterations",
    "max_llm_calls",
    "max_tokens",
    "max_cost_usd",
    "max_output_chars",
    "max_output_tokens",
    "concurrency",
    "cell_timeout",
)


def _root_start(trace: Trace) -> dict[str, Any]:
    root_call(trace)  # a ReplayError that says the recording has no root
    return trace.root_start()


def recorded_history(trace: Trace) -> str | None:
    """What the recorded root was told of its session's earlier questions (None: it was no follow-up)."""
    history = _root_start(trace).get("history")
    return history if isinstance(history, str) else None


def recorded_settings(trace: Trace) -> dict[str, Any]:
    """The recorded run's settings, as its root `call_start` event recorded them."""
    settings = _root_start(trace).get("settings")
    if settings is None:
        raise ReplayError("the trace does not record its run's settings (a trace from another version?)")
    return {name: settings[name] for name in REPLAYED_SETTINGS if name in settings}


def replay_rlm(trace: Trace, **overrides: Any) -> RLM:
    """An RLM set up as the recorded run was, whose model calls a new replay session answers.

    There are no retries: a request the recording has no reply for fails at once.
    """
    settings = {**recorded_settings(trace), "retries": 0, **overrides}
    return RLM(lm=ReplayLM(register_replay(trace)), **settings)


# -- one node as it was at one iteration (what an inserted cell binds) ------------------------------


class NodeMap:
    """Replayed node ids to recorded ones (ids can differ when children ran in parallel).

    A child is the first recorded child of its parent's counterpart, not yet matched, with the
    same question and context; twins are interchangeable.
    """

    def __init__(self, recorded: Trace) -> None:
        self._recorded = recorded
        self._ids: dict[str, str | None] = {}
        self._matched: set[str] = set()

    def recorded_id(self, event: Event) -> str | None:
        if event.kind == "call_start":
            self._ids[event.node_id] = self._match(event)
        return self._ids.get(event.node_id)

    def _match(self, event: Event) -> str | None:
        if event.parent_id is None:
            return self._recorded.root_id
        parent = self._ids.get(event.parent_id)
        wanted = (event.data["query"], event.data["context"]["sha256"])
        for child in self._recorded.nodes[parent].children if parent else []:
            node = self._recorded.nodes[child]
            if child not in self._matched and (node.query, node.context["sha256"]) == wanted:
                self._matched.add(child)
                return child
        return None


class ReplayReached(KeyboardInterrupt):
    """Stops a replay at the point asked for: a KeyboardInterrupt, so that the engine unwinds the run as a stop."""


class _StopBefore:
    """Watches a replay for one recorded node's iteration and keeps that node's names when its first block is about
    to run. Events come on the thread that runs their node, so the next block that thread runs is that one."""

    def __init__(self, trace: Trace, node_id: str, iteration: int) -> None:
        self._nodes = NodeMap(trace)
        self._target = (node_id, iteration)
        self.armed: int | None = None  # the target node's thread, once its iteration has started
        self.names: dict[str, object] | None = None

    def on_event(self, event: Event) -> None:
        node_id = self._nodes.recorded_id(event)  # every event: a call_start names the node
        if event.kind == "iteration" and (node_id, event.data["index"]) == self._target:
            self.armed = threading.get_ident()


class _StoppingREPL(NamespaceREPL):
    """A replayed node's namespace that hands its names to `stop` instead of running the block `stop` waits for."""

    def __init__(self, stop: _StopBefore, **limits: Any) -> None:
        super().__init__(**limits)
        self._stop = stop

    def execute(self, code: str, timeout: float | None = None) -> ExecResult:
        if self._stop.armed == threading.get_ident():
            self._stop.names = {name: self.get(name) for name in self.names()}
            raise ReplayReached()
        return super().execute(code, timeout)


def names_before(
    trace: Trace,
    node_id: str,
    iteration: int,
    context: object = None,
    *,
    tools: Mapping[str, Callable[..., Any]] | None = None,
) -> dict[str, object]:
    """The names in node `node_id`'s REPL just before iteration `iteration` (from 0) ran its code: its context, and
    the variables its earlier iterations made. The run is replayed offline up to there, in namespaces of its own
    (the notebook's is left alone); `context` and `tools` are the root's, as for `replay_run`."""
    if node_id not in trace.nodes:
        raise ReplayError(f"the recording has no node {node_id}")
    settings = recorded_settings(trace)
    limits = {name: settings[name] for name in ("cell_timeout", "max_output_chars") if name in settings}
    stop = _StopBefore(trace, node_id, iteration)
    rlm = replay_rlm(
        trace,
        on_event=stop.on_event,
        tools=tools_for_replay(trace, tools or {}),
        repl_factory=lambda: _StoppingREPL(stop, **limits),
    )
    value = replay_context(trace, context)
    try:
        rlm.completion(
            value, root_call(trace).query, repl=_StoppingREPL(stop, **limits), history=recorded_history(trace)
        )
    except RunInterrupted:
        if stop.names is None:  # a stop of the user's, not the one asked for
            raise
    if stop.names is None:
        raise ReplayError(f"the replay ended before {node_id} reached iteration {iteration + 1}")
    return stop.names


def replayed_sub_calls(trace: Trace, node_id: str) -> dict[str, Callable[..., Any]]:
    """`llm_query`, `llm_query_batched`, `rlm_query` and `rlm_query_batched` as node `node_id` had them, answered
    offline from the recording: a plain call gets the reply recorded for its prompt; a child RLM runs again on its
    recorded replies, so it returns the same Python value. Each call starts a new replay session, so a cell that
    binds them answers the same when it runs again."""
    node = trace.nodes[node_id]
    session = register_replay(trace)
    settings = {**recorded_settings(trace), "retries": 0}
    depth_limit = int(settings.get("max_depth", 1))
    child_depth = node.depth + 1
    # A child's iteration limit is the one its recorded call started with (child_max_iterations, resolved).
    child_iterations = next(
        (e.data["max_iterations"] for e in trace.events if e.kind == "call_start" and e.data["depth"] == child_depth),
        settings.get("child_max_iterations") or settings.get("max_iterations"),
    )

    def llm_query(prompt: str, model: str | None = None) -> str:
        return respond(session, [{"role": "user", "content": str(prompt)}], {})[0]

    def llm_query_batched(prompts: list[str], model: str | None = None) -> list[str]:
        return [llm_query(prompt) for prompt in prompts]

    def rlm_query(context: object, query: str, model: str | None = None) -> Any:
        if child_depth >= depth_limit:  # at the depth limit the call was a plain sub-model call
            return llm_query(f"{query}\n\n{context_as_text(context)}")
        # The child's first message (question and context metadata) does not depend on its depth, so a run with the
        # depth it had left meets the recorded conversation.
        child = RLM(
            lm=ReplayLM(session),
            **{**settings, "max_depth": depth_limit - child_depth, "max_iterations": child_iterations},
        )
        result = child.completion(context, str(query))
        if result.status in ("done", "max_iterations") and result.answer is not None:
            return result.answer
        return child_stopped_message(result.status, result.error)

    def rlm_query_batched(pairs: list[tuple[object, str]], model: str | None = None) -> list[Any]:
        return [rlm_query(context, str(query)) for context, query in pairs]

    return {
        "llm_query": llm_query,
        "llm_query_batched": llm_query_batched,
        "rlm_query": rlm_query,
        "rlm_query_batched": rlm_query_batched,
    }
