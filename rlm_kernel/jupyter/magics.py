"""%rlm / %%rlm: thin adapters from the notebook to the engine.

Parsing and wiring live here and in subcommands.py; the engine runs the model, the view
renders its events, and messages.py holds every user-facing string. Every project error
(`RLMError`) and file error becomes a plain one-line `UsageError` in one place, `_one_line`.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import typing
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.display import display
from traitlets import Bool

from rlm_kernel.core import RLM, RLMResult, RunInterrupted
from rlm_kernel.core.config import RunConfig
from rlm_kernel.core.context import check_context
from rlm_kernel.core.errors import RLMError, RunFailed, UnpricedModelWarning
from rlm_kernel.core.redact import Redactor
from rlm_kernel.core.session import Session
from rlm_kernel.formats.notebook import WHOLE_FLAG, cell_outputs, decode_payload
from rlm_kernel.formats.rerun import Replayed
from rlm_kernel.formats.steps import parse_step_line
from rlm_kernel.jupyter import messages as msg
from rlm_kernel.jupyter import subcommands
from rlm_kernel.jupyter.approval import notebook_approver
from rlm_kernel.jupyter.options import SettingTraits, cell_parser, configured, options_help
from rlm_kernel.jupyter.replay import StepSession, find_export_payload, show_outputs
from rlm_kernel.jupyter.shell_repl import ShellREPL
from rlm_kernel.jupyter.text import MarkdownAnswer, Note, RLMAnswer, Text

_LINE_MAGIC = re.compile(r"^([ \t]*)%rlm[ \t]+(\S.*?)[ \t]*$")
F = TypeVar("F", bound=Callable[..., Any])


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


def _one_line(method: F) -> F:
    """The one translation of errors: a project or file error fails the cell with one line, no traceback.

    IPython hides the traceback only for `UsageError` itself, never for a subclass.
    """

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except RLMError as exc:
            raise UsageError(Redactor().text(str(exc))) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise UsageError(f"{where}{exc.strerror or exc}") from None

    return wrapper  # type: ignore[return-value]


@magics_class
class RLMMagics(Magics, SettingTraits):  # type: ignore[misc, valid-type]
    """Ask a Recursive Language Model about a notebook variable. Every setting is a traitlet (SettingTraits)."""

    batch_view = Bool(True, help=msg.BATCH_VIEW_HELP).tag(config=True)

    def __init__(self, shell: Any) -> None:
        SettingTraits.__init__(self, config=shell.config)
        Magics.__init__(self, shell=shell)
        self.runs: list[RLMResult] = []
        self.default_context: str | None = None
        self.aliases: dict[str, str] = {}  # %rlm alias NAME MODEL: NAME stands for MODEL in --model / --sub-model
        self.replay: StepSession | None = None  # the replay an exported notebook is stepping through
        self.session: Session | None = None  # the conversation later cells continue (%%rlm --new starts another)

    @no_var_expand
    @line_cell_magic
    @_one_line
    def rlm(self, line: str, cell: str | None = None) -> Any:
        """Ask a Recursive Language Model about a notebook variable.

        %%rlm [options] with the question as the cell body, %rlm QUESTION on one line, or
        %rlm --question-from NAME [options] with the question in a notebook string (a papermill parameter).
        The root model never sees the context itself: it writes code against the variable
        `context` in this notebook's namespace, calls sub-models on pieces, and submits an answer.

        Subcommands:
          %rlm config [--changed]          effective settings and where each comes from (--changed: not defaults)
          %rlm load PATH_OR_GLOB [--as N]  read files into a variable, the default context
          %rlm show [RUN]                  redisplay the call tree of a run (default: the last)
          %rlm cells [NODE] [--run RUN]    a node's model-written code blocks and their outputs
          %rlm insert NODE[:ITERATION] [--run RUN] [--live]
                                           put one model-written cell below this one that runs as it stands
          %rlm history                     this session's runs
          %rlm diff RUN_A RUN_B            two runs side by side: settings, answer, usage, time, code
          %rlm models [PROVIDER]           the configured models, aliases, and the models litellm knows for your keys
          %rlm alias NAME MODEL            NAME stands for MODEL in --model / --sub-model (--remove NAME)
          %rlm export PATH.ipynb [--run N] [--with-context | --no-context]
                                           a run as a notebook that reads as a report and re-runs offline
          %rlm replay EXPORT.ipynb|TRACE.jsonl [--context NAME]
                                           run a recorded run again with no model, and check its answer

        An exported notebook replays itself with %rlm_replay (its hidden setup cell), %%rlm_step
        (one model-written block) and %rlm_replay_check (its last cell).
        """
        if cell is not None:
            return self.ask(cell, self.split(line, "rlm"))
        if line.lstrip().startswith("--"):  # options only: `%rlm --question-from NAME ...` (a cell magic needs a body)
            return self.ask("", self.split(line, "rlm"))
        word, _, rest = line.strip().partition(" ")
        if word in subcommands.SUBCOMMANDS:
            return subcommands.SUBCOMMANDS[word](self, self.split(rest, word))
        suggestion = subcommands.near_miss(word) if not rest else None
        if suggestion is not None:  # a typo must not become a paid question about the default context
            raise UsageError(msg.NEAR_MISS.format(word=word, suggestion=suggestion))
        return self.ask(line, [])

    rlm.__doc__ = (rlm.__doc__ or "") + options_help()

    # -- asking -----------------------------------------------------------------------

    def ask(self, question: str, args: list[str]) -> Any:
        opts = cell_parser().parse_args(args)
        question = question.strip()
        if opts.question_from:
            if question:
                raise UsageError(msg.QUESTION_TWICE.format(name=opts.question_from))
            # The variable's text as it is: no {braces} or $names are expanded (papermill parameters carry any text).
            question = self.notebook_object(opts.question_from, "--question-from", str).strip()
        if not question:
            raise UsageError(msg.EMPTY_QUESTION)
        cell_only = ("context", "out", "new", "tools", "answer_type", "instructions", "question_from", "format")
        per_cell = {k: v for k, v in vars(opts).items() if v is not None and k not in cell_only}
        settings = {**configured(self), **per_cell}
        for name in ("model", "sub_model"):
            if isinstance(chosen := settings.get(name), str):
                settings[name] = self.aliases.get(chosen, chosen)
        if opts.instructions:
            settings["instructions"] = self.notebook_object(opts.instructions, "--instructions", str)
        tools = [
            self.notebook_object(name.strip(), "--tools", None)
            for name in (opts.tools or "").split(",")
            if name.strip()
        ]
        answer_type = self.notebook_object(opts.answer_type, "--answer-type", type) if opts.answer_type else None
        context = self.context(opts.context)
        if not (settings.get("model") or os.environ.get("RLM_MODEL")):
            display(Text(msg.NO_MODEL_NOTE))
            settings["model"] = msg.DEMO_MODEL
        settings.setdefault("model", None)  # None: the engine takes RLM_MODEL, as for every setting left unset
        approve = settings.pop("approve", None)
        rlm = RLM(approve=notebook_approver(self.shell) if approve else False, tools=tools or None, **settings)
        for warning in rlm.pricing_warnings():  # on every such run, in the output: not a Python warning once a kernel
            display(Note(msg.UNPRICED_BUDGET.format(warning=warning)))
        if opts.new or self.session is None:  # a later cell continues the conversation unless told otherwise
            if self.session is not None:
                self.session.close()
            self.session = Session(rlm)
        session = self.session
        if session.turns and session.turns[-1].query == question:
            session.rewind()  # the last cell run again: the same question in place of its first run, not a follow-up
        # Isolated: the engine starts a sandboxed REPL per node; the notebook namespace is never the REPL.
        repl = None
        if rlm.config.isolation.mode is None:
            loop = rlm.config.loop
            repl = ShellREPL(self.shell, cell_timeout=loop.cell_timeout, max_output_chars=loop.max_output_chars)
        view, handle = self.view()
        rlm.on_event.append(view)
        context_variable = opts.context or self.default_context
        result = self.run_under_view(
            lambda: session.completion(context, question, rlm=rlm, repl=repl, answer_type=answer_type),
            view,
            handle,
            repl,
            context_variable,
            rlm.config,
        )
        if opts.out:
            assert self.shell is not None  # set when IPython registers the magics
            self.shell.user_ns[opts.out] = result.answer
        if result.status == "max_iterations":
            display(Text(f"*{msg.STOPPED_AT_LIMIT}*"))
        if not isinstance(result.answer, str):
            return result.answer
        return MarkdownAnswer(result.answer) if opts.format == "markdown" else RLMAnswer(result.answer)

    def notebook_object(self, name: str, option: str, kind: type | None) -> Any:
        """The notebook variable `name` names, checked to be a `kind` (a function when None)."""
        assert self.shell is not None  # set when IPython registers the magics
        if name not in self.shell.user_ns:
            raise UsageError(msg.UNKNOWN_OBJECT.format(option=option, name=name))
        value = self.shell.user_ns[name]
        fits = callable(value) if kind is None else (isinstance(value, kind) or (kind is type and _is_generic(value)))
        if not fits:
            wanted = "a function" if kind is None else "a string" if kind is str else "a type"
            raise UsageError(msg.WRONG_OBJECT.format(option=option, name=name, wanted=wanted, got=type(value).__name__))
        return value

    def view(self) -> tuple[Any, Any]:
        from rlm_kernel.jupyter.view import TraceView  # ipywidgets only when a run starts

        view = TraceView()
        return view, display(view, display_id=True)

    def run_under_view(
        self,
        complete: Callable[[], RLMResult],
        view: Any,
        handle: Any,
        repl: ShellREPL | None,
        context_variable: str | None,
        config: RunConfig | None = None,
    ) -> RLMResult:
        """Run to the end under the live view; a failed or stopped run fails the cell and keeps its partial trace."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UnpricedModelWarning)  # shown as a note when the run starts
                result = complete()
        except RunInterrupted as stop:
            self._finish(stop.result, view, handle, repl, context_variable, config)
            raise UsageError(msg.INTERRUPTED.format(seconds=stop.result.seconds)) from None
        except BaseException:
            if repl is not None:
                repl.restore()
            _settle(view, handle)
            raise
        self._finish(result, view, handle, repl, context_variable, config)
        if result.status not in ("done", "max_iterations"):
            raise RunFailed(msg.RUN_FAILED.format(status=result.status, error=result.error), result)
        return result

    def _finish(
        self,
        result: RLMResult,
        view: Any,
        handle: Any,
        repl: ShellREPL | None,
        context_variable: str | None,
        config: RunConfig | None,
    ) -> None:
        if repl is not None:
            repl.restore()
            result.replaced = repl.replaced()
        _settle(view, handle, error_below=result.status not in ("done", "max_iterations"))
        # The name, not the value: `%rlm export` embeds the context if the variable still holds it.
        result.extra["context_variable"] = context_variable
        if config is not None:  # what an inserted cell's --live sub-model calls are made with (keys stay in memory)
            result.extra["config"] = config
        self.record(result)
        if result.replaced:
            names = ", ".join(f"`{name}`" for name in result.replaced)
            variables = "variable" if len(result.replaced) == 1 else "variables"
            display(Text(msg.REBOUND.format(variables=variables, names=names)))

    def record(self, result: RLMResult) -> None:
        self.runs.append(result)
        assert self.shell is not None  # set when IPython registers the magics
        self.shell.user_ns["rlm_last"] = result

    def context(self, name: str | None) -> object:
        if name is None and self.default_context is None:
            raise UsageError(msg.NO_CONTEXT)
        target = name or self.default_context
        assert self.shell is not None  # set when IPython registers the magics
        if target not in self.shell.user_ns:
            raise UsageError((msg.UNKNOWN_VARIABLE if name else msg.DEFAULT_CONTEXT_GONE).format(name=target))
        context = self.shell.user_ns[target]
        try:
            check_context(context)
        except RLMError as exc:
            raise UsageError(f"{target}: {exc}") from None
        return context

    def checked(self, replayed: Replayed) -> Any:
        """The replayed answer; a replay that ended otherwise than the recording fails the cell and says how."""
        if not replayed.matches:
            ended = replayed.replayed
            raise UsageError(
                msg.REPLAY_MISMATCH.format(
                    recorded=_ending(replayed.recorded), replayed=_ending(ended) if ended else "nothing"
                )
            )
        display(Text(msg.REPLAY_MATCHES.format(status=replayed.recorded.status)))
        answer = replayed.result.answer
        return RLMAnswer(answer) if isinstance(answer, str) else answer

    # -- a replayed export: its setup cell, its model-written cells, its check ----------------

    @no_var_expand
    @line_cell_magic
    @_one_line
    def rlm_replay(self, line: str, cell: str | None = None) -> Any:
        """Start replaying an exported run: the hidden setup cell of an exported notebook.

        %rlm_replay ID reads the replay data stored under ID in the notebook file's metadata (the
        kernel looks for the file that holds ID; --from PATH.ipynb names it). --context NAME replays
        with a notebook variable as the context, for an export that left the context out. Then run
        the cells below in order. Older exports carry the data in the cell: %%rlm_replay [--context NAME].
        %rlm_replay ID --whole replays a run at once (a session's earlier question, before the one exported).
        """
        args = self.split(line, "rlm_replay")
        name = subcommands.take_option(args, "--context")
        from_path = subcommands.take_option(args, "--from")
        whole = subcommands.take_flag(args, WHOLE_FLAG)
        if cell is not None and not args and from_path is None:
            trace = decode_payload(cell)
        elif cell is None and len(args) == 1:
            assert self.shell is not None  # set when IPython registers the magics
            trace = find_export_payload(args[0], self.shell.user_ns, from_path)
        else:
            raise UsageError(msg.SETUP_USAGE)
        context = self.context(name) if name else None
        if whole:
            return subcommands.replay_whole(self, trace, context, name)
        if self.replay is not None:
            self.replay.close()
            self.replay = None
        self.replay = StepSession(self.shell, trace, context)
        root = trace.root
        display(Text(msg.REPLAY_STARTED.format(node=root.id, query=" ".join(root.query.split()))))  # type: ignore[union-attr]

    @no_var_expand
    @cell_magic
    @_one_line
    def rlm_step(self, line: str, cell: str) -> Any:
        """%%rlm_step NODE iteration I block B: one model-written block of a replayed export, its code as the body.

        A depth-0 block runs now, in this namespace, with the replayed run's context, llm_query,
        FINAL...; a child's block shows what it printed when its parent's block ran it.
        """
        step = parse_step_line(line)
        if step is None:
            raise UsageError(msg.STEP_USAGE)
        result = self._replay_session().step(*step, cell)
        return show_outputs(cell_outputs(result))

    @line_magic
    @_one_line
    def rlm_replay_check(self, line: str) -> Any:
        """The last cell of a replayed export: waits for the run's end and checks its answer against the recorded one."""
        replayed = self._replay_session().finish()
        self.replay = None
        self.record(replayed.result)
        return self.checked(replayed)

    def _replay_session(self) -> StepSession:
        if self.replay is None:
            raise UsageError(msg.NO_REPLAY)
        return self.replay

    def split(self, rest: str, word: str) -> list[str]:
        try:
            return shlex.split(rest)
        except ValueError as exc:
            raise UsageError(f"{exc}. {msg.SUBCOMMAND_HINT.format(word=word)}") from None


def _settle(view: Any, handle: Any, error_below: bool = False) -> None:
    """The run has ended: the static tree takes the live widgets' place, so every reader of the notebook has it."""
    view.close()
    if handle is not None:
        handle.update(view.static(error_below))
    view.release()


def _is_generic(value: Any) -> bool:
    """list[int] and the like: types an answer may have that are not classes."""
    return typing.get_origin(value) is not None


def _ending(node: Any) -> str:
    answer = " ".join(str(node.answer).split())
    return f"{node.status} with {answer[:200]!r}" if node.answer is not None else f"{node.status} with no answer"
