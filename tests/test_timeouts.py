"""cell_timeout cannot be dodged in process: nested deadlines stack, and a swallowed stop comes back."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.repl import NamespaceREPL, contained
from tests.conftest import SIGINT_SELF, question_of, repl

SWALLOWING_LOOPS = {
    "bare except around sleep": "import time\nwhile True:\n try: time.sleep(0.2)\n except: pass",
    "except BaseException: continue": (
        "import time\nwhile True:\n    try:\n        time.sleep(0.2)\n    except BaseException:\n        continue"
    ),
    "busy loop in a try": "while True:\n    try:\n        while True:\n            pass\n    except:\n        pass",
    # Python 3.10 runs no signal handler just before a `try` opens: this loop gave it no other moment.
    "a try that calls nothing": "x = 0\nwhile True:\n    try:\n        x += 1\n    except:\n        pass",
    "the handler switches tracing off": "import sys, time\nwhile True:\n try: time.sleep(0.2)\n except: sys.settrace(None)",
    "the loop runs in code compiled under another name": (
        "exec(compile('import time\\nwhile True:\\n try: time.sleep(0.2)\\n except: pass', 'lib.py', 'exec'))"
    ),
}


@pytest.mark.parametrize("code", SWALLOWING_LOOPS.values(), ids=SWALLOWING_LOOPS.keys())
def test_a_loop_that_swallows_the_stop_is_stopped_on_the_main_thread(code):
    handler, (timer, _) = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    result = NamespaceREPL(cell_timeout=0.5).execute(code)
    assert "TimeoutError" in result.error and "cell_timeout=0.5s" in result.error
    assert time.monotonic() - started < 2.0
    # The caller's alarm (pytest-timeout's, when it uses one) and handler are back as they were.
    assert signal.getsignal(signal.SIGALRM) is handler
    assert (signal.getitimer(signal.ITIMER_REAL)[0] > 0) == (timer > 0)


def test_a_loop_that_swallows_the_stop_is_stopped_in_a_thread():
    # Pure Python in the loop: a thread is reached by an injected exception, not by a signal.
    code = "while True:\n    try:\n        total = sum(range(10**5))\n    except:\n        pass"
    results = []
    thread = threading.Thread(target=lambda: results.append(NamespaceREPL(cell_timeout=0.5).execute(code)))
    started = time.monotonic()
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert "TimeoutError" in results[0].error and time.monotonic() - started < 3.0


def test_a_nested_block_does_not_clear_the_enclosing_deadline():
    inner = NamespaceREPL(cell_timeout=30)
    outer = NamespaceREPL(cell_timeout=1)
    outer.set("child", lambda: inner.execute("x = 1").error)
    started = time.monotonic()
    result = outer.execute("print(child())\nwhile True:\n    pass")
    assert "TimeoutError" in result.error and "cell_timeout=1s" in result.error
    assert result.stdout == "None\n"  # the inner block ran and ended before the loop
    assert time.monotonic() - started < 3.0


def test_the_enclosing_deadline_ends_an_inner_block_that_outlives_it():
    inner = NamespaceREPL(cell_timeout=30)
    outer = NamespaceREPL(cell_timeout=1)
    outer.set("child", lambda: inner.execute("while True:\n    pass").error)
    started = time.monotonic()
    result = outer.execute("seen = child()\nprint('after the child', seen)")
    # The stop belongs to the outer block: the inner one must not report it as its own and go on.
    assert "TimeoutError" in result.error and "after the child" not in result.stdout
    assert time.monotonic() - started < 3.0


def test_an_rlm_query_at_depth_0_keeps_the_blocks_cell_timeout(scripted):
    def policy(messages):
        if question_of(messages) == "child":
            return repl("FINAL('child done')")
        if len(messages) == 2:
            return repl("r = rlm_query('some text', 'child')\nprint(r)\nwhile True:\n    pass")
        return repl("FINAL('went on')")

    started = time.monotonic()
    result = RLM(model=scripted(policy), max_depth=2, cell_timeout=2).completion("ctx", "q")
    assert result.answer == "went on"
    cell = result.trace.root.iterations[0].cells[0]
    assert "child done" in cell.output and "TimeoutError" in cell.error
    assert time.monotonic() - started < 10.0


def test_max_seconds_survives_an_rlm_query_at_depth_0(scripted):
    def policy(messages):
        if question_of(messages) == "child":
            return repl("FINAL('child done')")
        return repl(
            "r = rlm_query('some text', 'child')\nwhile True:\n    try:\n        pass\n    except:\n        pass"
        )

    started = time.monotonic()
    result = RLM(model=scripted(policy), max_depth=2, max_seconds=2).completion("ctx", "q")
    assert result.limit == "max_seconds"
    assert time.monotonic() - started < 10.0


def in_thread(work):
    """`work()` run in a new thread; its result (or what it raised)."""
    results = []

    def run():
        try:
            results.append(work())
        except BaseException as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    return results[0]


# Spins about as long as the block may run, so the stop lands just before, at or just after the block's end.
SPIN_TO_THE_DEADLINE = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < {seconds}:\n    pass"
# Runs longer than the stop's repeat interval, without a deadline of its own: a stop that leaked would land here.
AFTERWARDS = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 0.06:\n    pass"


def blocks_ending_at_their_deadline():
    untimed = NamespaceREPL()
    stray = []
    for i in range(40):
        seconds = 0.02 + (i % 5 - 2) * 0.002
        NamespaceREPL(cell_timeout=0.02).execute(SPIN_TO_THE_DEADLINE.format(seconds=seconds))
        if error := untimed.execute(AFTERWARDS).error:
            stray.append(error)
    return stray


def test_a_stop_landing_as_a_block_ends_never_reaches_the_next_block_on_the_main_thread():
    assert blocks_ending_at_their_deadline() == []


def test_a_stop_landing_as_a_block_ends_never_reaches_the_next_block_in_a_thread():
    assert in_thread(blocks_ending_at_their_deadline) == []


def test_nested_deadlines_in_a_thread_end_the_outer_block():
    inner = NamespaceREPL(cell_timeout=30)
    outer = NamespaceREPL(cell_timeout=0.5)
    outer.set("child", lambda: inner.execute("while True:\n    pass").error)
    started = time.monotonic()
    result = in_thread(lambda: outer.execute("seen = child()\nprint('after the child', seen)"))
    assert "TimeoutError" in result.error and "cell_timeout=0.5s" in result.error
    assert "after the child" not in result.stdout
    assert time.monotonic() - started < 3.0
    assert in_thread(lambda: NamespaceREPL().execute(AFTERWARDS)).error is None


def test_a_threads_timeout_while_the_main_thread_is_in_its_own_deadline():
    swallowing = SWALLOWING_LOOPS["busy loop in a try"]
    main = NamespaceREPL(cell_timeout=5)
    main.set("in_a_thread", lambda: in_thread(lambda: NamespaceREPL(cell_timeout=0.3).execute(swallowing)).error)
    started = time.monotonic()
    result = main.execute("print(in_a_thread())\nprint('the main thread went on')")
    assert result.error is None
    assert "cell_timeout=0.3s" in result.stdout and "the main thread went on" in result.stdout
    assert time.monotonic() - started < 3.0


class Endless:
    def __repr__(self):
        while True:
            pass


def test_contained_bounds_a_model_made_value_in_a_thread_and_the_next_block_runs_whole():
    def work():
        shown = contained(lambda: repr(Endless()), lambda exc: type(exc).__name__, seconds=0.3)
        return shown, NamespaceREPL().execute(AFTERWARDS).error

    assert in_thread(work) == ("CellTimeout", None)


def test_the_users_interrupt_during_a_timed_block_stops_it_and_leaves_no_stop_behind():
    handler = signal.getsignal(signal.SIGALRM)
    with pytest.raises(KeyboardInterrupt):
        NamespaceREPL(cell_timeout=0.2).execute(SIGINT_SELF)
    assert signal.getsignal(signal.SIGALRM) is handler
    time.sleep(0.3)  # past the interrupted block's deadline
    assert NamespaceREPL().execute(AFTERWARDS).error is None


def test_the_deadline_thread_takes_no_signal_meant_for_the_process():
    # A SIGINT for the process must reach the thread running model code (the isolated worker unblocks it there
    # only); a thread that took it would leave a time.sleep in the main thread running.
    NamespaceREPL(cell_timeout=5).execute("x = 1")
    watcher = next(t for t in threading.enumerate() if t.name == "rlm-deadlines")
    with open(f"/proc/self/task/{watcher.native_id}/status") as task:
        status = task.read()
    blocked = int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)
    assert blocked & (1 << (signal.SIGINT - 1))
