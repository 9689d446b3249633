"""`rlm run` on a terminal shows a live status line while the model thinks; through a pipe it stays quiet."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from rlm_kernel.models.server import ModelServer
from tests.conftest import repl

pytestmark = pytest.mark.slow  # `rlm run` in a pseudo-terminal and again in a pipe, two processes


def slow_policy(messages):
    if sum(m["role"] == "assistant" for m in messages) == 0:
        return repl("x = len(context)\nprint(x)")
    return repl("FINAL('done')")


def _command(url: str, context: str) -> list[str]:
    return [sys.executable, "-m", "rlm_kernel.cli", "run", "--context", context, "--model", "openai/policy",
            "--api-base", url, "--query", "how long?"]  # fmt: skip


def test_a_terminal_sees_the_status_line_and_a_pipe_does_not(tmp_path):
    context = tmp_path / "doc.txt"
    context.write_text("some text\n" * 50)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    with ModelServer(slow_policy, latency_ms=1500) as server:
        leader, follower = pty.openpty()
        process = subprocess.Popen(_command(server.url, str(context)), stdout=subprocess.PIPE, stderr=follower, env=env)
        os.close(follower)
        seen = b""
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    seen += os.read(leader, 4096)
                except OSError:
                    break
        out = process.communicate(timeout=30)[0].decode()
        os.close(leader)
        piped = subprocess.run(_command(server.url, str(context)), capture_output=True, text=True, env=env, timeout=60)
    shown = seen.decode(errors="replace")
    assert process.returncode == 0 and "done" in out
    assert "running · 1 RLM call" in shown and "waiting for openai/policy, iteration 1" in shown
    assert shown.rstrip().endswith("\x1b[K")  # the line is cleared when the run ends
    assert piped.returncode == 0 and "\x1b[K" not in piped.stderr and "running ·" not in piped.stderr
