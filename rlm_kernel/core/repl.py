"""The REPL protocol the engine runs model code through, and its in-process implementation."""

from __future__ import annotations

import ast
import ctypes
import itertools
import linecache
import reprlib
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rlm_kernel.core.capture import capture_thread_output, truncate
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


# Builds an isolated REPL: keyword arguments cell_timeout, max_output_chars and the isolation limits.
ReplFactory = Callable[..., REPL]
_isolations: dict[str, ReplFactory] = {}


def register_isolation(mode: str, factory: ReplFactory) -> None:
    """Make `RLM(isolation=mode)` build each node's REPL with `factory` (the package registers its sandbox)."""
    _isolations[mode] = factory


def isolation_factory(mode: str) -> ReplFactory:
    factory = _isolations.get(mode)
    if factory is None:
        known = ", ".join(sorted(_isolations)) or "none registered"
        raise ConfigError(f"unknown isolation mode {mode!r} (known: {known})")
    return factory


class CellTimeout(BaseException):
    """Raised into model code that ran past cell_timeout (a BaseException: `except Exception` can't hide it)."""


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

    def execute(self, code: str, timeout: float | None = None) -> ExecResult:
        result = ExecResult()
        limit = min((t for t in (self.cell_timeout, timeout) if t is not None), default=None)
        started = time.perf_counter()
        filename = f"<rlm-cell-{next(_cell_ids)}>"
        # Registering the source lets tracebacks quote the model's own lines.
        linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
        with capture_thread_output(self.max_output_chars) as (out, err):
            try:
                body, last = _split_trailing_expression(code, filename)
                with _Deadline(limit):
                    exec(body, self.namespace)
                    if last is not None:
                        value = eval(last, self.namespace)
                        if value is not None:
                            result.value = truncate(_value_repr.repr(value), self.max_output_chars)
            except SubmitAnswer as submitted:
                result.submitted = submitted
            except CellTimeout:
                why = f"cell_timeout={self.cell_timeout:g}s" if limit == self.cell_timeout else "the run's time budget"
                result.error = (
                    f"TimeoutError: this code ran past {why} and was stopped. "
                    "Variables assigned before that point are kept."
                )
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # model code may raise anything, SystemExit included
                result.error = format_exception(exc, filename)
        result.stdout = out.text(self.max_output_chars)
        result.stderr = err.text(self.max_output_chars)
        result.seconds = time.perf_counter() - started
        return result


def _split_trailing_expression(code: str, filename: str) -> tuple[Any, Any]:
    tree = ast.parse(code, filename, "exec")
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


class _Deadline:
    """Stops the current thread's code after `seconds`.

    On the main thread a SIGALRM timer interrupts loops and blocking calls such as
    time.sleep. On other threads an asynchronous exception is injected, which stops
    pure-Python code but not a call blocked in C (it lands when that call returns).
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._timer: threading.Timer | None = None
        self._previous: Any = None
        self._on_main = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")

    def __enter__(self) -> None:
        if not self.seconds:
            return
        if self._on_main:
            self._previous = signal.signal(signal.SIGALRM, _raise_timeout)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        else:
            ident = threading.get_ident()
            self._timer = threading.Timer(self.seconds, raise_in_thread, args=(ident, CellTimeout))
            self._timer.daemon = True
            self._timer.start()

    def __exit__(self, *exc: object) -> None:
        if not self.seconds:
            return
        if self._on_main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
        elif self._timer is not None:
            self._timer.cancel()


def _raise_timeout(signum: int, frame: object) -> None:
    raise CellTimeout()


def raise_in_thread(thread_id: int, exception: type[BaseException]) -> None:
    """Raise `exception` in another thread at its next Python instruction (C code that blocks is not reached)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exception))
