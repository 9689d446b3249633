"""cell_timeout cannot be dodged in process: nested deadlines stack, and a swallowed stop comes back."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.repl import NamespaceREPL
from tests.conftest import question_of, repl

SWALLOWING_LOOPS = {
    "bare except around sleep": "import time\nwhile True:\n try: time.sleep(0.2)\n except: pass",
    "except BaseException: continue": (
        "import time\nwhile True:\n    try:\n        time.sleep(0.2)\n    except BaseException:\n        continue"
    ),
    "busy loop in a try": "while True:\n    try:\n        while True:\n            pass\n    except:\n        pass",
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
