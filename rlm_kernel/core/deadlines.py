"""Stopping model code in process: one mechanism for cell_timeout, the run's time budget, bounded value methods
and cancelled children.

A `Deadline` is a stretch of one thread's code that a stop ends: `seconds` after it opens, or when `stop()` is
called from any thread. One watcher thread holds every open deadline of every thread. Once a deadline has passed
it sends that thread the deadline's exception, again every RESTOP_SECONDS until the deadline closes: on the main
thread as SIGALRM, whose handler decides in that thread (and interrupts blocking calls such as time.sleep); on
other threads as an asynchronous exception (PyThreadState_SetAsyncExc), which stops pure-Python code but not a
call blocked in C (it lands when that call returns). Deadlines nest: a stop ends the outermost one that passed.

Where stops land:
- The first stop of a deadline lands wherever its thread is (an endless loop in the standard library stops too).
  Repeats land only in model code, never in the engine's, the standard library's or installed packages' frames,
  so their cleanup runs; and nothing lands in this module's own frames.
- Code that swallows a stop meets it again: creating a stop arms a line tracer in its thread, which raises it
  again at the next line of model code (from inside the handler that caught it, so outside its `try`).
- A deadline lives no longer than the frame that opened it (enter it with `with` in the function it covers),
  and closing it drops a stop sent just before: a stop that arrives after its block ended never reaches the
  next block, the engine or another REPL.

- Engine work run through `shielded` (starting a REPL's worker) holds its thread's stops back until it returns.
- A waiting point of the engine (CancelScope.wait) raises its thread's passed deadline itself, between slices, so a
  block waiting for children blocked in C code still ends on time, whatever became of the signal.
- On the main thread a timer (ITIMER_REAL) backs the watcher up: model code that starves the watcher of the GIL
  (`sys.setswitchinterval(1e6)`) is still stopped. Where the model's code took SIGALRM (its own handler, or a mask
  that blocks it), the stop is sent as an asynchronous exception instead, like a thread's.
- No trace of a block survives it: when the main thread's last deadline closes, the timer the block left (an
  alarm of its own) is cancelled before SIGALRM's handler is put back, then the signal mask and the caller's timer
  are restored; every deadline puts back the switch interval it found.
- CPython 3.11 spins a traced thread while another thread's asynchronous exception is pending (blocked in C code,
  it lands only when the call returns): there, the main thread's re-stop tracer is not armed while one is
  pending, and a thread is sent none while the main thread is traced.

Not covered in process: a call blocked in C outside the main thread; model code in another thread that switches
tracing off and swallows every stop. An isolated kernel is interrupted and restarted instead.
"""

from __future__ import annotations

import ast
import ctypes
import math
import os
import signal
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
RESTOP_SECONDS = 0.05  # how often a stop that has not ended its deadline yet is sent again
PENDING_SECONDS = 0.5  # an asynchronous stop not raised by then (one that C code swallowed) is sent again
_HERE = __file__
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
# Code a repeated stop never lands in: the engine's own, the standard library's and installed packages'.
_LIBRARY_DIRS = tuple(
    {_PACKAGE_DIR, *(sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib"))}
)
_SIGNALS = hasattr(signal, "pthread_kill")
_SPINS_WHILE_PENDING = sys.version_info[:2] == (3, 11)  # see the module docstring

# Guards _open and the deadlines' state; the watcher sends stops while holding it. A plain lock: entering it runs
# no Python code, so a stop cannot land between taking it and the `with` that releases it.
_lock = threading.Lock()
_wake = threading.Event()  # the watcher's: a deadline opened or was stopped
_open: dict[int, list[Deadline]] = {}  # per thread: its open deadlines, outermost first
_watcher: list[threading.Thread] = []
_main_alarm: dict[
    str, Any
] = {}  # SIGALRM's handler, timer and mask as they were before the main thread's first deadline
_pending: dict[int, float] = {}  # threads sent an asynchronous stop that has not been raised yet: when it was sent
_traced_main: list[bool] = [False]  # the main thread runs the re-stop tracer


class CellTimeout(BaseException):
    """Raised into model code that ran past cell_timeout or the run's time budget (a BaseException: `except
    Exception` can't hide it). Creating one arms its thread's re-stop tracer, so a stop that code swallows is
    raised again."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        landed()
        if _passed_deadline() is not None:
            _arm_tracer(sys._getframe(1))


def landed() -> None:
    """A stop was raised in this thread (called where one is made): an asynchronous one sent to it is no longer pending."""
    _pending.pop(threading.get_ident(), None)


def check() -> None:
    """Raise this thread's passed deadline here: a wait in the engine calls it between slices, so a block that waits
    ends on time even when no signal reached it."""
    deadline = _passed_deadline(sys._getframe(1))
    if deadline is not None:
        deadline.stopped = True
        raise deadline.raises()


class Deadline:
    """Stops the code of the thread that enters it, with `raises`, `seconds` after that (math.inf: only on
    `stop()`; None: never, the deadline does nothing)."""

    def __init__(self, seconds: float | None = None, raises: type[BaseException] = CellTimeout) -> None:
        self.seconds = seconds
        self.raises = raises
        self.at = math.inf
        self.thread = 0
        self.stopped = False  # a stop for this deadline has been raised in its thread
        self._frame: Any = None  # the frame that opened it, while it is open
        self._sent_at = -math.inf  # when the watcher last sent a stop
        self._first_sent = math.inf  # and when it sent the first
        self._previous_trace: Any = None
        self._switch_interval = 0.0  # sys.getswitchinterval() as the deadline found it

    def __enter__(self) -> Deadline:
        if self.seconds is None:
            return self
        self.thread = threading.get_ident()
        on_main = _SIGNALS and threading.current_thread() is threading.main_thread()
        if on_main and not _main_alarm:
            # Someone else's alarm (a test runner's timeout, say) waits until the last deadline closes.
            _main_alarm.update(timer=signal.setitimer(signal.ITIMER_REAL, 0), since=time.monotonic())
            _main_alarm["mask"] = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            _main_alarm["handler"] = signal.signal(signal.SIGALRM, _on_alarm)
        self._previous_trace = sys.gettrace()
        self._switch_interval = sys.getswitchinterval()
        with _lock:
            self.at = time.monotonic() + self.seconds
            self._frame = sys._getframe(1)
            _open.setdefault(self.thread, []).append(self)
        if on_main:
            _arm_main_timer()
        _wake.set()
        if not _watcher:
            _start_watcher()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """Stop the thread's code now (from any thread); nothing happens once the deadline has closed."""
        with _lock:
            if self._frame is not None:
                self.at = min(self.at, time.monotonic())
        _wake.set()

    def close(self) -> None:
        """End the deadline (again is harmless). A stop sent just before lands here and is dropped."""
        with _lock:
            if self._frame is None:
                return
            self._frame = None
            left = _open.get(self.thread, [])
            if self in left:
                left.remove(self)
            if not left:
                _open.pop(self.thread, None)
            sent = self._sent_at > -math.inf
        if sent and self.thread != threading.main_thread().ident:
            try:  # an asynchronous exception is raised at the thread's next loop step: here, not later
                for _ in range(3):
                    pass
            except self.raises:
                pass
        if _passed_deadline() is None:
            if sys.gettrace() is _restop_tracer:
                sys.settrace(self._previous_trace)
            if self.thread == threading.main_thread().ident:
                _traced_main[0] = False  # also when model code switched the tracer off itself
        if sys.getswitchinterval() != self._switch_interval:
            sys.setswitchinterval(self._switch_interval)  # code that starved other threads stops doing so here
        if _main_alarm and self.thread == threading.main_thread().ident:
            if self.thread in _open:
                _arm_main_timer()
            else:
                _restore_main_alarm()


def _arm_main_timer() -> None:
    """The main thread's timer: due at its earliest open deadline, then every RESTOP_SECONDS."""
    at = min((d.at for d in _open.get(threading.get_ident(), ())), default=math.inf)
    if at < math.inf:
        signal.setitimer(signal.ITIMER_REAL, max(1e-6, at - time.monotonic()), RESTOP_SECONDS)
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _restore_main_alarm() -> None:
    """The main thread as before its first deadline. The timer goes first (ours, or one model code armed), while
    our handler still takes a SIGALRM: put back to SIG_DFL, a late alarm would kill the process."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.pthread_sigmask(signal.SIG_SETMASK, _main_alarm["mask"])  # a SIGALRM it held is delivered to our handler
    signal.signal(signal.SIGALRM, _main_alarm["handler"])  # handles a SIGALRM still pending first
    (left_s, interval), since = _main_alarm["timer"], _main_alarm["since"]
    _main_alarm.clear()
    if left_s:
        signal.setitimer(signal.ITIMER_REAL, max(1e-6, left_s - (time.monotonic() - since)), interval)


def shielded(call: Callable[[], T]) -> T:
    """`call()`, with its thread's stops held back until it returns; they land as usual after. For engine work a
    stop must not cut short: starting a REPL's worker process, which a stop landing midway would leave running."""
    return call()


def _shielded_at(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code is shielded.__code__:
            return True
        frame = frame.f_back
    return False


def stops_enclosing(exc: BaseException) -> bool:
    """Whether `exc` is the stop of a deadline that encloses the caller's (closed) one: it must go on up."""
    passed = _passed_deadline()
    return passed is not None and isinstance(exc, passed.raises)


def _passed_deadline(top: Any = None) -> Deadline | None:
    """The outermost open deadline of this thread that has passed and whose frame still runs (below `top`)."""
    now = time.monotonic()
    passed = [d for d in _open.get(threading.get_ident(), ()) if d.at <= now]
    if not passed:
        return None
    running = _running_frames(top if top is not None else sys._getframe(1))
    return next((d for d in passed if id(d._frame) in running), None)


def _running_frames(frame: Any) -> set[int]:
    running = set()
    while frame is not None:
        running.add(id(frame))
        frame = frame.f_back
    return running


def _library_code(frame: Any) -> bool:
    return bool(frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS))


def _start_watcher() -> None:
    with _lock:
        if not _watcher:
            _watcher.append(threading.Thread(target=_watch, name="rlm-deadlines", daemon=True))
            _watcher[0].start()


def _watch() -> None:
    """Sends each thread the stop of its outermost passed deadline, at once and then every RESTOP_SECONDS."""
    if _SIGNALS:  # a signal for the process (the user's SIGINT) must find the thread that wants it, never this one
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    while True:
        _wake.clear()
        wake = _send_due_stops()
        _wake.wait(None if wake == math.inf else max(0.0, wake - time.monotonic()))


def _send_due_stops() -> float:
    """One look at every open deadline: the stops due are sent; returns when to look again. The threads' frames it
    looks at are let go when it returns, before the watcher sleeps: held, they kept every local of those threads'
    calls alive, a finished run's context among them."""
    with _lock:
        now, wake = time.monotonic(), math.inf
        frames = sys._current_frames()
        del frames[threading.get_ident()]  # its own frame in it would make a cycle with the dict
        for thread in [t for t in _pending if t not in frames]:
            del _pending[thread]  # it ended with its stop unraised
        for thread, deadlines in list(_open.items()):
            running = _running_frames(frames.get(thread))
            deadlines[:] = [d for d in deadlines if id(d._frame) in running]  # left by a frame that ended
            if not deadlines:
                del _open[thread]
                continue
            due = next((d for d in deadlines if d.at <= now), None)
            if due is None:
                wake = min(wake, *(d.at for d in deadlines))
                continue
            if now - due._sent_at >= RESTOP_SECONDS:
                _send(thread, due, frames.get(thread))
            wake = min(wake, max(due._sent_at + RESTOP_SECONDS, now + 0.01))  # not sent: tried again soon
    return wake


def _send(thread: int, deadline: Deadline, top: Any) -> None:
    main = thread == threading.main_thread().ident
    if main and _SIGNALS and _alarm_reaches_main(deadline):
        signal.pthread_kill(thread, signal.SIGALRM)  # the handler decides in the main thread
    elif (
        top is None
        or top.f_code.co_filename == _HERE
        or (deadline._sent_at > -math.inf and _library_code(top))
        or _shielded_at(top)
    ):
        return  # sent again at the next round, when the thread runs code a stop may land in
    elif time.monotonic() - _pending.get(thread, -math.inf) < PENDING_SECONDS or (
        _SPINS_WHILE_PENDING and not main and _traced_main[0]
    ):
        return  # the last one has not landed (blocked in C code), or it would spin the traced main thread
    else:
        _pending[thread] = time.monotonic()
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(deadline.raises))
    deadline._sent_at = time.monotonic()
    deadline._first_sent = min(deadline._first_sent, deadline._sent_at)


def _alarm_reaches_main(deadline: Deadline) -> bool:
    """Whether SIGALRM still stops the main thread: our handler is installed, the thread does not block it, and
    the stops sent so far were raised (else model code has taken the signal: its handler, its mask)."""
    if signal.getsignal(signal.SIGALRM) is not _on_alarm or _blocked_in_main(signal.SIGALRM):
        return False
    return deadline.stopped or time.monotonic() - deadline._first_sent < 4 * RESTOP_SECONDS


def _blocked_in_main(signum: int) -> bool:
    try:  # Linux tells a thread's mask; elsewhere the stops that were never raised tell it
        status = Path(f"/proc/self/task/{threading.main_thread().native_id}/status").read_text()
    except OSError:
        return False
    blocked = next((line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), "0")
    return bool(int(blocked, 16) >> (signum - 1) & 1)


def _on_alarm(signum: int, frame: Any) -> None:
    deadline = _passed_deadline(frame)
    if deadline is None or (frame is not None and frame.f_code.co_filename == _HERE) or _shielded_at(frame):
        return  # a deadline that has ended, this module closing one, or shielded work: the timer fires again
    if deadline.stopped and _library_code(frame):
        _arm_tracer(frame)  # the engine finishes what it is doing; model code meets the stop at its next line
        return
    deadline.stopped = True
    raise deadline.raises()


def _arm_tracer(frame: Any) -> None:
    main = threading.get_ident() == threading.main_thread().ident
    if main and _SPINS_WHILE_PENDING and _pending:
        return  # the watcher's repeats stand in for the tracer
    _traced_main[0] = _traced_main[0] or main
    sys.settrace(_restop_tracer)
    while frame is not None:  # running frames too, not only those called from now on
        if not _library_code(frame):
            frame.f_trace = _restop_tracer
        frame = frame.f_back


def _restop_tracer(frame: Any, event: str, arg: object) -> Any:
    if event == "line" and not _library_code(frame):
        deadline = _passed_deadline(frame)
        if deadline is not None and issubclass(
            deadline.raises, CellTimeout
        ):  # a cancelled run's stop is sent, not traced
            deadline.stopped = True
            raise deadline.raises()  # this switches the tracer off; creating the stop where it is caught arms it again
    return _restop_tracer


def reachable(tree: ast.Module) -> ast.Module:
    """Model code in which every loop can be stopped. Python 3.10 runs no signal handler and raises no
    asynchronous exception just before a `try` or `with` opens, so `while True: try: x += 1 / except: pass`
    would never stop (not even on Ctrl-C): each `while` body starts with a name lookup there instead."""
    if sys.version_info < (3, 11):
        for node in ast.walk(tree):
            if isinstance(node, ast.While):
                node.body.insert(0, ast.copy_location(ast.Expr(ast.Name("__name__", ast.Load())), node.body[0]))
        ast.fix_missing_locations(tree)
    return tree


def _after_fork() -> None:  # the watcher thread does not survive a fork
    _watcher.clear()
    _open.clear()
    _main_alarm.clear()
    _pending.clear()
    _traced_main[0] = False


os.register_at_fork(after_in_child=_after_fork)
