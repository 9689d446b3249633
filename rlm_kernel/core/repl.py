"""The REPL protocol the engine runs model code through, and its in-process implementation."""

from __future__ import annotations

import ast
import builtins
import functools
import itertools
import linecache
import reprlib
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rlm_kernel.core.aio import RunCancelled
from rlm_kernel.core.capture import capture_thread_output, truncate
from rlm_kernel.core.config import RunConfig
from rlm_kernel.core.deadlines import CellTimeout, Deadline, reachable, stops_enclosing
from rlm_kernel.core.errors import ConfigError, SubmitAnswer


@dataclass
class ExecResult:
    """What running one code block produced."""

    stdout: str = ""
    stderr: str = ""
    value: str | None = None  # display of the trailing expression, as a notebook shows it
    error: str | None = None  # plain-text traceback
    submitted: SubmitAnswer | None = None
    seconds: float = 0.0

    def observation(self) -> str:
        parts = [self.stdout, self.stderr]
        if self.value is not None:
            parts.append(self.value)
        if self.error:
            parts.append(self.error)
        return "".join(p if p.endswith("\n") else p + "\n" for p in parts if p).rstrip("\n")


class REPL(Protocol):
    """Where model-written code runs: a namespace that persists across blocks."""

    def execute(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run one block; `timeout` (seconds) stops it early when the run's time budget is short."""
        ...

    def set(self, name: str, value: object) -> None: ...

    def get(self, name: str, default: object = None) -> object: ...

    def names(self) -> list[str]: ...

    def snapshot(self) -> dict[str, int]:
        """An identity per name (equal while the name stays bound to the same object): shows what code rebound."""
        ...

    def close(self) -> None:
        """Release what the REPL holds (a worker process, its files); whoever made the REPL calls it, once done."""
        ...


# Builds an isolated REPL: keyword arguments cell_timeout, max_output_chars and the isolation limits.
ReplFactory = Callable[..., REPL]
_isolations: dict[str, Callable[[], ReplFactory]] = {}


def register_isolation(mode: str, load: Callable[[], ReplFactory]) -> None:
    """Make `RLM(isolation=mode)` build each node's REPL with `load()`'s factory (the package registers its sandbox).

    `load` runs once per RLM, when it is made: it imports the plug-in and raises when the mode cannot work here.
    """
    _isolations[mode] = load


def isolation_modes() -> list[str]:
    """The registered isolation modes: the choices of `isolation`, which the settings table cannot list."""
    return sorted(_isolations)


def isolation_factory(mode: str) -> ReplFactory:
    load = _isolations.get(mode)
    if load is None:
        known = ", ".join(sorted(_isolations)) or "none registered"
        raise ConfigError(f"unknown isolation mode {mode!r} (known: {known})")
    return load()


T = TypeVar("T")
_MISSING = object()


_cell_ids = itertools.count(1)
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
_value_repr = reprlib.Repr()
_value_repr.maxstring = _value_repr.maxother = 100_000
_value_repr.maxlist = _value_repr.maxtuple = _value_repr.maxdict = _value_repr.maxset = 200


class NamespaceREPL:
    """Runs code with `exec` in one dict, in the calling thread.

    Assignments made before an error stay (one dict is both globals and locals),
    the trailing expression is shown as Jupyter shows it, tracebacks are plain
    text with the model's own source lines, and output is captured per thread.
    """

    def __init__(
        self,
        namespace: dict[str, Any] | None = None,
        *,
        cell_timeout: float | None = None,
        max_output_chars: int = 10_000,
    ) -> None:
        self.namespace: dict[str, Any] = namespace if namespace is not None else {}
        self._own_namespace = namespace is None
        self.namespace.setdefault("__name__", "__rlm__")
        self.cell_timeout = cell_timeout
        self.max_output_chars = max_output_chars

    def set(self, name: str, value: object) -> None:
        self.namespace[name] = value

    def get(self, name: str, default: object = None) -> object:
        return self.namespace.get(name, default)

    def names(self) -> list[str]:
        return [n for n in self.namespace if not n.startswith("__")]

    def snapshot(self) -> dict[str, int]:
        return {n: id(self.namespace[n]) for n in self.names()}

    def close(self) -> None:
        """A namespace it made is emptied: the run's helpers in it refer back to the run, a cycle that would keep
        the context alive until the garbage collector's next full pass. One it was given is the caller's to keep."""
        if self._own_namespace:
            self.namespace.clear()

    def _timed_out(self, limit: float | None) -> str:
        own = self.cell_timeout is not None and limit == self.cell_timeout
        why = f"cell_timeout={self.cell_timeout:g}s" if own else "the run's time budget"
        return f"TimeoutError: this code ran past {why} and was stopped. Variables assigned before that point are kept."

    def execute(self, code: str, timeout: float | None = None) -> ExecResult:
        result = ExecResult()
        limit = min((t for t in (self.cell_timeout, timeout) if t is not None), default=None)
        started = time.perf_counter()
        filename = f"<rlm-cell-{next(_cell_ids)}>"
        # Registering the source lets tracebacks quote the model's own lines.
        linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
        guard = _BuiltinsGuard(self.namespace)
        with capture_thread_output(self.max_output_chars) as (out, err):
            deadline = Deadline(limit)
            ended_from_outside = False
            try:
                body, last = _split_trailing_expression(code, filename)
                with deadline:
                    exec(body, self.namespace)
                    if last is not None:
                        value = eval(last, self.namespace)
                        if value is not None:
                            result.value = truncate(_value_repr.repr(value), self.max_output_chars)
            except SubmitAnswer as submitted:
                # kept without its traceback: the frames in it hold the run's locals (its context), a cycle
                result.submitted = submitted.with_traceback(None)
            except BaseException as exc:  # model code may raise anything, SystemExit included
                deadline.close()  # again, in case the stop landed while it was closing
                if stops_enclosing(exc) or (isinstance(exc, KeyboardInterrupt) and not _raised_by_model(exc, filename)):
                    ended_from_outside = isinstance(exc, RunCancelled)
                    raise  # a stop for an enclosing block, child or run goes on up; so does the user's interrupt
                timed_out = isinstance(exc, CellTimeout)
                result.error = (
                    _timeout_message(self.cell_timeout, limit) if timed_out else format_exception(exc, filename)
                )
            finally:
                # A block cancelled from outside belongs to a parent or run that has ended and put the builtins
                # back itself; a child that was blocked in C code ends long after, when the notebook's own cells
                # (and IPython's get_ipython) own the builtins.
                if not ended_from_outside:
                    guard.put_back()
        result.stdout = out.text(self.max_output_chars)
        result.stderr = err.text(self.max_output_chars)
        result.seconds = time.perf_counter() - started
        return result


class _BuiltinsGuard:
    """The builtins a block starts with, put back at its end: model code that rebinds or deletes `__builtins__`, or
    changes the builtins module itself, would break every later block and, in a notebook, the user's next cells."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.binding = namespace.get("__builtins__", builtins.__dict__)  # what exec inserts into a fresh namespace
        self.entries = dict(builtins.__dict__)

    def put_back(self) -> None:
        changed = self.namespace.get("__builtins__") is not self.binding
        self.namespace["__builtins__"] = self.binding
        current = builtins.__dict__
        # Identity only: comparing values would run the __eq__ of whatever model code put there.
        added = [name for name in current if type(name) is str and name not in self.entries]
        if added or any(current.get(name, _MISSING) is not value for name, value in self.entries.items()):
            changed = True
            current.update(self.entries)
            for name in added:
                current.pop(name, None)
        if changed:
            print("note: this block changed the builtins; they were put back for the next block.", file=sys.stderr)


def _timeout_message(cell_timeout: float | None, limit: float | None) -> str:
    own = cell_timeout is not None and limit == cell_timeout
    why = f"cell_timeout={cell_timeout:g}s" if own else "the run's time budget"
    return f"TimeoutError: this code ran past {why} and was stopped. Variables assigned before that point are kept."


def _raised_by_model(exc: BaseException, filename: str) -> bool:
    """A KeyboardInterrupt that model code raised itself (`raise KeyboardInterrupt`), not a signal's."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return last is not None and last.filename == filename and (last.line or "").lstrip().startswith("raise")


def contained(call: Callable[[], T], fallback: Callable[[BaseException], T], seconds: float = 2.0) -> T:
    """`call()` where it runs model code (a model-made value's __len__, __str__, __repr__), under a deadline
    and with every exception contained: `fallback(exc)` instead. A user's interrupt still stops the run."""
    deadline = Deadline(seconds)
    try:
        with deadline:
            return call()
    except BaseException as exc:  # RecursionError, CellTimeout, SystemExit, SubmitAnswer...
        deadline.close()
        if isinstance(exc, (KeyboardInterrupt, RunCancelled)) or stops_enclosing(exc):
            raise
        return fallback(exc)


def _split_trailing_expression(code: str, filename: str) -> tuple[Any, Any]:
    tree = reachable(ast.parse(code, filename, "exec"))
    if tree.body and isinstance(tail := tree.body[-1], ast.Expr):
        tree.body.pop()
        last = ast.Expression(tail.value)
        return compile(tree, filename, "exec"), compile(last, filename, "eval")
    return compile(tree, filename, "exec"), None


def format_exception(exc: BaseException, filename: str) -> str:
    """A plain traceback that starts at the model's code, not at the engine's frames."""
    if isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    frames = traceback.extract_tb(exc.__traceback__)
    start = next((i for i, f in enumerate(frames) if f.filename == filename), 0)
    # The engine's own frames (inside llm_query and friends) are noise to the model.
    shown = [f for f in frames[start:] if not f.filename.startswith(_PACKAGE_DIR)]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(shown)]
    return "".join(lines + traceback.format_exception_only(type(exc), exc)).rstrip()


def repl_factory(config: RunConfig) -> Callable[[], REPL]:
    """Fresh REPLs as the config says: an isolated one, or a plain in-process namespace.

    An unknown isolation mode, or one that cannot work on this machine, fails here, before any model call."""
    loop = config.loop
    if config.isolation.mode is not None:
        isolated = isolation_factory(config.isolation.mode)
        limits = dict(config.isolation.limits)
        return functools.partial(
            isolated, cell_timeout=loop.cell_timeout, max_output_chars=loop.max_output_chars, **limits
        )
    return functools.partial(NamespaceREPL, cell_timeout=loop.cell_timeout, max_output_chars=loop.max_output_chars)
