"""Attacks on the in-process deadline: no trace of a block survives it (signal mask, switch interval, a timer or
handler of its own), and code that takes SIGALRM away in the block is still stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from rlm_kernel.core.repl import NamespaceREPL

LOOP = "\nwhile True:\n    pass"


def _stopped_within(code: str, seconds: float = 1.0) -> float:
    started = time.monotonic()
    result = NamespaceREPL(cell_timeout=seconds).execute(code)
    elapsed = time.monotonic() - started
    assert result.error is not None and "TimeoutError" in result.error, result.error
    return elapsed


def test_a_block_that_blocks_sigalrm_leaves_later_blocks_stoppable():
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    repl = NamespaceREPL(cell_timeout=1.0)
    assert repl.execute("import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})").error is None
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask  # put back at the block's end
    assert _stopped_within("import time\ntime.sleep(30)") < 3.0


def test_a_block_that_blocks_sigalrm_is_still_stopped():
    code = "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})" + LOOP
    assert _stopped_within(code) < 3.0


def test_a_block_that_starves_other_threads_is_stopped_and_the_interval_is_put_back():
    interval = sys.getswitchinterval()
    assert _stopped_within("import sys\nsys.setswitchinterval(1e6)" + LOOP) < 3.0
    assert sys.getswitchinterval() == interval


def test_the_models_own_alarm_handler_idiom_with_except_exception_is_stopped():
    code = textwrap.dedent(
        """
        import signal, time
        def on_alarm(signum, frame):
            raise TimeoutError("item took too long")
        done = 0
        while True:
            signal.signal(signal.SIGALRM, on_alarm)
            signal.alarm(1)
            try:
                time.sleep(0.05)
                done += 1
            except Exception:
                pass
            finally:
                signal.alarm(0)
        """
    )
    handler = signal.getsignal(signal.SIGALRM)
    assert _stopped_within(code) < 3.0
    assert signal.getsignal(signal.SIGALRM) is handler


def test_an_alarm_the_model_left_armed_does_not_kill_the_process():
    # In a fresh process, where SIGALRM's handler is SIG_DFL (as in a notebook kernel): the alarm must not fire.
    code = textwrap.dedent(
        """
        import time
        from rlm_kernel.core.repl import NamespaceREPL
        block = "import signal\\nsignal.signal(signal.SIGALRM, lambda *a: None)\\nsignal.alarm(1)"
        print(NamespaceREPL(cell_timeout=5.0).execute(block).error)
        time.sleep(2.5)
        print("alive")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.returncode, out.stderr)
    assert out.stdout.split() == ["None", "alive"]
