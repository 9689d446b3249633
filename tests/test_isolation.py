"""Isolated execution (`RLM(isolation="kernel")`): model code in a separate, limited, sandboxed worker.

The caller's namespace stays out of reach, the context and the engine's functions work inside, and memory
bombs, runaway loops, blocking calls, processes and writes outside the sandbox are stopped. The escape
attempts of issue 13 are in tests/test_isolation_escapes.py; `isolation="kernel-audit"` is tested here too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from rlm_kernel import RLM
from rlm_kernel.core.tools import AnswerDict
from rlm_kernel.isolation import AuditKernelREPL, KernelREPL, MiB, SandboxUnavailable, repl_factory, sandbox
from rlm_kernel.isolation.encoding import dumps, recv_frame, send_frame
from tests.conftest import question_of, repl

pytestmark = [pytest.mark.sandbox, pytest.mark.skipif(os.name != "posix", reason="isolation needs rlimits and signals")]

DOC = "alpha line\n" * 50 + "The secret code is 4242.\n" + "omega line\n" * 50


@pytest.fixture(scope="module")
def kernel() -> Iterator[KernelREPL]:
    """One sandboxed REPL shared by the REPL-level tests."""
    with KernelREPL(cell_timeout=1.5, memory_limit=768 * MiB) as kernel:
        kernel.set("context", DOC)
        yield kernel


@pytest.fixture(scope="module")
def audit_kernel() -> Iterator[KernelREPL]:
    """The weaker kernel-audit mode: the same worker without the sandbox, fenced by an audit hook."""
    with AuditKernelREPL(cell_timeout=1.5, memory_limit=768 * MiB) as kernel:
        kernel.set("context", DOC)
        yield kernel


def _processes() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


# -- through the engine ------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["kernel", "kernel-audit"])
def test_a_records_context_stays_read_only_in_the_worker_and_its_children(scripted, isolation):
    records = [{"id": i, "tags": ["t"]} for i in range(2000)]

    def policy(messages):
        if question_of(messages) == "root":
            return repl("kid = rlm_query(context[:10], 'child')\nFINAL([type(context).__name__, kid, grep('1999')])")
        return repl(
            "try:\n    context[0]['tags'].append('x')\n    tried = 'changed'\n"
            "except TypeError:\n    tried = 'refused'\n"
            "FINAL([len(context), tried])"
        )

    result = RLM(model=scripted(policy), max_depth=2, isolation=isolation).completion(records, "root")
    assert result.status == "done", result.error
    kind, kid, hits = result.answer
    assert kind == "ReadOnlyList" and kid == [10, "refused"] and len(hits) == 1
    assert records[0]["tags"] == ["t"]


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


def test_processes_are_refused_in_the_sandbox(kernel, tmp_path):
    assert kernel.seccomp  # x86_64 Linux: the filter is on
    marker = "/tmp/ran-a-process"  # inside the sandbox's own tmpfs: a process that ran would leave it
    for code in (
        "import os\nos.fork()",
        "import subprocess\nsubprocess.run(['touch', '/tmp/ran-a-process'])",
        "import os\nos.posix_spawn('/usr/bin/touch', ['touch', '/tmp/ran-a-process'], {})",
        "import os\nos.execv('/usr/bin/touch', ['touch', '/tmp/ran-a-process'])",
    ):
        error = kernel.execute(code).error
        assert error is not None and "PermissionError" in error, code
    # C-level calls report failure instead of raising: what counts is that nothing ran.
    status = kernel.execute("import os, ctypes\n(os.system('touch /tmp/ran-a-process'), ctypes.CDLL(None).fork())")
    assert status.value is not None and status.value != "(0, 0)" and status.value.endswith("-1)")
    assert kernel.execute(f"import os\nos.path.exists({marker!r})").value == "False"


def test_model_code_cannot_signal_the_caller(kernel):
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
    try:
        result = kernel.execute(f"import os, signal\nos.kill({os.getpid()}, signal.SIGUSR1)")
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert "ProcessLookupError" in result.error  # the caller's pid does not exist in the sandbox's PID namespace
    assert received == []


def test_the_audit_mode_refuses_processes_and_signals(audit_kernel):
    for code in (
        "import os\nos.fork()",
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.system('true')",
        "import os\nos.kill(os.getppid(), 0)",
        "import ctypes\nctypes.CDLL(None).fork",
    ):
        error = audit_kernel.execute(code).error
        assert error is not None and "PermissionError" in error, code


def test_writes_outside_the_sandbox_change_nothing_on_the_host(kernel, tmp_path):
    outside = tmp_path / "escape.txt"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for code in (
        f"open({str(outside)!r}, 'w')",
        f"import pathlib\npathlib.Path({str(outside)!r}).write_text('x')",
        f"import os\nos.remove({str(victim)!r})",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        "open('/usr/escape.txt', 'w')",
        "open('/escape.txt', 'w')",
    ):
        error = kernel.execute(code).error
        assert error is not None and ("Error" in error), code
    # The same path made inside the sandbox lands in its own tmpfs, not on the host.
    made = kernel.execute(f"import os\nos.makedirs({str(tmp_path)!r})\nopen({str(outside)!r}, 'w').write('x')")
    assert made.error is None
    assert not outside.exists()
    assert victim.read_text() == "keep me"
    inside = kernel.execute(
        "open('notes.txt', 'w').write('ok')\nimport tempfile\nwith tempfile.NamedTemporaryFile() as f:\n"
        "    f.write(b'x')\nprint('written', open('/tmp/notes.txt').read())"
    )
    assert inside.error is None and "written ok" in inside.stdout


def test_the_sandbox_tmpfs_is_capped_at_the_file_size_limit():
    with KernelREPL(file_size_limit=8 * MiB) as kernel:
        result = kernel.execute(
            "for i in range(4):\n    open(f'part{i}', 'wb').write(b'x' * (4 * 1024**2 - 4096))"
        )  # each file fits the file-size limit; together they do not fit the tmpfs
        assert "No space left on device" in result.error


def test_the_audit_mode_refuses_writes_outside_its_directory(audit_kernel, tmp_path):
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
        error = audit_kernel.execute(code).error
        assert error is not None and "PermissionError" in error, code
    assert not outside.exists()
    assert victim.read_text() == "keep me"
    inside = audit_kernel.execute("open('notes.txt', 'w').write('ok')\nprint('written')")
    assert inside.error is None and "written" in inside.stdout
    assert (audit_kernel.workdir / "notes.txt").read_text() == "ok"


def test_growing_memory_stops_at_the_limit(kernel):
    # bytes(n) is calloc'ed: it takes address space (what the limit counts) without touching pages, so it is quick.
    result = kernel.execute("chunks = []\nwhile True:\n    chunks.append(bytes(10**8))")
    assert "MemoryError" in result.error
    assert kernel.execute("del chunks\nprint('fine')").stdout == "fine\n"


def test_code_that_ignores_the_timeout_signal_is_interrupted(kernel):
    kernel.execute("kept = 1")
    result = kernel.execute("import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(10**6)")
    # The caller's interrupt ends the sleep; the worker's own deadline (sent as an asynchronous exception once
    # SIGALRM was taken) may then name the timeout itself: stopped either way, without a restart.
    assert "TimeoutError" in result.error and "restarted" not in result.error
    assert kernel.execute("kept").value == "1"


def test_a_loop_that_swallows_the_stop_is_stopped_without_a_restart(kernel):
    kernel.execute("kept = 3")
    result = kernel.execute(
        "import time\nwhile True:\n    try:\n        time.sleep(10**6)\n    except BaseException:\n        pass"
    )
    assert "TimeoutError" in result.error and "restarted" not in result.error
    assert kernel.execute("kept").value == "3"


def test_code_that_survives_the_interrupt_costs_a_restart(kernel):
    kernel.execute("lost = 1")
    result = kernel.execute(
        "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "time.sleep(10**6)"
    )
    assert "restarted" in result.error and "gone" in result.error
    assert "NameError" in kernel.execute("lost").error
    assert kernel.execute("len(context)").value == str(len(DOC))


def test_a_kernel_killed_by_its_cpu_limit_is_reported_and_replaced():
    with KernelREPL(cpu_seconds=2) as kernel:
        kernel.set("context", "abc")
        pid = kernel._worker.pid
        result = kernel.execute("while True:\n    pass")
        assert "died" in result.error and "SIGXCPU" in result.error and "cpu_seconds=2" in result.error
        assert kernel.execute("context").value == "'abc'"
        assert not psutil.pid_exists(pid)
        pid = kernel._worker.pid
        os.kill(pid, signal.SIGKILL)  # between blocks: the next block is told
        while kernel._worker.alive():
            time.sleep(0.05)
        after = kernel.execute("context")
        assert after.value == "'abc'" and "SIGKILL" in after.stderr and "restarted" in after.stderr
        directory, pid = kernel._dir, kernel._worker.pid
    assert not directory.exists() and not psutil.pid_exists(pid)


def test_the_bridge_refuses_requests_without_the_token(kernel):
    kernel.set("double", lambda text: text * 2)

    def call(request: dict[str, Any]) -> Any:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(kernel._bridge.path))
            send_frame(connection, dumps(request))
            return json.loads(recv_frame(connection))

    token = kernel._bridge.token
    assert call({"name": "double", "args": ["ab"]})["error"]["type"] == "ValueError"  # no token at all
    wrong = call({"token": "x" * len(token), "name": "double", "args": ["ab"]})
    assert wrong["error"]["type"] == "PermissionError"
    assert call({"token": token, "name": "double", "args": ["ab"]}) == {"json": "abab"}
    assert call({"token": token, "name": "os.system", "args": ["true"]})["error"]["type"] == "NameError"
    assert oct(kernel._dir.stat().st_mode & 0o777) == "0o700"  # where the socket lives: this run's alone


def test_close_is_idempotent_and_leaves_nothing_behind():
    processes = _processes()
    kernel = KernelREPL()
    directory = Path(kernel._dir)
    assert _processes() != processes
    kernel.close()
    kernel.close()
    assert _processes() == processes and not directory.exists()


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
    result = kernel.execute("import rlm_kernel.isolation.worker as w\nw.WorkerSide.handle = None")
    assert result.error is None  # this block ran; answering the next request is what fails
    assert "restarted" in kernel.execute("1").error
    assert kernel.execute("len(context)").value == str(len(DOC))


# -- failing up front where the sandbox cannot start ---------------------------------------------------


def test_without_bubblewrap_isolation_kernel_fails_in_one_line_naming_the_package(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real_which(name, *a, **k))
    with pytest.raises(SandboxUnavailable) as raised:
        repl_factory("kernel")
    with pytest.raises(SandboxUnavailable):
        KernelREPL()
    message = str(raised.value)
    assert "\n" not in message and "apt-get install bubblewrap" in message and "kernel-audit" in message
    assert repl_factory("kernel-audit") is AuditKernelREPL  # the weaker mode is there, by its own name
    with pytest.raises(ValueError, match="'kernel', 'kernel-audit'"):
        repl_factory("sandbox")


def test_without_user_namespaces_isolation_kernel_fails_in_one_line(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"  # what bwrap says where unprivileged user namespaces are switched off
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace, likely because the kernel does not "
        "allow non-privileged user namespaces.' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SandboxUnavailable) as raised:
        KernelREPL()
    message = str(raised.value)
    assert "\n" not in message and "No permissions to creating new namespace" in message
    assert "user namespaces" in message
    assert sandbox.shutil.which("bwrap") == str(fake)
