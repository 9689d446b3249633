"""The REPL protocol the engine runs model code through, and its in-process implementation."""

from __future__ import annotations

import ast
import ctypes
import itertools
import linecache
import math
import reprlib
import signal
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

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
_isolations: dict[str, Callable[[], ReplFactory]] = {}


def register_isolation(mode: str, load: Callable[[], ReplFactory]) -> None:
    """Make `RLM(isolation=mode)` build each node's REPL with `load()`'s factory (the package registers its sandbox).

    `load` runs once per RLM, when it is made: it imports the plug-in and raises when the mode cannot work here.
    """
    _isolations[mode] = load


def isolation_factory(mode: str) -> ReplFactory:
    load = _isolations.get(mode)
    if load is None:
        known = ", ".join(sorted(_isolations)) or "none registered"
        raise ConfigError(f"unknown isolation mode {mode!r} (known: {known})")
    return load()


T = TypeVar("T")


class CellTimeout(BaseException):
    """Raised into model code that ran past cell_timeout (a BaseException: `except Exception` can't hide it).

    `owner` is the deadline whose block this stop ends: the outermost one that has passed in the thread.
    Creating one arms the thread's re-stop tracer, so a stop that code swallows is raised again.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.owner = _expired_deadline()
        if self.owner is not None:
            _arm_tracer()


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
            deadline = _Deadline(limit)
            try:
                body, last = _split_trailing_expression(code, filename)
                with deadline:
                    exec(body, self.namespace)
                    if last is not None:
                        value = eval(last, self.namespace)
                        if value is not None:
                            result.value = truncate(_value_repr.repr(value), self.max_output_chars)
            except SubmitAnswer as submitted:
                result.submitted = submitted
            except CellTimeout as stop:
                if stop.owner is not None and stop.owner is not deadline:
                    raise  # an enclosing block's deadline passed: the stop is for it
                own = self.cell_timeout is not None and limit == self.cell_timeout
                why = f"cell_timeout={self.cell_timeout:g}s" if own else "the run's time budget"
                result.error = (
                    f"TimeoutError: this code ran past {why} and was stopped. "
                    "Variables assigned before that point are kept."
                )
            except KeyboardInterrupt as exc:
                if not _raised_by_model(exc, filename):
                    raise  # the user's interrupt (SIGINT): it stops the run
                result.error = format_exception(exc, filename)
            except BaseException as exc:  # model code may raise anything, SystemExit included
                result.error = format_exception(exc, filename)
        result.stdout = out.text(self.max_output_chars)
        result.stderr = err.text(self.max_output_chars)
        result.seconds = time.perf_counter() - started
        return result


def _raised_by_model(exc: BaseException, filename: str) -> bool:
    """A KeyboardInterrupt that model code raised itself (`raise KeyboardInterrupt`), not a signal's."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return last is not None and last.filename == filename and (last.line or "").lstrip().startswith("raise")


def contained(call: Callable[[], T], fallback: Callable[[BaseException], T], seconds: float = 2.0) -> T:
    """`call()` where it runs model code (a model-made value's __len__, __str__, __repr__), under a deadline
    and with every exception contained: `fallback(exc)` instead. A user's interrupt still stops the run."""
    # The deadline only on the main thread (a timer signal). In other threads it would be an injected
    # exception, and one that lands late stops the next block that thread runs: there errors are contained
    # but a value that loops forever is not stopped (the README says so).
    deadline = _Deadline(seconds if threading.current_thread() is threading.main_thread() else None)
    try:
        with deadline:
            return call()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # RecursionError, CellTimeout, SystemExit, SubmitAnswer...
        if type(exc).__name__ == "RunCancelled":
            raise
        return fallback(exc)


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


# How often a stop that was swallowed is raised again (and, on the main thread, blocking calls are interrupted again).
_RESTOP_SECONDS = 0.05
_deadlines = threading.local()  # per thread: the open deadlines, outermost first


def _open_deadlines() -> list[_Deadline]:
    stack: list[_Deadline] | None = getattr(_deadlines, "stack", None)
    if stack is None:
        stack = _deadlines.stack = []
    return stack


def _expired_deadline() -> _Deadline | None:
    """The outermost deadline of this thread that has passed: the block the current stop must end."""
    now = time.monotonic()
    return next((d for d in _open_deadlines() if d.at <= now), None)


# Code a repeated stop never lands in: the engine's own, the standard library's and installed packages'
# (their cleanup, such as releasing a lock on the way out, must run). Model code is everything else.
_LIBRARY_DIRS = tuple(
    {_PACKAGE_DIR, *(sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib"))}
)


def _library_code(frame: Any) -> bool:
    return bool(frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS))


class _Deadline:
    """Stops the current thread's code after `seconds`; deadlines nest, and a swallowed stop comes back.

    Deadlines stack per thread: a block inside a block (a child RLM run from model code at depth 0) arms
    the earliest one, and its end re-arms what is left instead of clearing the outer block's alarm.

    On the main thread a SIGALRM timer interrupts loops and blocking calls such as time.sleep. On other
    threads an asynchronous exception is injected, which stops pure-Python code but not a call blocked in
    C (it lands when that call returns). Once a deadline has passed, the stop is raised again until its
    block ends: a line tracer raises it again as soon as model code runs a line of a handler that caught
    it (so `except: pass` re-raises from inside its own handler, outside its `try`), and every
    _RESTOP_SECONDS a fresh stop is sent (which also puts the tracer back if code removed it). Repeats
    never land in the engine's, the standard library's or installed packages' frames, so their cleanup runs. Not covered in process: a
    handler that catches the stop inside another handler that catches it again, in a loop (the tracer is
    off for that one step); an isolated kernel is interrupted and then restarted instead.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = math.inf
        self.stopped = False  # whether a stop has been raised for this deadline
        self._lock = threading.Lock()  # between the watcher thread's injections and the block's end
        self._closed = False
        self._wake = threading.Event()
        self._ident = threading.get_ident()
        self._on_main = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
        self._previous_handler: Any = None
        self._restores_handler = False  # the outermost deadline on the main thread puts SIGALRM's handler back
        self._previous_timer: tuple[tuple[float, float], float] = ((0.0, 0.0), 0.0)
        self._previous_trace: Any = None

    def __enter__(self) -> _Deadline:
        if not self.seconds:
            return self
        self.at = time.monotonic() + self.seconds
        self._previous_trace = sys.gettrace()
        stack = _open_deadlines()
        stack.append(self)
        if self._on_main:
            if signal.getsignal(signal.SIGALRM) is not _on_alarm:
                # Someone else's alarm (a test runner's timeout, say) is put back when this block ends.
                self._previous_timer = (signal.getitimer(signal.ITIMER_REAL), time.monotonic())
                self._previous_handler = signal.signal(signal.SIGALRM, _on_alarm)
                self._restores_handler = True
            _arm_main_timer()
        else:
            threading.Thread(target=self._watch, name="rlm-deadline", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.seconds:
            return
        stack = _open_deadlines()
        if self in stack:
            stack.remove(self)
        if _expired_deadline() is None:
            sys.settrace(self._previous_trace)  # first: the tracer must not act on this cleanup
        with self._lock:
            self._closed = True
        self._wake.set()
        if self.stopped and not self._on_main:
            # A stop the watcher sent just before this block ended lands here rather than in the engine.
            # (Clearing it with PyThreadState_SetAsyncExc(id, NULL) leaves CPython 3.11 checking forever.)
            try:
                for _ in range(3):
                    pass
            except CellTimeout:
                pass
        if self._on_main:
            _arm_main_timer()
            if self._restores_handler:
                signal.signal(signal.SIGALRM, self._previous_handler)
                (left, interval), since = self._previous_timer
                if left:
                    signal.setitimer(signal.ITIMER_REAL, max(1e-6, left - (time.monotonic() - since)), interval)

    def _watch(self) -> None:
        """Another thread's deadline: inject the stop at `at`, then again while the block runs."""
        wake_at = self.at
        while not self._wake.wait(max(0.0, wake_at - time.monotonic())):
            with self._lock:
                if self._closed:
                    return
                top = sys._current_frames().get(self._ident)
                if not (self.stopped and _library_code(top)):
                    raise_in_thread(self._ident, CellTimeout)
                    self.stopped = True
            wake_at = time.monotonic() + _RESTOP_SECONDS


def _arm_main_timer() -> None:
    stack = _open_deadlines()
    if not stack:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return
    left = min(d.at for d in stack) - time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, left if left > 0 else _RESTOP_SECONDS)


def _on_alarm(signum: int, frame: Any) -> None:
    owner = _expired_deadline()
    _arm_main_timer()
    if owner is None:  # woke for a deadline that has since ended
        return
    if owner.stopped and _library_code(frame):
        _arm_tracer()  # the engine finishes what it is doing; model code meets the stop at its next line
        return
    owner.stopped = True
    raise CellTimeout()


def _arm_tracer() -> None:
    frame: Any = sys._getframe(1)
    while frame is not None:  # running frames too, not only those called from now on
        frame.f_trace = _restop_tracer
        frame = frame.f_back
    sys.settrace(_restop_tracer)


def _restop_tracer(frame: Any, event: str, arg: object) -> Any:
    # Inside a handler that caught the stop: raising here leaves that `try` (its handler is not guarded by it).
    if event == "line" and isinstance(sys.exc_info()[1], CellTimeout) and not _library_code(frame):
        if _expired_deadline() is not None:
            raise CellTimeout()  # this switches the tracer off; the next re-stop puts it back
    return _restop_tracer


def raise_in_thread(thread_id: int, exception: type[BaseException]) -> None:
    """Raise `exception` in another thread at its next Python instruction (C code that blocks is not reached)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exception))
