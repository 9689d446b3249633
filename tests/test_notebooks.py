"""Notebooks executed for real: the quickstart under both kernels, and an interrupt mid-run."""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient

from rlm_kernel.jupyter.run_notebook import rlm_answers
from rlm_kernel.models.server import ModelServer
from tests.conftest import execute, repl

QUICKSTART = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]


@pytest.mark.parametrize("kernel", ["rlm", "python3"])
def test_quickstart_runs_under_both_kernels(kernel, tmp_path):
    nb = nbformat.read(QUICKSTART, as_version=4)
    NotebookClient(nb, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    answers = rlm_answers(nb)
    assert len(answers) == 3 and answers[0].startswith("4 passages mention coolant")
    assert answers[2] == answers[0]  # --new: the same question in a fresh session is asked as the first was
    outputs = {cell.source.splitlines()[0]: cell.outputs for cell in nb.cells if cell.cell_type == "code"}
    tree = [o for o in outputs["%%rlm --context log --out coolant_report"] if "text/html" in o.get("data", {})]
    assert tree and "<details" in tree[0]["data"]["text/html"] and "[done] n0" in tree[0]["data"]["text/plain"]
    assert "demo policy" in outputs["%rlm config"][0]["data"]["text/plain"]
    assert "('done'," in outputs["rlm_last.status, rlm_last.usage"][0]["data"]["text/plain"]
    assert outputs["print(term, len(chunks), 'chunks;', len(findings), 'findings')"][0]["text"].startswith(
        "coolant 8 chunks;"
    )
    tool_line = outputs[
        '[line for line in rlm_last.trace.events[0].data["system_prompt"].splitlines() if "severity" in line]'
    ]
    assert "`severity(line: str) -> int`: How serious a log line is" in tool_line[0]["data"]["text/plain"]
    history = outputs["%rlm history"][0]["data"]["text/plain"]
    sessions = [row.split()[1] for row in history.splitlines() if row[:1].isdigit()]  # aligned: run, session.turn
    assert [turn[-2:] for turn in sessions] == [".1", ".2", ".1"]
    assert (tmp_path / "station_log.txt").stat().st_size > 1_000_000


def _outputs_of(kc, msg_id):
    """The iopub messages of one request, up to its idle status."""
    outputs = []
    while True:
        msg = kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return outputs
        if msg["msg_type"] in ("stream", "error", "execute_result"):
            outputs.append(msg)


def test_interrupt_stops_a_run_within_a_second_and_the_kernel_lives_on():
    release = threading.Event()

    def policy(messages):
        if messages[0]["role"] == "system":
            return repl("out = llm_query_batched(['slow'] * 64)")
        release.wait(30)  # sub-calls hang until the test is over
        return "late"

    with ModelServer(policy) as server:
        km, kc = start_new_kernel(kernel_name="rlm")
        try:
            kc.execute("doc = 'text'\n%config RLMMagics.concurrency = 64")
            msg_id = kc.execute(f"%%rlm --context doc --model openai/policy --api-base {server.url}\nq")
            deadline = time.monotonic() + 60
            while server.stats()["max_in_flight"] < 64 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.stats()["max_in_flight"] >= 64
            interrupted_at = time.monotonic()
            km.interrupt_kernel()
            reply = kc.get_shell_msg(timeout=30)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = kc.get_shell_msg(timeout=30)
            elapsed = time.monotonic() - interrupted_at
            assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "UsageError"
            # Measured (README): 0.3 to 0.7 s on 3.11 and 3.13; 3.10 unwinds 64 cancelled calls more slowly,
            # 0.7 to 1.4 s on these two cores under load.
            limit = 1.0 if sys.version_info >= (3, 11) else 2.0
            assert elapsed < limit, f"interrupt took {elapsed:.2f} s"
            shown = _outputs_of(kc, msg_id)
            assert not [m for m in shown if m["msg_type"] == "error"], shown  # no KeyboardInterrupt traceback
            text = "".join(m["content"].get("text", "") for m in shown if m["msg_type"] == "stream")
            assert re.fullmatch(r"UsageError: interrupted after \d+\.\d s: partial trace in rlm_last\n", text), text
            content, outputs = execute(
                kc, "print(rlm_last.status, rlm_last.trace.root.status, len(rlm_last.trace.root.subcalls))"
            )
            assert content["status"] == "ok"
            printed = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
            assert printed.split() == ["interrupted", "interrupted", "64"]
        finally:
            release.set()
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def test_cell_timeout_stops_blocking_and_looping_code_at_depth_0_in_the_kernel():
    km, kc = start_new_kernel(kernel_name="rlm")
    try:
        setup = (
            "from rlm_kernel.models.policies import register_policy\n"
            "fence = chr(96) * 3\n"
            "register_policy([f'{fence}repl\\nimport time\\ntime.sleep(10**6)\\n{fence}',\n"
            "                 f'{fence}repl\\nwhile True:\\n    pass\\n{fence}',\n"
            "                 f'{fence}repl\\nFINAL(\"survived\")\\n{fence}'], 'sleepy')\n"
            "doc = 'text'\n"
            "%config RLMMagics.cell_timeout = 1.0"
        )
        content, _ = execute(kc, setup)
        assert content["status"] == "ok"
        started = time.monotonic()
        content, outputs = execute(kc, "%%rlm --context doc --model scripted/sleepy\nq", timeout=60)
        assert content["status"] == "ok", content
        assert time.monotonic() - started < 20
        results = [m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result"]
        assert results == ["survived"]  # the answer as written
        content, outputs = execute(
            kc, "print([c.error.splitlines()[0] for it in rlm_last.trace.root.iterations for c in it.cells if c.error])"
        )
        printed = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        assert printed.count("cell_timeout=1s") == 2
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_failed_run_shows_one_line_and_no_traceback_in_the_frontend():
    """What the frontend receives on iopub for failed %%rlm cells: one error line each, no frames."""
    km, kc = start_new_kernel(kernel_name="rlm")
    try:
        execute(kc, "doc = 'some text about coolant'")
        cells = {
            # nothing listens on port 9: the model call fails after its retries
            "%%rlm --context doc --model openai/x --api-base http://127.0.0.1:9/v1\nWhat?": "model call failed",
            "%%rlm --context doc --depth 0\nWhat?": "max_depth must be at least 1",
            "%%rlm --context nowhere\nWhat?": "No variable named 'nowhere'",
        }
        execute(kc, "%config RLMMagics.retries = 0")
        for source, words in cells.items():
            reply, outputs = execute(kc, source, timeout=120)
            # IPython shows a plain UsageError as one stderr line: no `error` message, so no frames.
            assert reply["status"] == "error" and reply["ename"] == "UsageError", reply
            assert not [m for m in outputs if m["msg_type"] == "error"], outputs
            shown = "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")
            assert shown.startswith("UsageError: ") and words in shown and shown.count("\n") == 1, shown
            assert "Traceback" not in shown and 'File "' not in shown
        reply, _ = execute(kc, "rlm_last.status, len(rlm_last.trace.nodes)")
        assert reply["status"] == "ok"  # the kernel lives on, and the failed run's partial trace is kept
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_streamed_reply_reaches_the_frontend_while_the_model_is_still_writing():
    """What the frontend receives on iopub: widget updates carrying the reply's text before the model call ends."""
    first, release = "Reading the notes <first> & then ", threading.Event()

    def written_slowly(messages):
        yield first
        release.wait(30)  # held half-written until the test has seen the first piece in the frontend's messages
        yield repl("FINAL('ok')", prose="counting.")

    with ModelServer(written_slowly) as server:
        km, kc = start_new_kernel(kernel_name="rlm")
        try:
            execute(kc, "doc = 'text'\n%config RLMMagics.stream = True")
            msg_id = kc.execute(f"%%rlm --context doc --model openai/policy --api-base {server.url}\nq")
            escaped = "Reading the notes &lt;first&gt; &amp; then"  # the node's details are HTML
            seen: dict[str, str] = {}
            deadline = time.monotonic() + 60
            while len(seen) < 2 and time.monotonic() < deadline:
                msg = kc.get_iopub_msg(timeout=60)
                if msg["parent_header"].get("msg_id") != msg_id or msg["msg_type"] != "comm_msg":
                    continue
                state = msg["content"]["data"].get("state", {})
                if escaped in str(state.get("value", "")):
                    seen["details"] = state["value"]
                titles = " ".join(state.get("titles", []))
                if re.search(r"openai/policy writing iteration 1 \(\d+ chars\)", titles):
                    seen["title"] = titles
            assert set(seen) == {"details", "title"}, seen
            assert "running · n0" in seen["title"]  # the model call has not ended: its reply is held
            release.set()
            reply = kc.get_shell_msg(timeout=60)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = kc.get_shell_msg(timeout=60)
            assert reply["content"]["status"] == "ok"
        finally:
            release.set()
            kc.stop_channels()
            km.shutdown_kernel(now=True)
