"""Faults, interrupts and runaway code: the run degrades cleanly and leaves nothing behind."""

from __future__ import annotations

import _thread
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import psutil
import pytest

from rlm_kernel import RLM
from rlm_kernel.core import RunInterrupted
from rlm_kernel.models.policies import ScriptedReplies
from rlm_kernel.models.server import ModelServer
from tests.conftest import repl

pytestmark = pytest.mark.slow


def _root_then_echo(root_replies):
    root = ScriptedReplies(root_replies)
    return lambda messages: root(messages) if messages[0]["role"] == "system" else "ok:" + messages[-1]["content"]


def test_a_thousand_sub_calls_through_injected_faults_all_end_and_are_all_charged():
    policy = _root_then_echo(
        [repl("replies = llm_query_batched([f'p{i}' for i in range(1000)])"), repl("FINAL(replies)")]
    )
    faults = ("429", "500", "timeout", "malformed")
    with ModelServer(policy, fail_rate=0.4, faults=faults, timeout_fault_seconds=5, seed=11) as server:
        rlm = RLM(
            model="openai/policy", api_base=server.url, concurrency=32, call_timeout=3.0, retries=3, retry_backoff=0.05
        )
        result = rlm.completion("ctx", "fan out through faults")
        stats = server.stats()
    assert result.status == "done"
    replies = result.answer
    assert len(replies) == 1000
    ok = [r for r in replies if r.startswith("ok:")]
    failed = [r for r in replies if r.startswith("Error: sub-model call failed")]
    assert len(ok) + len(failed) == 1000
    assert all(r == f"ok:p{i}" for i, r in enumerate(replies) if r.startswith("ok:"))
    assert len(ok) > 900  # 0.4 ** 4 of slots exhaust their retries
    assert all(fault > 0 for fault in (stats["faults"][k] for k in faults))
    # Every attempt, faulted or not, is one request to the server and one call on the ledger.
    assert result.usage.llm_calls == stats["requests"]


def _count_sockets(url: str) -> int:
    """This process's open connections to the server at `url` (other tests' servers and clients left out)."""
    port = urllib.parse.urlsplit(url).port
    connections = psutil.Process(os.getpid()).net_connections(kind="tcp")
    return sum(1 for c in connections if c.raddr and c.raddr.port == port and c.status != psutil.CONN_LISTEN)


def hanging_policy(messages):
    """Served by a separate `rlm serve-model` process: the root fans out, sub-calls hang."""
    if messages[0]["role"] == "system":
        return repl("out = llm_query_batched(['slow'] * 64)")
    time.sleep(60)
    return "late"


@pytest.fixture
def hanging_server():
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlm_kernel.cli",
            "serve-model",
            "--port",
            "0",
            "--policy",
            "tests.test_reliability:hanging_policy",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = proc.stdout.readline().split()[-1]
    yield url
    proc.terminate()
    proc.wait(10)
    proc.stdout.close()  # left to the collector, the pipe is a ResourceWarning in whichever test runs then


def _stats(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats") as response:
        return json.load(response)


def _interrupted_run(url: str, transport: str) -> tuple[float, object]:
    """A run interrupted (as by the kernel's stop button) once 64 sub-calls are in flight."""
    in_flight_before = _stats(url)["requests"]
    stamps: list[float] = []

    def interrupt_when_all_in_flight():
        while _stats(url)["requests"] - in_flight_before < 65:  # the root call and 64 sub-calls
            time.sleep(0.02)
        stamps.append(time.monotonic())
        _thread.interrupt_main()

    watcher = threading.Thread(target=interrupt_when_all_in_flight, daemon=True)
    watcher.start()
    with pytest.raises(RunInterrupted) as caught:
        RLM(model="openai/policy", api_base=url, concurrency=64, transport=transport).completion("ctx", "q")
    stopped = time.monotonic() - stamps[0]
    watcher.join(5)
    return stopped, caught.value.result


@pytest.mark.parametrize("transport", ["litellm", "direct"])
def test_interrupt_with_64_calls_in_flight_cancels_them_all_and_leaves_nothing_behind(hanging_server, transport):
    stopped, partial = _interrupted_run(hanging_server, transport)
    assert stopped < 1.0, f"took {stopped:.2f} s to stop"
    assert partial.status == "interrupted" and partial.trace.root.status == "interrupted"
    assert len(partial.trace.root.subcalls) == 64
    assert all(s.done and s.error == "cancelled" for s in partial.trace.root.subcalls)
    # The first run grew the loop's reusable worker pool and litellm's client; a second
    # interrupted run must not add a thread or a socket: nothing leaks per run.
    threads, sockets = threading.active_count(), _count_sockets(hanging_server)
    stopped_again, _ = _interrupted_run(hanging_server, transport)
    assert stopped_again < 1.0
    assert threading.active_count() <= threads
    assert _count_sockets(hanging_server) <= sockets, "sockets of cancelled calls are still open"
    assert sockets <= 8, f"{sockets} sockets left open after the interrupt"
    after = RLM(model="scripted/demo").completion("The coolant leaked.", "What happened to the coolant?")
    assert after.status == "done"


# -- model code that takes the builtins away ----------------------------------------------------------------

BUILTINS_ATTACKS = {
    "rebound": "__builtins__ = {}",
    "deleted": "del __builtins__",
    "none": "__builtins__ = None",
    # In process the builtins module is the process's own while the block runs (other threads see it); at its
    # end it is put back.
    "module changed": "import builtins\nbuiltins.print = None\ndel builtins.isinstance\nbuiltins.extra = 1",
}


@pytest.mark.parametrize("attack", list(BUILTINS_ATTACKS.values()), ids=list(BUILTINS_ATTACKS))
def test_model_code_that_takes_the_builtins_away_breaks_neither_the_run_nor_the_notebook(ip, attack):
    from tests.conftest import run as run_cell

    replies = [repl(attack), repl("print(len(context))"), repl("FINAL(str(len(context)))")]
    seen: list[str] = []
    root = ScriptedReplies(replies)

    def policy(messages):
        seen.append(str(messages[-1]["content"]))
        return root(messages)

    from rlm_kernel.models.policies import register_policy

    ip.user_ns["doc"] = "twelve chars"
    run_cell(ip, f"%config RLMMagics.model = '{register_policy(policy)}'")
    answer = run_cell(ip, "%%rlm --context doc\nHow long is it?")
    assert answer == "12"
    assert "12" in seen[-1] and "NameError" not in seen[-1]  # the second block ran with its builtins
    assert any("builtins; they were put back" in message for message in seen)
    # The notebook's next cells run as before.
    run_cell(ip, "after = len(str(isinstance(1, int)))\nprint(after)")
    assert ip.user_ns["after"] == 4


@pytest.mark.slow
def test_a_child_left_blocked_by_an_ended_run_leaves_the_notebooks_builtins_alone_when_it_wakes(ip):
    from IPython.core.error import UsageError

    from rlm_kernel.models.policies import register_policy
    from tests.conftest import question_of
    from tests.conftest import run as run_cell

    child_sleep_s = 3

    def policy(messages):
        if question_of(messages) == "warm":
            return repl("FINAL('warm')")
        if question_of(messages).startswith("KID"):
            return repl(f"import time\ntime.sleep({child_sleep_s})\nFINAL('kid')")
        return repl("print(rlm_query_batched([('c', 'KID 1'), ('c', 'KID 2')]))")

    model = register_policy(policy)
    RLM(model=model).completion("ctx", "warm")  # litellm's import stays out of the 1 s budget
    run_cell(ip, f"%config RLMMagics.model = '{model}'")
    run_cell(ip, "%config RLMMagics.max_seconds = 1.0")
    run_cell(ip, "%config RLMMagics.max_depth = 2")
    ip.user_ns["doc"] = "ctx"
    with pytest.raises(UsageError, match="max_seconds"):  # the run ends; its children sleep on in C code
        run_cell(ip, "%%rlm --context doc\nq")
    # The children wake while the user's next cell runs: a put-back of the builtins as their blocks found them
    # would take away what the user added since.
    run_cell(
        ip, f"import builtins, time\nbuiltins.mine = 1\ntime.sleep({child_sleep_s})\nkept = hasattr(builtins, 'mine')"
    )
    assert ip.user_ns["kept"] is True


# -- deep or hostile contexts passed in memory ----------------------------------------------------------------


def _deep(depth: int = 100_000) -> list:
    nested: list = []
    for _ in range(depth):
        nested = [nested]
    return nested


class _LenRaises(str):
    def __len__(self):
        raise ZeroDivisionError("hostile __len__")


class _LenLoops(list):
    def __len__(self):
        while True:
            pass


class _ReprRaises:
    def __repr__(self):
        raise RuntimeError("hostile __repr__")


class _ReprLoops:
    def __repr__(self):
        while True:
            pass


HOSTILE_CONTEXTS = {
    "deep list in a dict": lambda: {"nested": _deep()},
    "deep list in records": lambda: [{"nested": _deep()}],
    "__len__ raises": lambda: _LenRaises("some text"),
    "__len__ loops": lambda: _LenLoops(["a", "b"]),
    "__repr__ raises": lambda: {"value": _ReprRaises()},
    "__repr__ loops": lambda: [{"value": _ReprLoops()}],
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("make", list(HOSTILE_CONTEXTS.values()), ids=list(HOSTILE_CONTEXTS))
def test_a_deep_or_hostile_context_is_one_context_error_line_not_a_traceback_or_hang(make):
    from rlm_kernel.core.errors import ContextError

    rlm = RLM(model="scripted/demo")
    started = time.monotonic()
    with pytest.raises(ContextError) as caught:
        rlm.completion(make(), "What is in it?")
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "\n" not in message and message.startswith("the context"), message
    assert elapsed < 30, f"took {elapsed:.0f} s"


@pytest.mark.timeout(120)
def test_model_code_that_passes_a_hostile_context_to_a_child_gets_a_context_error(scripted):
    replies = [
        repl(
            "class Loud:\n    def __repr__(self):\n        while True:\n            pass\nrlm_query({'v': Loud()}, 'q')"
        ),
        repl("nested = []\nfor _ in range(100_000):\n    nested = [nested]\nrlm_query({'n': nested}, 'q')"),
        repl("FINAL('done')"),
    ]
    seen: list[str] = []
    root = ScriptedReplies(replies)

    def policy(messages):
        seen.append(str(messages[-1]["content"]))
        return root(messages)

    started = time.monotonic()
    result = RLM(model=scripted(policy), max_depth=2).completion("ctx", "q")
    assert result.status == "done"
    assert time.monotonic() - started < 60
    looped, deep = seen[1], seen[2]
    assert "ContextError: the context could not be described: that took over" in looped, looped
    assert "ContextError: the context could not be described: it is nested too deeply" in deep, deep


# -- a server that ignores max_tokens ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("streams", [True, False], ids=["streaming", "one-body"])
def test_a_server_that_ignores_max_tokens_never_takes_the_run_past_its_budget(streams):
    """Calls one at a time, each reply about 30,000 tokens whatever max_tokens asked for. A server that streams is
    ended at each call's cap: the run is charged at most its budget. One that answers with one body is charged what
    it reported (the overshoot is that one call's) and gets no further call."""
    from rlm_kernel.models.policies import messages_tokens
    from rlm_kernel.models.wire import count_tokens

    long_reply = "lorem " * 20000
    served: list[int] = []
    code = "out = [llm_query(f'p{i}') for i in range(10)]\nprint(sum(o.startswith('lorem') for o in out))"
    root = ScriptedReplies([repl(code), repl("FINAL('x')")])

    def policy(messages):
        reply = root(messages) if messages[0]["role"] == "system" else long_reply
        served.append(messages_tokens(messages) + count_tokens(reply))
        return reply

    limit = 12_000
    with ModelServer(policy, streams=streams) as server:
        result = RLM(model="openai/policy", api_base=server.url, max_tokens=limit).completion("ctx", "q")
        requests = server.stats()["requests"]
    assert result.status == "budget"
    assert result.usage.llm_calls == requests == len(served)
    if streams:
        assert result.usage.tokens <= limit
        assert requests > 2  # the sub-calls ended at their caps left room for more of them
    else:
        assert requests == 2  # the root's call and one sub-call
        assert result.usage.tokens == sum(served)  # settled at what the server says it used, not at the cap asked for


# -- the bench's safety rows ---------------------------------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("figure", ["loaders", "typed_answers", "streaming_redaction", "response_cache"])
def test_each_safety_row_of_the_bench_runs_its_attack_and_reports_it_held(figure):
    from rlm_kernel.bench import safety

    rows = getattr(safety, figure)().splitlines()
    assert len(rows) >= 2
    assert [row for row in rows if not row.endswith(" -- pass")] == []
