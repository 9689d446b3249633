"""Isolated execution (`RLM(isolation="kernel")`): model code in a separate, limited kernel.

The caller's namespace stays out of reach, the context and the engine's
functions work inside, and memory bombs, runaway loops, blocking calls,
processes and writes outside the kernel's directory are stopped.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from rlm_kernel import RLM
from rlm_kernel.core.tools import AnswerDict
from rlm_kernel.isolation import KernelREPL, MiB
from tests.conftest import question_of, repl

pytestmark = pytest.mark.skipif(os.name != "posix", reason="isolation needs rlimits and signals")

DOC = "alpha line\n" * 50 + "The secret code is 4242.\n" + "omega line\n" * 50


@pytest.fixture(scope="module")
def kernel() -> Iterator[KernelREPL]:
    """One isolated REPL shared by the REPL-level tests (a kernel takes a second or two to start)."""
    with KernelREPL(cell_timeout=1.5, memory_limit=768 * MiB) as kernel:
        kernel.set("context", DOC)
        yield kernel


def _processes() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


# -- through the engine ------------------------------------------------------------------------


def test_model_code_cannot_reach_the_notebook_and_answers_come_back(scripted, monkeypatch, tmp_path):
    notebook = sys.modules["__main__"]  # in a notebook, the user's namespace is __main__'s
    monkeypatch.setattr(notebook, "secret", "notebook-only", raising=False)
    root = scripted(
        [
            repl("print(secret)") + "```repl\n"
            "import __main__, os\n"
            "seen = getattr(__main__, 'secret', None)\n"
            "secret = 'changed by the model'\n"
            "__main__.secret = 'changed by the model'\n"
            "pid = os.getpid()\n"
            "hi = llm_query('say hi')\n"
            "kids = rlm_query_batched([('abc', 'final_var'), ('def', 'answer ready'), ('ghi', 'answer rebound')])\n"
            "print(len(context), hi, kids)\n"
            "```\n",
            repl("FINAL({'n': len(context), 'hi': hi, 'kids': kids, 'pid': pid, 'seen': seen})"),
        ]
    )

    def sub(messages: list[dict[str, Any]]) -> str:
        if len(messages) == 1:  # a plain llm_query
            return "hi" if messages[0]["content"] == "say hi" else "?"
        return {
            "final_var": repl("x = context.upper()\nFINAL_VAR('x')"),
            "answer ready": repl("answer['content'] = context[::-1]\nanswer['ready'] = True\nprint('never')"),
            "answer rebound": repl("answer = {'content': context * 2, 'ready': True}"),
        }[question_of(messages)]

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the kernels' directories go
    processes = _processes()
    result = RLM(model=root, sub_model=scripted(sub), max_depth=2, isolation="kernel").completion(DOC, "q")

    assert result.status == "done", result.error
    assert result.answer["n"] == len(DOC)
    assert result.answer["hi"] == "hi"  # llm_query went through the bridge
    assert result.answer["kids"] == ["ABC", "fed", "ghighi"]  # FINAL_VAR, answer["ready"], a rebound answer dict
    assert result.answer["pid"] != os.getpid()
    assert result.answer["seen"] is None  # the kernel's __main__ is not the notebook's
    first = result.trace.root.iterations[0].cells
    assert "NameError: name 'secret' is not defined" in first[0].error
    assert first[1].error is None and f"{len(DOC)} hi" in first[1].output
    assert notebook.secret == "notebook-only"
    assert _processes() == processes  # every kernel (the root's and three children's) was shut down
    assert not list(tmp_path.iterdir())


def test_memory_bombs_and_runaway_code_are_stopped_and_the_run_goes_on(scripted):
    reply = (
        repl("x = bytearray(10**10)")
        + "```repl\nwhile True:\n    pass\n```\n"
        + "```repl\nimport time\ntime.sleep(10**6)\n```\n"
        + "```repl\nprint('still here', len(context))\n```\n"
    )
    model = scripted([reply, repl("FINAL('survived')")])
    result = RLM(model=model, isolation="kernel", cell_timeout=1).completion(DOC, "q")
    assert result.answer == "survived"
    bomb, loop, sleep, after = result.trace.root.iterations[0].cells
    assert "MemoryError" in bomb.error
    assert "TimeoutError" in loop.error and "cell_timeout=1s" in loop.error
    assert "TimeoutError" in sleep.error
    assert after.error is None and f"still here {len(DOC)}" in after.output


# -- the REPL ---------------------------------------------------------------------------------


def test_set_get_names_and_snapshot(kernel):
    def double(text: str) -> str:
        return text * 2

    kernel.set("double", double)
    assert kernel.get("double") is double  # intact: the engine's identity check sees its own function
    assert kernel.get("context") == DOC
    before = kernel.snapshot()
    result = kernel.execute("n = len(context)\nbig = 'x' * 5_000_000\nnums = {1, 2, 3}\ndouble('ab')")
    assert result.value == "'abab'"  # through the bridge
    assert kernel.get("n") == len(DOC)
    big, nums = kernel.get("big"), kernel.get("nums")
    assert (type(big).__name__, len(big)) == ("str", 5_000_000)  # too large to bring back: a stand-in
    assert (type(nums).__name__, len(nums), repr(nums)) == ("set", 3, "{1, 2, 3}")  # not JSON data
    assert kernel.get("missing", "default") == "default"
    assert {"n", "big", "nums", "context", "double"} <= set(kernel.names())
    assert "takes plain data" in kernel.execute("double(object())").error
    kernel.execute("double = 'rebound'")
    assert kernel.get("double") == "rebound"
    assert kernel.snapshot()["double"] != before["double"]
    kernel.execute("del big")


def test_answer_content_is_mirrored_for_partial_answers(kernel):
    answer = AnswerDict(content="", ready=False)
    kernel.set("answer", answer)
    assert kernel.execute("answer['content'] = {'draft': [1, 2]}").error is None
    assert answer == {"content": {"draft": [1, 2]}, "ready": False}


def test_processes_and_signals_are_refused(kernel):
    for code in (
        "import os\nos.fork()",
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.system('true')",
        "import os\nos.kill(os.getppid(), 0)",
        "import ctypes\nctypes.CDLL(None).fork",
    ):
        error = kernel.execute(code).error
        assert error is not None and "PermissionError" in error, code


def test_writes_outside_the_working_directory_are_refused(kernel, tmp_path):
    outside = tmp_path / "escape.txt"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for code in (
        f"open({str(outside)!r}, 'w')",
        f"import pathlib\npathlib.Path({str(outside)!r}).write_text('x')",
        f"import os\nos.remove({str(victim)!r})",
        f"import os\nos.rename({str(victim)!r}, 'stolen.txt')",
        f"import os\nos.symlink({str(outside)!r}, 'link')\nopen('link', 'w')",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
    ):
        error = kernel.execute(code).error
        assert error is not None and "PermissionError" in error, code
    assert not outside.exists()
    assert victim.read_text() == "keep me"
    inside = kernel.execute(
        "open('notes.txt', 'w').write('ok')\nimport tempfile\nwith tempfile.NamedTemporaryFile() as f:\n    f.write(b'x')\nprint('written')"
    )
    assert inside.error is None and "written" in inside.stdout
    assert (kernel.workdir / "notes.txt").read_text() == "ok"


def test_growing_memory_stops_at_the_limit(kernel):
    # bytes(n) is calloc'ed: it takes address space (what the limit counts) without touching pages, so it is quick.
    result = kernel.execute("chunks = []\nwhile True:\n    chunks.append(bytes(10**8))")
    assert "MemoryError" in result.error
    assert kernel.execute("del chunks\nprint('fine')").stdout == "fine\n"


def test_code_that_ignores_the_timeout_signal_is_interrupted(kernel):
    kernel.execute("kept = 1")
    result = kernel.execute("import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(10**6)")
    assert "stopped by an interrupt" in result.error
    assert kernel.execute("kept").value == "1"


def test_code_that_survives_the_interrupt_costs_a_restart(kernel):
    kernel.execute("lost = 1")
    result = kernel.execute(
        "import time\nwhile True:\n    try:\n        time.sleep(10**6)\n    except BaseException:\n        pass"
    )
    assert "restarted" in result.error and "gone" in result.error
    assert "NameError" in kernel.execute("lost").error
    assert kernel.execute("len(context)").value == str(len(DOC))


def test_a_kernel_killed_by_its_cpu_limit_is_reported_and_replaced():
    with KernelREPL(cpu_seconds=2) as kernel:
        kernel.set("context", "abc")
        pid = kernel._kernel.km.provisioner.pid
        result = kernel.execute("while True:\n    pass")
        assert "died" in result.error and "SIGXCPU" in result.error and "cpu_seconds=2" in result.error
        assert kernel.execute("context").value == "'abc'"
        assert not psutil.pid_exists(pid)
        pid = kernel._kernel.km.provisioner.pid
        os.kill(pid, signal.SIGKILL)  # between blocks: the next block is told
        while kernel._kernel.alive():
            time.sleep(0.05)
        after = kernel.execute("context")
        assert after.value == "'abc'" and "SIGKILL" in after.stderr and "restarted" in after.stderr
        workdir, pid = kernel.workdir, kernel._kernel.km.provisioner.pid
    assert not workdir.exists() and not psutil.pid_exists(pid)


def test_the_bridge_refuses_requests_without_the_token(kernel):
    kernel.set("double", lambda text: text * 2)
    body = json.dumps({"name": "double", "args": ["ab"]}).encode()

    def post(headers: dict[str, str], payload: bytes = body) -> tuple[int, Any]:
        request = urllib.request.Request(kernel.bridge_url + "/call", data=payload, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    token = kernel._bridge.token
    assert post({})[0] == 403
    assert post({"Authorization": "Bearer " + "x" * len(token)})[0] == 403
    assert post({"Authorization": f"Bearer {token}"}) == (200, {"json": "abab"})
    assert post({"Authorization": f"Bearer {token}"}, json.dumps({"name": "os.system"}).encode())[0] == 404


def test_close_is_idempotent_and_leaves_nothing_behind():
    processes = _processes()
    kernel = KernelREPL()
    workdir = Path(kernel.workdir)
    assert _processes() != processes
    kernel.close()
    kernel.close()
    assert _processes() == processes and not workdir.exists()


def test_the_callers_interrupt_stops_the_kernel_code_and_propagates(kernel):
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        kernel.execute("import time\ntime.sleep(10**6)")
    timer.join()
    assert time.monotonic() - started < 1.4  # before cell_timeout: the interrupt, not the timer
    assert kernel.execute("print('ready')").stdout == "ready\n"


def test_model_code_raising_keyboardinterrupt_is_just_an_error(kernel):
    kernel.execute("kept = 2")
    assert "KeyboardInterrupt" in kernel.execute("raise KeyboardInterrupt").error
    assert kernel.execute("kept").value == "2"


def test_code_that_breaks_the_kernel_runtime_costs_a_restart(kernel):
    result = kernel.execute("import rlm_kernel.isolation\nrlm_kernel.isolation._SIDE = None")
    assert result.error is None  # this block ran; answering the next request is what fails
    assert "restarted" in kernel.execute("1").error
    assert kernel.execute("len(context)").value == str(len(DOC))
