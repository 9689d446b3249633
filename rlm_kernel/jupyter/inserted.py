"""What a cell from `%rlm insert` needs to run as it stands in the notebook.

The cell starts by binding the names the model had: `context` (the notebook variable the run
was asked about), the helpers on it, and the submission functions, which here display the
value instead of ending a run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from IPython import get_ipython
from IPython.display import display

from rlm_kernel.core.helpers import make_helpers
from rlm_kernel.core.trace import CallNode
from rlm_kernel.core.values import describe_value
from rlm_kernel.jupyter.text import RLMAnswer

_MODEL_CALLS = re.compile(r"\b(llm_query|llm_query_batched|rlm_query|rlm_query_batched)\s*\(")


def inserted_cell(node: CallNode, iteration: int, run: int, context_variable: str | None, code: str) -> str:
    """The source of the inserted cell: a header that binds the model's names, then its code."""
    lines = [
        f"# rlm: {node.id}:{iteration} of run {run}, model-written; the lines above the blank one give it the names it had",
        "from rlm_kernel.jupyter.inserted import FINAL, FINAL_VAR, SHOW_VARS, answer, helpers",
    ]
    if node.depth == 0 and context_variable:
        lines.append(f"context = {context_variable}")
    else:
        lines.append(f"context = None  # {node.id} is a child: the piece its parent gave it is not kept; set it here")
    lines.append("peek, grep, partition = helpers(context)")
    calls = sorted(set(_MODEL_CALLS.findall(code)))
    if calls:
        lines.append(f"# it calls {', '.join(calls)}: a model call, which only a %%rlm run provides")
    return "\n".join(lines) + "\n\n" + code


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
