"""What a cell from `%rlm insert` needs to run as it stands in the notebook.

The cell starts by binding the names the model had: `context` (the notebook variable the run was asked about, or a
child's own context), the variables a child's earlier iterations made (the run replayed offline up to there), the
helpers on the context, the sub-model calls (answered with the run's recorded replies, or by the model itself with
`--live`), and the submission functions, which here display the value instead of ending a run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from IPython import get_ipython
from IPython.core.error import UsageError
from IPython.display import display

from rlm_kernel.core.aio import CancelScope
from rlm_kernel.core.clients import Models
from rlm_kernel.core.config import RunConfig
from rlm_kernel.core.custom_tools import RESERVED
from rlm_kernel.core.errors import RLMError
from rlm_kernel.core.helpers import make_helpers
from rlm_kernel.core.prompts import child_stopped_message
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.run import run_question
from rlm_kernel.core.tools import context_as_text
from rlm_kernel.core.trace import CallNode, Trace
from rlm_kernel.core.values import describe_value
from rlm_kernel.formats.rerun import names_before as replayed_names
from rlm_kernel.formats.rerun import replayed_sub_calls
from rlm_kernel.jupyter import messages as msg
from rlm_kernel.jupyter.text import RLMAnswer

_MODEL_CALLS = re.compile(r"\b(llm_query|llm_query_batched|rlm_query|rlm_query_batched)\s*\(")
SUB_CALL_NAMES = ("llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched")


def inserted_cell(
    trace: Trace, node: CallNode, iteration: int, run: int, context_variable: str | None, code: str, live: bool
) -> str:
    """The source of the inserted cell: a header that binds the model's names, then its code."""
    where = f"{node.id}:{iteration}"
    imported = ["FINAL", "FINAL_VAR", "SHOW_VARS", "answer", "helpers"]
    lines = []
    if node.depth == 0:
        lines.append(
            f"context = {context_variable}"
            if context_variable
            else "context = None  # the run's context was no notebook variable: set it here"
        )
    else:
        imported.append("names_before")
        bound = ["context", *earlier_names(trace, node.id, iteration - 1)]
        lines += [
            f"# {node.id} is a child: its context and what its iterations before {iteration} made, "
            f"from run {run} replayed offline up to there",
            f"{', '.join(bound) if len(bound) > 1 else '(context,)'} = names_before({run}, {node.id!r}, {iteration}, "
            + ", ".join(repr(name) for name in bound)
            + ")",
        ]
    lines.append("peek, grep, partition = helpers(context)")
    if _MODEL_CALLS.search(code):
        imported.append("sub_calls")
        lines.append(
            f"# the model, live (%rlm insert {where} without --live: run {run}'s recorded replies)"
            if live
            else f"# run {run}'s recorded replies, offline (%rlm insert {where} --live: the model itself)"
        )
        lines.append(f"{', '.join(SUB_CALL_NAMES)} = sub_calls({run}, {node.id!r}{', live=True' if live else ''})")
    header = [
        f"# rlm: {where} of run {run}, model-written; the lines above the blank one give it the names it had",
        f"from rlm_kernel.jupyter.inserted import {', '.join(imported)}",
    ]
    return "\n".join(header + lines) + "\n\n" + code


def earlier_names(trace: Trace, node_id: str, iteration: int) -> list[str]:
    """The variables node `node_id`'s blocks made or rebound before iteration `iteration` (from 0), as recorded."""
    names: dict[str, None] = {}
    for event in trace.events:
        if event.kind == "code_result" and event.node_id == node_id and event.data["iteration"] < iteration:
            names.update(dict.fromkeys([*event.data.get("created", []), *event.data.get("rebound", [])]))
    return [name for name in names if name.isidentifier() and name not in RESERVED]  # the header binds those


def _run(number: int) -> RLMResult:
    """This kernel's run `number` (from 1), as `%rlm history` numbers it."""
    magics = get_ipython().magics_manager.registry.get("RLMMagics")
    runs = magics.runs if magics is not None else []
    if not 1 <= number <= len(runs):
        raise UsageError(msg.INSERTED_RUN_GONE.format(number=number))
    return runs[number - 1]


def names_before(run: int, node_id: str, iteration: int, *names: str) -> tuple[object, ...]:
    """`names` as node `node_id` of run `run` had them when its iteration `iteration` (from 1) began (None for a name
    an earlier block deleted): the run replayed offline up to there, in namespaces apart from the notebook's."""
    result = _run(run)
    namespace = get_ipython().user_ns
    variable = result.extra.get("context_variable")
    try:
        found = replayed_names(
            result.trace, node_id, iteration - 1, namespace.get(variable) if variable else None, tools=namespace
        )
    except RLMError as exc:  # one line, as a magic says it: this cell's header is the magics' own code
        raise UsageError(f"{node_id} as it was in run {run}: {exc}") from None
    return tuple(found.get(name) for name in names)


def sub_calls(run: int, node_id: str, live: bool = False) -> tuple[Callable[..., Any], ...]:
    """llm_query, llm_query_batched, rlm_query and rlm_query_batched for node `node_id` of run `run`: answered from
    the run's recorded replies, or with `live` by the run's models, as its settings had them."""
    result = _run(run)
    if not live:
        calls = replayed_sub_calls(result.trace, node_id)
    elif isinstance(config := result.extra.get("config"), RunConfig):
        calls = _live_sub_calls(config, result.trace.nodes[node_id])
    else:
        raise UsageError(msg.INSERTED_NOT_LIVE.format(number=run))
    return tuple(calls[name] for name in SUB_CALL_NAMES)


def _live_sub_calls(config: RunConfig, node: CallNode) -> dict[str, Callable[..., Any]]:
    """The sub-model calls made for real with the run's settings (its keys and servers; no budget binds them)."""
    models = Models.connect(config)
    depth_left = config.loop.max_depth - node.depth - 1
    # A child asked here is a root of its own, with the depth and iterations the run's children had.
    child_config = replace(
        config,
        loop=replace(config.loop, max_depth=max(depth_left, 1), max_iterations=config.loop.child_max_iterations),
    )

    def llm_query(prompt: str, model: str | None = None) -> str:
        completion = CancelScope().run(
            models.sub.acomplete(
                [{"role": "user", "content": str(prompt)}],
                model=model or config.sub.model,
                max_output_tokens=config.calls.max_output_tokens,
                timeout=config.calls.call_timeout,
                params=config.sub.params,
            )
        )
        return completion.text

    def rlm_query(context: object, query: str, model: str | None = None) -> Any:
        if depth_left <= 0:  # at the depth limit the call is a plain sub-model call, as in the run
            return llm_query(f"{query}\n\n{context_as_text(context)}", model)
        asked = replace(child_config, root=config.sub if model is None else replace(config.sub, model=model))
        result = run_question(asked, context, str(query))
        if result.status in ("done", "max_iterations") and result.answer is not None:
            return result.answer
        return child_stopped_message(result.status, result.error)

    return {
        "llm_query": llm_query,
        "llm_query_batched": lambda prompts, model=None: [llm_query(p, model) for p in prompts],
        "rlm_query": rlm_query,
        "rlm_query_batched": lambda pairs, model=None: [rlm_query(c, q, model) for c, q in pairs],
    }


def helpers(context: object) -> tuple[Callable[..., Any], ...]:
    """peek, grep and partition on `context`, as the model had them (None when there is no context)."""
    if context is None:
        return (_no_context, _no_context, _no_context)
    made = make_helpers(context)
    return made["peek"], made["grep"], made["partition"]


def _no_context(*args: object, **kwargs: object) -> None:
    raise NameError("context is None in this inserted cell: set it to the value the model worked on")


def _show(value: Any) -> None:
    """An answer as a run shows it: a str as written (not its repr, in quotes), anything else as itself."""
    display(RLMAnswer(value) if isinstance(value, str) else value)


def FINAL(value: Any) -> None:  # noqa: N802 - the model's name
    """In a notebook cell, submitting an answer displays it."""
    _show(value)


def FINAL_VAR(name: Any) -> None:  # noqa: N802
    """Display the variable called `name` (or the value itself, as the model's FINAL_VAR accepts)."""
    if not isinstance(name, str):
        _show(name)
        return
    namespace = get_ipython().user_ns
    if name not in namespace:
        raise NameError(f"FINAL_VAR: there is no variable named {name!r}")
    _show(namespace[name])


def SHOW_VARS() -> str:  # noqa: N802
    """The notebook's variables, with their types and sizes."""
    namespace = get_ipython().user_ns
    hidden = get_ipython().user_ns_hidden
    names = sorted(n for n in namespace if not n.startswith("_") and n not in hidden)
    return "\n".join(f"{n}: {describe_value(namespace[n])}" for n in names)


class _Answer(dict[str, Any]):
    """The model's `answer` dict: setting answer["ready"] displays answer["content"]."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        if key == "ready" and value:
            _show(self.get("content"))


answer = _Answer(content="", ready=False)
