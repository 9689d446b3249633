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
