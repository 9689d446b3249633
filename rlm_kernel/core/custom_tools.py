"""The user's own functions in every node's REPL (`RLM(tools=[search, lookup])`), described to the model.

A tool is called as the model writes it, in the node's thread; what it raises reaches model code as any
exception does, so the model sees its error text (the traceback of its own line and the tool's) and goes on.
In isolated mode every callable the REPL is given crosses the bridge: the tool runs here, in the engine's
process, with the arguments sent as plain data (JSON) and the reply sent back the same way.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import keyword
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from rlm_kernel.core.errors import ConfigError

# The names every node's REPL already binds (core/tools.py, core/helpers.py): a tool may not take one.
RESERVED = frozenset(
    {
        "context",
        "peek",
        "grep",
        "partition",
        "llm_query",
        "llm_query_batched",
        "rlm_query",
        "rlm_query_batched",
        "FINAL",
        "FINAL_VAR",
        "SHOW_VARS",
        "answer",
    }
)
DOC_CHARS = 600  # of each tool's docstring in the system prompt

Tools = Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]]


def check_tools(tools: Tools | None) -> dict[str, Callable[..., Any]]:
    """`tools` as {name: function}; one ConfigError that lists every tool the REPL could not bind as named.

    A name must be an identifier and no keyword (model code could not call it), no builtin (`print` would
    silently change under model code) and none of the REPL's own names; two tools may not share a name.
    """
    if tools is None:
        return {}
    if callable(tools) and not isinstance(tools, Mapping):
        raise ConfigError("tools must be a list or a dict of functions, not one function: tools=[f]")
    pairs = list(tools.items()) if isinstance(tools, Mapping) else [(_name_of(tool), tool) for tool in tools]
    problems = [problem for name, tool in pairs if (problem := _problem(name, tool))]
    names = [name for name, _ in pairs]
    problems += [f"two tools are named {n!r}; rename one" for n in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise ConfigError("; ".join(problems))
    return dict(pairs)


def _name_of(tool: Any) -> str:
    name = getattr(tool, "__name__", None)
    if not callable(tool) or not isinstance(name, str) or name == "<lambda>":
        raise ConfigError(f"tool {tool!r} has no usable name: pass tools as a dict {{name: function}}")
    return name


def _problem(name: Any, tool: Any) -> str | None:
    if not isinstance(name, str) or not name.isidentifier():
        return f"tool name {name!r} is not a Python identifier"
    if keyword.iskeyword(name):
        return f"tool name {name!r} is a Python keyword; model code could not call it"
    if name in RESERVED:
        return f"tool name {name!r} is taken by the REPL's own {name}; rename the tool"
    if hasattr(builtins, name):
        return f"tool name {name!r} would replace Python's builtin {name} in model code; rename the tool"
    if not callable(tool):
        return f"tool {name!r} is a {type(tool).__name__}, not a function"
    return None


def awaiting(
    tools: Mapping[str, Callable[..., Any]], run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> dict[str, Callable[..., Any]]:
    """`tools` where each `async def` one is awaited (by `run`, the run's loop) when model code calls it."""

    def awaited(tool: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(tool)
        def call(*args: Any, **kwargs: Any) -> Any:
            return run(tool(*args, **kwargs))

        return call

    return {name: awaited(tool) if _is_async(tool) else tool for name, tool in tools.items()}


def _is_async(tool: Callable[..., Any]) -> bool:
    call = None if inspect.isroutine(tool) else type(tool).__call__  # a callable object with an async __call__
    return inspect.iscoroutinefunction(tool) or inspect.iscoroutinefunction(call)


def describe_tools(tools: Mapping[str, Callable[..., Any]]) -> str:
    """One prompt line per tool: its call signature and its docstring (abridged)."""
    return "\n".join(f"- `{name}{_signature(tool)}`: {_doc(tool)}" for name, tool in tools.items())


def _signature(tool: Callable[..., Any]) -> str:
    try:
        return str(inspect.signature(tool, eval_str=True))  # `from __future__ import annotations` leaves strings
    except (NameError, SyntaxError):  # an annotation that names what this module cannot see: shown as written
        return str(inspect.signature(tool))
    except (TypeError, ValueError):  # some builtins have none
        return "(...)"


def _doc(tool: Callable[..., Any]) -> str:
    doc = " ".join((inspect.getdoc(tool) or "").split())
    if not doc:
        return "(no description: look at its signature)"
    return doc if len(doc) <= DOC_CHARS else doc[: DOC_CHARS - 1] + "…"


def tool_sources(tools: Mapping[str, Callable[..., Any]]) -> dict[str, str | None]:
    """Each tool's source as written (None when Python cannot find it): an export defines them, so it re-runs."""
    sources: dict[str, str | None] = {}
    for name, tool in tools.items():
        try:
            sources[name] = inspect.getsource(tool)
        except (OSError, TypeError):  # a builtin, a C function, a callable object, or a lost source
            sources[name] = None
    return sources
