"""The `%rlm` subcommands, one small function each: `%rlm WORD ARGS...` calls `SUBCOMMANDS[WORD](magics, args)`."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.display import Code, display

from rlm_kernel.core import RLM
from rlm_kernel.core.context import context_metadata
from rlm_kernel.core.lm.litellm_lm import chat_models_with_keys
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.settings import resolve
from rlm_kernel.core.trace import CallNode, Iteration, Trace
from rlm_kernel.formats.compare import code_diff, compare_runs
from rlm_kernel.formats.notebook import write_notebook
from rlm_kernel.formats.progress import plural
from rlm_kernel.formats.rerun import Replayed, load_trace, recorded_settings, replay_run
from rlm_kernel.jupyter import messages as msg
from rlm_kernel.jupyter.inserted import inserted_cell
from rlm_kernel.jupyter.options import config_rows, configured
from rlm_kernel.jupyter.replay import code_to_replay
from rlm_kernel.jupyter.shell_repl import ShellREPL
from rlm_kernel.jupyter.text import Note, Table, Text, TreePage
from rlm_kernel.loaders import describe_skipped, load_files

if TYPE_CHECKING:
    from rlm_kernel.jupyter.magics import RLMMagics


def config(m: RLMMagics, args: list[str]) -> None:
    changed = take_flag(args, "--changed")
    if args:
        raise UsageError(msg.CONFIG_USAGE)
    given = configured(m)
    effective = resolve(given)
    rows = []
    for name, value, where in config_rows(given, effective):
        if changed and where == "default":
            continue
        if name == "model" and effective["model"] is None:
            value = f"{msg.DEMO_MODEL} (offline demo policy)"
        elif effective.get(name) is None and name in msg.UNSET_MEANS:
            value = msg.UNSET_MEANS[name]
        rows.append([name, value, where])
    if changed and not rows:
        display(Text(msg.NOTHING_CHANGED))
    else:
        display(Table(["setting", "value", "from"], rows))
    if effective["model"] is not None and effective["max_cost_usd"] is not None:
        for warning in RLM(
            **{"model": None, **given}
        ).pricing_warnings():  # a cost budget on a model nothing prices: said up front
            display(Note(msg.UNPRICED_BUDGET.format(warning=warning)))


def load(m: RLMMagics, args: list[str]) -> None:
    name = take_option(args, "--as") or "context"
    skip = take_flag(args, "--skip-unreadable")
    if len(args) != 1 or not name.isidentifier():
        raise UsageError("usage: %rlm load PATH_OR_GLOB [--as NAME] [--skip-unreadable]")
    loaded = load_files(os.path.expanduser(args[0]), skip_unreadable=skip)
    value = loaded.context
    assert m.shell is not None  # set when IPython registers the magics
    m.shell.user_ns[name] = value
    m.default_context = name
    meta = context_metadata(value)
    description = f"{meta.type} of {plural(meta.length, 'character')}" + (
        f", {plural(meta.items, 'item')}" if meta.items else ""
    )
    display(Text(msg.LOADED.format(description=description, source=args[0], name=name)))
    if loaded.skipped:
        display(Text(describe_skipped(loaded.skipped)))


def show(m: RLMMagics, args: list[str]) -> Any:
    return TreePage(_run_numbered(m, args[0] if args else None).trace)


def cells(m: RLMMagics, args: list[str]) -> None:
    """%rlm cells [NODE[:ITERATION]] [--run N]: iterations numbered from 1, as in the tree and the export."""
    result = _run_numbered(m, take_option(args, "--run"))
    node_ref, _, iteration_ref = (args[0] if args else "").partition(":")
    node = _node(m, result, node_ref or None)
    chosen = [_iteration(node, iteration_ref)] if iteration_ref else node.iterations
    shown = False
    for iteration in chosen:
        for cell in iteration.cells:
            shown = True
            error = " (error)" if cell.error else ""
            display(Text(f"**{node.id}:{iteration.index + 1}** block {cell.index + 1}{error}"))
            display(Code(cell.code, language="python"))
            display(Code(cell.output or "(no output)", language="text"))
    if not shown:
        display(Text(msg.NO_CODE.format(node=node.id)))


def insert(m: RLMMagics, args: list[str]) -> None:
    """%rlm insert NODE[:ITERATION] [--run N] [--live]: a cell that runs as it stands (see inserted.py)."""
    run_ref = take_option(args, "--run")
    live = take_flag(args, "--live")
    if len(args) != 1:
        raise UsageError(msg.INSERT_USAGE)
    result = _run_numbered(m, run_ref)
    node_ref, _, iteration_ref = args[0].partition(":")
    node = _node(m, result, node_ref)
    if iteration_ref:
        iteration = _iteration(node, iteration_ref)
    else:
        with_code = [it for it in node.iterations if it.cells]
        if not with_code:
            raise UsageError(msg.NO_CODE.format(node=node.id))
        # The last block that did work, not the one that only submitted (FINAL(...)), unless that is all there is.
        working = [it for it in with_code if not _only_submits(it)]
        iteration = (working or with_code)[-1]
    code = "\n\n".join(c.code.rstrip() for c in iteration.cells)
    number = m.runs.index(result) + 1
    source = inserted_cell(
        result.trace, node, iteration.index + 1, number, result.extra.get("context_variable"), code, live
    )
    assert m.shell is not None  # set when IPython registers the magics
    m.shell.set_next_input(source, replace=False)
    display(Text(msg.INSERTED.format(node=node.id, iteration=iteration.index + 1)))


def _only_submits(iteration: Iteration) -> bool:
    """Its code is nothing but FINAL(...) / FINAL_VAR(...) lines (and comments)."""
    lines = [line.strip() for cell in iteration.cells for line in cell.code.splitlines()]
    return all(not line or line.startswith(("#", "FINAL(", "FINAL_VAR(")) for line in lines)


def _iteration(node: CallNode, ref: str) -> Iteration:
    """The iteration numbered `ref` (from 1) that ran code."""
    chosen = [it for it in node.iterations if str(it.index + 1) == ref and it.cells]
    if not chosen:
        raise UsageError(msg.NO_SUCH_ITERATION.format(node=node.id, iteration=ref))
    return chosen[0]


def alias(m: RLMMagics, args: list[str]) -> None:
    """%rlm alias NAME MODEL: NAME stands for MODEL in --model / --sub-model; --remove NAME forgets it; none: list."""
    removed = take_option(args, "--remove")
    if removed is not None and not args:
        if m.aliases.pop(removed, None) is None:
            raise UsageError(msg.NO_SUCH_ALIAS.format(name=removed))
        display(Text(msg.ALIAS_REMOVED.format(name=removed)))
    elif removed is None and not args:
        display(
            Table(["alias", "model"], [[name, model] for name, model in m.aliases.items()])
            if m.aliases
            else Text(msg.NO_ALIASES)
        )
    elif removed is None and len(args) == 2:
        name, model = args
        if "/" in name or not name.replace("-", "_").replace(".", "_").isidentifier():
            raise UsageError(msg.BAD_ALIAS.format(name=name))
        m.aliases[name] = model
        display(Text(msg.ALIASED.format(name=name, model=model)))
    else:
        raise UsageError(msg.ALIAS_USAGE)


MODELS_SHOWN = 4  # a provider's models named in %rlm models' overview


def models(m: RLMMagics, args: list[str]) -> None:
    """%rlm models [PROVIDER]: the configured models, the aliases, and the chat models litellm knows for the keys set."""
    if len(args) > 1:
        raise UsageError(msg.MODELS_USAGE)
    known = chat_models_with_keys()
    if args:
        provider = args[0]
        if provider not in known:
            raise UsageError(msg.NO_PROVIDER.format(provider=provider, providers=", ".join(known) or "none"))
        display(Table(["model"], [[name] for name in known[provider]]))
        return
    effective = resolve(configured(m))
    rows = [
        [
            "model",
            str(effective["model"] or f"{msg.DEMO_MODEL} (offline demo policy)"),
            str(effective["api_base"] or ""),
        ],
        [
            "sub_model",
            str(effective["sub_model"] or msg.UNSET_MEANS["sub_model"]),
            str(effective["sub_api_base"] or ""),
        ],
        *[[f"alias {name}", model, ""] for name, model in m.aliases.items()],
    ]
    display(Table(["configured", "model", "served at"], rows))
    if known:
        sample = MODELS_SHOWN
        display(
            Table(
                ["provider", "chat models", "some of them"],
                [
                    [p, f"{len(names):,}", ", ".join(names[:sample]) + (" …" if len(names) > sample else "")]
                    for p, names in known.items()
                ],
            )
        )
        display(Text(msg.MODELS_MORE))
    else:
        display(Text(msg.NO_PROVIDER_KEYS))


def diff(m: RLMMagics, args: list[str]) -> None:
    """%rlm diff RUN_A RUN_B: two runs side by side, and the code they ran as a diff."""
    if len(args) != 2:
        raise UsageError(msg.DIFF_USAGE)
    first, second = (_run_numbered(m, ref) for ref in args)
    name_a, name_b = (f"run {ref}" for ref in args)
    rows = compare_runs(first.trace, second.trace)
    display(Table(["", name_a, name_b], [list(row) for row in rows]))
    changed = code_diff(first.trace, second.trace, name_a, name_b)
    display(Code(changed, language="diff") if changed else Text(msg.SAME_CODE))


def history(m: RLMMagics, args: list[str]) -> None:
    if not m.runs:
        display(Text(msg.NO_RUNS))
        return
    rows = []
    for number, run in enumerate(m.runs, 1):
        session = run.extra.get("session")
        turn = f"{session}.{run.extra.get('session_turn')}" if session is not None else "-"
        u = run.usage
        question = " ".join(run.query.split())[:60]
        tokens = u.input_tokens + u.output_tokens
        cached = f" (+{u.cached_calls:,} cached)" if u.cached_calls else ""
        rows.append(
            [
                str(number),
                turn,
                question,
                run.status,
                f"{u.llm_calls:,}{cached}",
                f"{tokens:,}",
                u.cost_text() or "-",
                f"{run.seconds:.1f}",
            ]
        )
    display(Table(["run", "session", "question", "status", "calls", "tokens", "cost", "seconds"], rows))


def export(m: RLMMagics, args: list[str]) -> None:
    run = take_option(args, "--run")
    with_context = True if take_flag(args, "--with-context") else False if take_flag(args, "--no-context") else None
    if len(args) != 1 or not args[0].endswith(".ipynb"):
        raise UsageError(msg.EXPORT_USAGE)
    result = _run_numbered(m, run)
    assert m.shell is not None  # set when IPython registers the magics
    context = m.shell.user_ns.get(result.extra.get("context_variable"))
    path = os.path.expanduser(args[0])
    exported = write_notebook(result.trace, path, context=context, with_context=with_context, earlier=result.earlier)
    note = msg.EXPORTED.format(path=exported.path, cells=exported.cells, context=exported.context)
    display(Text(note + ("" if exported.rerunnable else msg.EXPORT_CANNOT_RERUN)))


def replay(m: RLMMagics, args: list[str]) -> Any:
    name = take_option(args, "--context")
    if len(args) != 1:
        raise UsageError(msg.REPLAY_USAGE)
    trace = load_trace(os.path.expanduser(args[0]))
    return replay_whole(m, trace, m.context(name) if name else None, name)


def replay_whole(m: RLMMagics, trace: Trace, context: object, context_name: str | None) -> Any:
    """Replay a recorded run at once in the notebook's namespace, under a live view; the check's outcome."""
    settings = recorded_settings(trace)
    display(Code(code_to_replay(trace), language="python"))  # no cell shows a whole replay's code: show it first
    view, handle = m.view()
    assert m.shell is not None  # set when IPython registers the magics
    namespace = m.shell.user_ns
    repl = ShellREPL(m.shell, cell_timeout=settings.get("cell_timeout"), max_output_chars=settings["max_output_chars"])
    result = m.run_under_view(
        lambda: replay_run(trace, context, repl=repl, on_event=view, tools=namespace).result,
        view,
        handle,
        repl,
        context_name,
    )
    return m.checked(Replayed(result, trace.root))


SUBCOMMANDS: dict[str, Callable[[RLMMagics, list[str]], Any]] = {
    "config": config,
    "load": load,
    "show": show,
    "cells": cells,
    "insert": insert,
    "alias": alias,
    "models": models,
    "history": history,
    "diff": diff,
    "export": export,
    "replay": replay,
}


def near_miss(word: str) -> str | None:
    """The subcommand a one-word line most likely meant (a typo, another case), or None."""
    close = difflib.get_close_matches(word.lower(), SUBCOMMANDS, n=1, cutoff=0.7)
    return close[0] if close else None


def take_option(args: list[str], name: str) -> str | None:
    """Remove `name VALUE` from `args` and return VALUE (None when absent)."""
    if name not in args:
        return None
    at = args.index(name)
    if at + 1 >= len(args):
        raise UsageError(f"{name} needs a value")
    value = args[at + 1]
    del args[at : at + 2]
    return value


def take_flag(args: list[str], name: str) -> bool:
    if name not in args:
        return False
    args.remove(name)
    return True


def _run_numbered(m: RLMMagics, ref: str | None) -> RLMResult:
    if not m.runs:
        raise UsageError(msg.NO_RUNS)
    if ref is None:
        return m.runs[-1]
    if not ref.isdigit() or not 1 <= int(ref) <= len(m.runs):
        raise UsageError(msg.NO_SUCH_RUN.format(number=ref, count=len(m.runs)))
    return m.runs[int(ref) - 1]


def _node(m: RLMMagics, result: RLMResult, node_id: str | None) -> CallNode:
    trace = result.trace
    node = trace.nodes.get(node_id or trace.root_id or "")
    if node is None:
        number = m.runs.index(result) + 1
        raise UsageError(msg.NO_SUCH_NODE.format(node=node_id, number=number, nodes=", ".join(trace.nodes)))
    return node
