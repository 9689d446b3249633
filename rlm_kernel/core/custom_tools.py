"""The user's own functions in every node's REPL (`RLM(tools=[search, lookup])`), described to the model.

A tool is called as the model writes it, in the node's thread; what it raises reaches model code as any
exception does, so the model sees its error text (the traceback of its own line and the tool's) and goes on.
In isolated mode every callable the REPL is given crosses the bridge: the tool runs here, in the engine's
process, with the arguments sent as plain data (JSON) and the reply sent back the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
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
    """`tools` as {name: function}; ConfigError naming the first that is not a callable or takes a reserved name."""
    if tools is None:
        return {}
    if isinstance(tools, Mapping):
        named = dict(tools)
    elif callable(tools):
        raise ConfigError("tools must be a list or a dict of functions, not one function: tools=[f]")
    else:
        named = {}
        for tool in tools:
            name = getattr(tool, "__name__", None)
            if not callable(tool) or not isinstance(name, str) or name == "<lambda>":
                raise ConfigError(f"tool {tool!r} has no usable name: pass tools as a dict {{name: function}}")
            named[name] = tool
    for name, tool in named.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"tool name {name!r} is not a Python identifier")
        if name in RESERVED:
            raise ConfigError(f"tool name {name!r} is taken by the REPL's own {name}; rename the tool")
        if not callable(tool):
            raise ConfigError(f"tool {name!r} is a {type(tool).__name__}, not a function")
    return named


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
