"""%rlm / %%rlm: thin adapters from the notebook to the engine.

Parsing and wiring live here; the engine runs the model, the view renders
its events, and messages.py holds every user-facing string.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import Code, display
from traitlets import Bool, Enum, Float, Int, Unicode, default
from traitlets.config import Configurable

from rlm_kernel.core import RLM, RLMResult, RunInterrupted
from rlm_kernel.core.context import ContextError, check_context, context_metadata, load_context
from rlm_kernel.jupyter import messages as msg
from rlm_kernel.jupyter.approval import notebook_approver
from rlm_kernel.jupyter.export import ExportError, cell_outputs, decode_payload, write_notebook
from rlm_kernel.jupyter.replay import Replayed, StepSession, load_trace, replay_run, show_outputs
from rlm_kernel.jupyter.shell_repl import ShellREPL
from rlm_kernel.models.replay import ReplayError, recorded_settings

SUBCOMMANDS = ("config", "load", "show", "cells", "insert", "history", "export", "replay")
_LINE_MAGIC = re.compile(r"^([ \t]*)%rlm[ \t]+(\S.*?)[ \t]*$")
_ENV_DEFAULTS = {"model": "RLM_MODEL", "sub_model": "RLM_SUB_MODEL", "api_base": "RLM_API_BASE"}


class RLMAnswer(str):
    """A text answer: a real str that a notebook renders as Markdown."""

    def _repr_markdown_(self) -> str:
        return str(self)


def protect_line_questions(lines: list[str]) -> list[str]:
    """Input transformer: pass `%rlm QUESTION?` to the magic whole.

    IPython reads a line ending in `?` as a help request for the last name on it,
    and most questions end in `?`. This runs before that rule and turns the line
    into an explicit magic call (a `%%rlm` cell is left alone).
    """
    if lines and lines[0].lstrip().startswith("%%"):
        return lines
    out = []
    for line in lines:
        match = _LINE_MAGIC.match(line)
        out.append(f"{match.group(1)}get_ipython().run_line_magic('rlm', {match.group(2)!r})\n" if match else line)
    return out


class _Text:
    """Markdown for notebooks, the same text for terminals (IPython's Markdown has no text/plain)."""

    def __init__(self, markdown: str) -> None:
        self.markdown = markdown

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/markdown": self.markdown, "text/plain": self.markdown}


class RLMRunError(UsageError):
    """A run that failed or hit a budget: IPython shows the one-line message, no traceback."""


@magics_class
class RLMMagics(Magics, Configurable):  # type: ignore[misc]
    """Ask a Recursive Language Model about a notebook variable."""

    model = Unicode(
        None,
        allow_none=True,
        help="litellm model name of the root model (default: $RLM_MODEL, else the offline demo policy).",
    ).tag(config=True)
    sub_model = Unicode(
        None, allow_none=True, help="Model for llm_query and child RLMs (default: $RLM_SUB_MODEL, else `model`)."
    ).tag(config=True)
    api_base = Unicode(
        None, allow_none=True, help="Base URL of an OpenAI-compatible server (default: $RLM_API_BASE)."
    ).tag(config=True)
    transport = Enum(
        ["litellm", "direct"],
        "litellm",
        help="How models are called: litellm (any provider), or direct: posted straight to the OpenAI-compatible api_base (less CPU per call, for large fan-outs).",
    ).tag(config=True)
    max_depth = Int(1, help="RLM levels: 1 = root with plain sub-model calls; 2 lets the root start child RLMs.").tag(
        config=True
    )
    max_iterations = Int(20, help="Replies the root model may make before it must answer.").tag(config=True)
    max_llm_calls = Int(None, allow_none=True, help="Model calls allowed for the whole call tree.").tag(config=True)
    max_tokens = Int(None, allow_none=True, help="Input plus output tokens allowed for the whole call tree.").tag(
        config=True
    )
    max_cost_usd = Float(
        None, allow_none=True, help="US dollars allowed for the whole call tree (priced models only)."
    ).tag(config=True)
    max_output_tokens = Int(
        4096,
        help="Output tokens one model call may use; applied only under a token or cost budget, which reserves it per call.",
    ).tag(config=True)
    max_seconds = Float(None, allow_none=True, help="Wall-clock seconds allowed for a run.").tag(config=True)
    cell_timeout = Float(
        None, allow_none=True, help="Seconds one model-written code block may run before it is stopped."
    ).tag(config=True)
    max_output_chars = Int(10_000, help="Characters of a code block's output shown to the model (head and tail).").tag(
        config=True
    )
    concurrency = Int(16, help="Sub-model calls in flight at once.").tag(config=True)
    approve = Bool(
        False,
        help="Show each model-written block and run it only when the user answers y (needs a frontend that takes input).",
    ).tag(config=True)
    isolated = Bool(
        False,
        help="Run model code in a separate resource-limited kernel: the notebook's variables stay out of its reach.",
    ).tag(config=True)
    isolated_memory_mb = Int(2048, help="Address-space limit of an isolated kernel, in MiB (0: none).").tag(config=True)
    isolated_cpu_seconds = Float(600.0, help="CPU seconds an isolated kernel may use over its life (0: no limit).").tag(
        config=True
    )

    def __init__(self, shell: Any) -> None:
        Configurable.__init__(self, config=shell.config)
        Magics.__init__(self, shell=shell)
        shell.configurables.append(self)
        self.runs: list[RLMResult] = []
        self.default_context: str | None = None
        self.replay: StepSession | None = None  # the replay an exported notebook is stepping through

    @default("model")
    def _model_from_env(self) -> str | None:
        return os.environ.get("RLM_MODEL") or None

    @default("sub_model")
    def _sub_model_from_env(self) -> str | None:
        return os.environ.get("RLM_SUB_MODEL") or None

    @default("api_base")
    def _api_base_from_env(self) -> str | None:
        return os.environ.get("RLM_API_BASE") or None

    @no_var_expand
    @magic_arguments()
    @argument("--context", "-c", help="notebook variable holding the context (default: the one from %%rlm load)")
    @argument("--model", "-m", help="root model for this run")
    @argument("--sub-model", help="model for llm_query and child RLMs")
    @argument("--api-base", help="base URL of an OpenAI-compatible server")
    @argument("--depth", type=int, help="max_depth for this run")
    @argument("--max-iterations", type=int, help="max_iterations for this run")
    @argument("--budget", type=float, help="max_cost_usd for this run")
    @argument("--timeout", type=float, help="max_seconds for this run")
    @argument("--out", help="also store the answer in this variable")
    @argument("--trace", help="append the run's events to this JSONL file")
    @argument("--approve", action="store_true", help="show each model-written block and run it only on a yes")
    @argument(
        "--isolated", action="store_true", help="run model code in a separate limited kernel, not in this namespace"
    )
    @line_cell_magic
    def rlm(self, line: str, cell: str | None = None) -> Any:
        """Ask a Recursive Language Model about a notebook variable.

        %%rlm [options] with the question as the cell body, or %rlm QUESTION on one line.
        The root model never sees the context itself: it writes code against the variable
        `context` in this notebook's namespace, calls sub-models on pieces, and submits an answer.

        Subcommands:
          %rlm config                      effective settings and where each comes from
          %rlm load PATH_OR_GLOB [--as N]  read files into a variable, the default context
          %rlm show [RUN]                  redisplay the call tree of a run (default: the last)
          %rlm cells [NODE] [--run RUN]    a node's model-written code blocks and their outputs
          %rlm insert NODE[:ITERATION]     put one model-written cell below this one
          %rlm history                     this session's runs
          %rlm export PATH.ipynb [--run N] [--with-context | --no-context]
                                           a run as a notebook that reads as a report and re-runs offline
          %rlm replay EXPORT.ipynb|TRACE.jsonl [--context NAME]
                                           run a recorded run again with no model, and check its answer

        An exported notebook replays itself with %%rlm_replay (its hidden setup cell), %%rlm_step
        (one model-written block) and %rlm_replay_check (its last cell).
        """
        if cell is not None:
            return self._ask(cell, parse_argstring(self.rlm, line))
        word, _, rest = line.strip().partition(" ")
        if word in SUBCOMMANDS:
            return getattr(self, f"_cmd_{word}")(rest.strip(), word)
        return self._ask(line, parse_argstring(self.rlm, ""))

    # -- asking -----------------------------------------------------------------------

    def _ask(self, question: str, opts: Any) -> Any:
        question = question.strip()
        if not question:
            raise UsageError(msg.EMPTY_QUESTION)
        context = self._context(opts.context)
        model = opts.model or self.model
        if not model:
            display(_Text(msg.NO_MODEL_NOTE))
            model = msg.DEMO_MODEL
        approver = notebook_approver(self.shell) if opts.approve or self.approve else False
        isolated = opts.isolated or self.isolated
        # Isolated: the engine starts a kernel per node; the notebook namespace is never the REPL.
        repl = (
            None
            if isolated
            else ShellREPL(self.shell, cell_timeout=self.cell_timeout, max_output_chars=self.max_output_chars)
        )
        try:
            rlm = RLM(
                model=model,
                sub_model=opts.sub_model or self.sub_model,
                api_base=opts.api_base or self.api_base,
                max_depth=opts.depth or self.max_depth,
                max_iterations=opts.max_iterations or self.max_iterations,
                max_llm_calls=self.max_llm_calls,
                max_tokens=self.max_tokens,
                max_cost_usd=opts.budget if opts.budget is not None else self.max_cost_usd,
                max_seconds=opts.timeout if opts.timeout is not None else self.max_seconds,
                max_output_chars=self.max_output_chars,
                max_output_tokens=self.max_output_tokens,
                concurrency=self.concurrency,
                cell_timeout=self.cell_timeout,
                trace_path=opts.trace,
                approve=approver,
                isolation="kernel" if isolated else None,
                transport=self.transport,
                isolation_limits={
                    "memory_limit": self.isolated_memory_mb * 1024**2 or None,
                    "cpu_seconds": self.isolated_cpu_seconds or None,
                },
            )
        except ValueError as exc:  # settings that do not fit together
            raise UsageError(str(exc)) from None
        view, handle = self._view()
        rlm.on_event.append(view)
        context_variable = opts.context or self.default_context
        result = self._run(lambda: rlm.completion(context, question, repl=repl), view, handle, repl, context_variable)
        if opts.out:
            self.shell.user_ns[opts.out] = result.answer
        if result.status == "max_iterations":
            display(_Text(f"*{msg.STOPPED_AT_LIMIT}*"))
        return RLMAnswer(result.answer) if isinstance(result.answer, str) else result.answer

    def _view(self) -> tuple[Any, Any]:
        from rlm_kernel.jupyter.view import TraceView  # ipywidgets only when a run starts

        view = TraceView()
        return view, display(view, display_id=True)

    def _run(
        self,
        complete: Callable[[], RLMResult],
        view: Any,
        handle: Any,
        repl: ShellREPL | None,
        context_variable: str | None,
    ) -> RLMResult:
        """Run to the end under the live view; a failed or stopped run fails the cell and keeps its partial trace."""
        try:
            result = complete()
        except RunInterrupted as stop:
            self._finish(stop.result, view, handle, repl, context_variable)
            raise KeyboardInterrupt from None
        except (ContextError, ReplayError) as exc:
            if repl is not None:
                repl.restore()
            raise UsageError(str(exc)) from None
        self._finish(result, view, handle, repl, context_variable)
        if result.status not in ("done", "max_iterations"):
            raise RLMRunError(msg.RUN_FAILED.format(status=result.status, error=result.error))
        return result

    def _finish(
        self, result: RLMResult, view: Any, handle: Any, repl: ShellREPL | None, context_variable: str | None
    ) -> None:
        if repl is not None:
            repl.restore()
        view.close()
        if handle is not None:
            handle.update(view)  # the final bundle: its text/html fallback now holds the whole tree
        # The name, not the value: `%rlm export` embeds the context if the variable still holds it.
        result.extra["context_variable"] = context_variable
        self._record(result)

    def _record(self, result: RLMResult) -> None:
        self.runs.append(result)
        self.shell.user_ns["rlm_last"] = result

    def _context(self, name: str | None) -> object:
        if name is None and self.default_context is None:
            raise UsageError(msg.NO_CONTEXT)
        target = name or self.default_context
        if target not in self.shell.user_ns:
            raise UsageError((msg.UNKNOWN_VARIABLE if name else msg.DEFAULT_CONTEXT_GONE).format(name=target))
        context = self.shell.user_ns[target]
        try:
            check_context(context)
        except ContextError as exc:
            raise UsageError(f"{target}: {exc}") from None
        return context

    # -- subcommands ----------------------------------------------------------------------

    def _cmd_config(self, rest: str, word: str) -> None:
        configured = self.config.get("RLMMagics", {})
        rows = ["| setting | value | from |", "|---|---|---|"]
        for name in sorted(self.class_trait_names(config=True)):
            env = _ENV_DEFAULTS.get(name)
            if name in configured:
                source = "%config / profile"
            elif env and os.environ.get(env):
                source = f"${env}"
            else:
                source = "default"
            value = getattr(self, name)
            if name == "model" and value is None:
                value = f"{msg.DEMO_MODEL} (offline demo policy)"
            rows.append(f"| {name} | `{value}` | {source} |")
        display(_Text("\n".join(rows)))

    def _cmd_load(self, rest: str, word: str) -> None:
        args = self._split(rest, word)
        name = "context"
        if "--as" in args:
            at = args.index("--as")
            if at + 1 >= len(args):
                raise UsageError("--as needs a variable name")
            name = args[at + 1]
            del args[at : at + 2]
        if len(args) != 1 or not name.isidentifier():
            raise UsageError("usage: %rlm load PATH_OR_GLOB [--as NAME]")
        try:
            value = load_context(os.path.expanduser(args[0]))
        except ContextError as exc:
            raise UsageError(str(exc)) from None
        self.shell.user_ns[name] = value
        self.default_context = name
        meta = context_metadata(value)
        description = f"{meta.type} of {meta.length:,} characters" + (f", {meta.items:,} items" if meta.items else "")
        display(_Text(msg.LOADED.format(description=description, source=args[0], name=name)))

    def _cmd_show(self, rest: str, word: str) -> Any:
        from rlm_kernel.jupyter.view import TraceView

        result = self._run_numbered(rest or None)
        return TraceView.from_trace(result.trace)

    def _cmd_cells(self, rest: str, word: str) -> None:
        args = self._split(rest, word)
        run = None
        if "--run" in args:
            at = args.index("--run")
            run = args[at + 1] if at + 1 < len(args) else ""
            del args[at : at + 2]
        result = self._run_numbered(run)
        node = self._node(result, args[0] if args else None)
        shown = False
        for iteration in node.iterations:
            for cell in iteration.cells:
                shown = True
                display(
                    _Text(
                        f"**{node.id}:{iteration.index}** block {cell.index + 1}" + (" (error)" if cell.error else "")
                    )
                )
                display(Code(cell.code, language="python"))
                display(_Text("```text\n" + (cell.output or "(no output)") + "\n```"))
        if not shown:
            display(_Text(msg.NO_CODE.format(node=node.id)))

    def _cmd_insert(self, rest: str, word: str) -> None:
        target = self._split(rest, word)
        if len(target) != 1:
            raise UsageError("usage: %rlm insert NODE[:ITERATION]")
        node_ref, _, iteration_ref = target[0].partition(":")
        result = self._run_numbered(None)
        node = self._node(result, node_ref)
        with_code = [it for it in node.iterations if it.cells]
        if not with_code:
            raise UsageError(msg.NO_CODE.format(node=node.id))
        if iteration_ref:
            chosen = [it for it in with_code if str(it.index) == iteration_ref]
            if not chosen:
                raise UsageError(msg.NO_SUCH_ITERATION.format(node=node.id, iteration=iteration_ref))
            iteration = chosen[0]
        else:
            iteration = with_code[-1]
        header = f"# rlm: {node.id} iteration {iteration.index} (model-written)\n"
        self.shell.set_next_input(header + "\n\n".join(c.code.rstrip() for c in iteration.cells), replace=False)
        display(_Text(msg.INSERTED.format(node=node.id, iteration=iteration.index)))

    def _cmd_history(self, rest: str, word: str) -> None:
        if not self.runs:
            display(_Text(msg.NO_RUNS))
            return
        rows = ["| run | question | status | calls | tokens | cost | seconds |", "|---|---|---|---|---|---|---|"]
        for number, run in enumerate(self.runs, 1):
            u = run.usage
            question = " ".join(run.query.split())[:60].replace("|", "\\|")
            cost = f"${u.cost_usd:.4f}" if u.cost_known else "unknown"
            rows.append(
                f"| {number} | {question} | {run.status} | {u.llm_calls} | {u.input_tokens + u.output_tokens:,} | {cost} | {run.seconds:.1f} |"
            )
        display(_Text("\n".join(rows)))

    def _cmd_export(self, rest: str, word: str) -> None:
        args = self._split(rest, word)
        run = _take_option(args, "--run")
        with_context = (
            True if _take_flag(args, "--with-context") else False if _take_flag(args, "--no-context") else None
        )
        if len(args) != 1 or not args[0].endswith(".ipynb"):
            raise UsageError(msg.EXPORT_USAGE)
        result = self._run_numbered(run)
        name = result.extra.get("context_variable")
        try:
            exported = write_notebook(
                result.trace,
                os.path.expanduser(args[0]),
                context=self.shell.user_ns.get(name),
                with_context=with_context,
            )
        except (ExportError, OSError) as exc:
            raise UsageError(str(exc)) from None
        note = msg.EXPORTED.format(path=exported.path, cells=exported.cells, context=exported.context)
        display(_Text(note + ("" if exported.rerunnable else msg.EXPORT_CANNOT_RERUN)))

    def _cmd_replay(self, rest: str, word: str) -> Any:
        args = self._split(rest, word)
        name = _take_option(args, "--context")
        if len(args) != 1:
            raise UsageError(msg.REPLAY_USAGE)
        try:
            trace = load_trace(os.path.expanduser(args[0]))
            settings = recorded_settings(trace)
        except (OSError, ValueError, ReplayError) as exc:  # a missing or damaged file, or not a trace
            raise UsageError(f"{args[0]}: {exc}") from None
        context = self._context(name) if name else None
        view, handle = self._view()
        repl = ShellREPL(
            self.shell, cell_timeout=settings["cell_timeout"], max_output_chars=settings["max_output_chars"]
        )
        result = self._run(
            lambda: replay_run(trace, context, repl=repl, on_event=view).result, view, handle, repl, name
        )
        return self._checked(Replayed(result, trace.root))  # type: ignore[arg-type]

    def _checked(self, replayed: Replayed) -> Any:
        """The replayed answer; a replay that ended otherwise than the recording fails the cell and says how."""
        if not replayed.matches:
            ended = replayed.replayed
            raise RLMRunError(
                msg.REPLAY_MISMATCH.format(
                    recorded=_ending(replayed.recorded), replayed=_ending(ended) if ended else "nothing"
                )
            )
        display(_Text(msg.REPLAY_MATCHES.format(status=replayed.recorded.status)))
        answer = replayed.result.answer
        return RLMAnswer(answer) if isinstance(answer, str) else answer

    # -- a replayed export: its setup cell, its model-written cells, its check ----------------

    @no_var_expand
    @cell_magic
    def rlm_replay(self, line: str, cell: str) -> None:
        """Start replaying the run recorded in this cell's body: the setup cell of an exported notebook.

        %%rlm_replay [--context NAME] replays with a notebook variable as the context, for an
        export that left the context out. Then run the cells below in order.
        """
        args = self._split(line, "rlm_replay")
        name = _take_option(args, "--context")
        if args:
            raise UsageError(msg.SETUP_USAGE)
        try:
            trace = decode_payload(cell)
        except ExportError as exc:
            raise UsageError(str(exc)) from None
        context = self._context(name) if name else None
        if self.replay is not None:
            self.replay.close()
            self.replay = None
        try:
            self.replay = StepSession(self.shell, trace, context)
        except (ReplayError, ContextError) as exc:
            raise UsageError(str(exc)) from None
        root = trace.root
        display(_Text(msg.REPLAY_STARTED.format(node=root.id, query=" ".join(root.query.split()))))  # type: ignore[union-attr]

    @no_var_expand
    @cell_magic
    def rlm_step(self, line: str, cell: str) -> Any:
        """%%rlm_step NODE ITERATION BLOCK: one model-written block of a replayed export, its code as the body.

        A depth-0 block runs now, in this namespace, with the replayed run's context, llm_query,
        FINAL...; a child's block shows what it printed when its parent's block ran it.
        """
        parts = line.split()
        if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
            raise UsageError(msg.STEP_USAGE)
        try:
            result = self._replay_session().step(parts[0], int(parts[1]), int(parts[2]), cell)
        except ReplayError as exc:
            raise UsageError(str(exc)) from None
        return show_outputs(cell_outputs(result))

    @line_magic
    def rlm_replay_check(self, line: str) -> Any:
        """The last cell of a replayed export: waits for the run's end and checks its answer against the recorded one."""
        session = self._replay_session()
        try:
            replayed = session.finish()
        except ReplayError as exc:
            raise UsageError(str(exc)) from None
        self.replay = None
        self._record(replayed.result)
        return self._checked(replayed)

    def _replay_session(self) -> StepSession:
        if self.replay is None:
            raise UsageError(msg.NO_REPLAY)
        return self.replay

    # -- helpers ------------------------------------------------------------------------------

    def _split(self, rest: str, word: str) -> list[str]:
        try:
            return shlex.split(rest)
        except ValueError as exc:
            raise UsageError(f"{exc}. {msg.SUBCOMMAND_HINT.format(word=word)}") from None

    def _run_numbered(self, ref: str | None) -> RLMResult:
        if not self.runs:
            raise UsageError(msg.NO_RUNS)
        if ref is None:
            return self.runs[-1]
        if not ref.isdigit() or not 1 <= int(ref) <= len(self.runs):
            raise UsageError(msg.NO_SUCH_RUN.format(number=ref, count=len(self.runs)))
        return self.runs[int(ref) - 1]

    def _node(self, result: RLMResult, node_id: str | None) -> Any:
        trace = result.trace
        node = trace.nodes.get(node_id or trace.root_id or "")
        if node is None:
            number = self.runs.index(result) + 1
            raise UsageError(msg.NO_SUCH_NODE.format(node=node_id, number=number, nodes=", ".join(trace.nodes)))
        return node


def _ending(node: Any) -> str:
    answer = " ".join(str(node.answer).split())
    return f"{node.status} with {answer[:200]!r}" if node.answer is not None else f"{node.status} with no answer"


def _take_option(args: list[str], name: str) -> str | None:
    """Remove `name VALUE` from `args` and return VALUE (None when absent)."""
    if name not in args:
        return None
    at = args.index(name)
    if at + 1 >= len(args):
        raise UsageError(f"{name} needs a value")
    value = args[at + 1]
    del args[at : at + 2]
    return value


def _take_flag(args: list[str], name: str) -> bool:
    if name not in args:
        return False
    args.remove(name)
    return True
