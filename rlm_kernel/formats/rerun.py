"""Replaying a recorded run with no model (`replay_run`, `%rlm replay`, an export's setup cell).

`replay_rlm(trace)` builds an RLM set up as the recorded run was (its settings come from the
root's `call_start` event) whose every model call goes to a new replay session of the
`replay/<session>` provider (rlm_kernel.models.recorded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm_kernel.core.context import is_recorded_context
from rlm_kernel.core.engine import RLM
from rlm_kernel.core.errors import ReplayError
from rlm_kernel.core.repl import REPL
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import CallNode, EventHandler, Trace
from rlm_kernel.formats.notebook import read_export, recorded_tools
from rlm_kernel.models.recorded import ReplayLM, register_replay


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
