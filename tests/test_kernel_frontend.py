"""What the frontend receives from a real `rlm` kernel (iopub), set up as the README documents it."""

from __future__ import annotations

import base64
import html
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

from rlm_kernel.models.server import ModelServer
from tests.conftest import execute, repl

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]
JUPYTER = Path(sys.executable).with_name("jupyter")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@contextmanager
def kernel_and_manager(**env: str) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    """An `rlm` kernel whose environment has `env` added, as a user's shell or kernelspec would set it."""
    km, kc = start_new_kernel(kernel_name="rlm", env={**os.environ, **env})
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@contextmanager
def kernel(**env: str) -> Iterator[BlockingKernelClient]:
    with kernel_and_manager(**env) as (_, kc):
        yield kc


def shown_text(messages: list[dict[str, Any]]) -> str:
    """Everything printed to stdout / stderr and every error, as one string."""
    parts = []
    for msg in messages:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            parts.append(content["text"])
        elif msg["msg_type"] == "error":
            parts.append("\n".join(content["traceback"]))
    return "".join(parts)


def results(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "execute_result"]


def test_the_model_from_the_environment_answers_a_cell_without_model(tmp_path):
    """RLM_MODEL and RLM_API_BASE in the kernel's environment: `%%rlm` with no --model uses them."""
    with ModelServer(lambda messages: repl("FINAL('from the environment')")) as server:
        with kernel(RLM_MODEL="openai/policy", RLM_API_BASE=server.url) as kc:
            execute(kc, "doc = 'text'")
            content, messages = execute(kc, "%%rlm --context doc\nWhat is it?")
            assert content["status"] == "ok", shown_text(messages)
            assert results(messages) == ["from the environment"]
            assert "Traceback" not in shown_text(messages)
            content, messages = execute(kc, "print(rlm_last.trace.root.model)")
            assert shown_text(messages).strip() == "openai/policy"
        assert server.stats()["requests"] >= 1


def test_the_settings_table_with_the_model_from_the_environment_and_a_cost_budget():
    with kernel(RLM_MODEL="openai/unpriced-model") as kc:
        content, messages = execute(kc, "%config RLMMagics.max_cost_usd = 1.0\n%rlm config")
        assert content["status"] == "ok", shown_text(messages)
        shown = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "display_data"]
        assert any("openai/unpriced-model" in text and "$RLM_MODEL" in text for text in shown), shown
        assert any("cannot bind" in text and "openai/unpriced-model" in text for text in shown), shown


def _fan_out(messages: list[dict[str, Any]]) -> str:
    """The root asks two child RLMs, each of which calls llm_query once."""
    question = str(messages[1]["content"]).split("\n", 1)[0]
    if len(messages) > 2:
        return repl("FINAL(str(answers))" if "parts" in question else "FINAL(said)")
    if "parts" in question:
        return repl("answers = rlm_query_batched([(w, 'the part') for w in context.split()])")
    if "the part" in question:
        return repl("said = llm_query('say ' + context)")
    return "said it"


def comm_counts(messages: list[dict[str, Any]]) -> tuple[int, int]:
    types = [m["msg_type"] for m in messages]
    return types.count("comm_open"), types.count("comm_close")


def test_a_finished_run_leaves_the_static_tree_and_no_widget_models():
    """The live widgets give way to the <details> tree in the same output, and every widget model is closed."""
    with ModelServer(_fan_out) as server, kernel() as kc:
        execute(kc, "doc = 'alpha beta'")
        cell = f"%%rlm --context doc --model openai/policy --api-base {server.url} --depth 2\nHow are the parts?"
        content, messages = execute(kc, cell)
        assert content["status"] == "ok", shown_text(messages)
        opened, closed = comm_counts(messages)
        assert opened > 10 and closed == opened, (opened, closed)  # the live tree, then nothing left alive
        (shown,) = [
            m for m in messages if m["msg_type"] == "display_data" and "display_id" in m["content"]["transient"]
        ]
        final = [m for m in messages if m["msg_type"] == "update_display_data"][-1]
        assert final["content"]["transient"]["display_id"] == shown["content"]["transient"]["display_id"]
        data = final["content"]["data"]
        assert "application/vnd.jupyter.widget-view+json" not in data
        assert data["text/html"].count("<summary") >= 5 and "say beta" in data["text/html"]
        assert data["text/plain"].startswith("[done] n0")

        content, messages = execute(kc, "%rlm show")
        assert content["status"] == "ok"
        assert comm_counts(messages) == (0, 0)
        (result,) = [m for m in messages if m["msg_type"] == "execute_result"]
        assert "application/vnd.jupyter.widget-view+json" not in result["content"]["data"]
        assert result["content"]["data"]["text/html"].count("<summary") >= 5


def test_a_failed_run_also_leaves_the_static_tree_and_no_widget_models():
    with kernel() as kc:
        execute(kc, "doc = 'text'\n%config RLMMagics.retries = 0")
        content, messages = execute(kc, "%%rlm --context doc --model openai/x --api-base http://127.0.0.1:9/v1\nWhat?")
        assert content["status"] == "error" and content["ename"] == "UsageError"
        opened, closed = comm_counts(messages)
        assert opened > 0 and closed == opened, (opened, closed)
        final = [m for m in messages if m["msg_type"] == "update_display_data"][-1]
        assert "application/vnd.jupyter.widget-view+json" not in final["content"]["data"]
        assert "<details" in final["content"]["data"]["text/html"]


def _details_in_html(notebook: Path) -> str:
    """`jupyter nbconvert --to html` of an executed notebook, as plain as a user runs it."""
    done = subprocess.run(
        [str(JUPYTER), "nbconvert", "--to", "html", "--stdout", str(notebook)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("runner", ["nbconvert", "papermill"])
def test_a_notebook_executed_headless_converts_to_html_with_its_call_tree(tmp_path, runner):
    source, executed = tmp_path / "run.ipynb", tmp_path / "executed.ipynb"
    with ModelServer(_fan_out) as server:
        cells = [
            "doc = 'alpha beta'",
            f"%%rlm --context doc --model openai/policy --api-base {server.url} --depth 2\nHow are the parts?",
        ]
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])
        nb.metadata["kernelspec"] = {"name": "rlm", "display_name": "rlm", "language": "python"}
        nbformat.write(nb, source)
        if runner == "nbconvert":
            command = [
                str(JUPYTER),
                "nbconvert",
                "--to",
                "notebook",
                "--execute",
                str(source),
                "--output",
                executed.name,
            ]
        else:
            command = [sys.executable, "-m", "papermill", str(source), str(executed)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    outputs = nbformat.read(executed, as_version=4).cells[1].outputs
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    page = _details_in_html(executed)
    assert page.count("<details") >= 5 and "say beta" in page


def test_a_cost_budget_on_an_unpriced_model_is_said_in_one_line_on_every_run():
    """Not a Python warning with a file path once a kernel: a note in each such run's output, when it starts."""
    with ModelServer(lambda messages: repl("FINAL('ok')")) as server, kernel() as kc:
        execute(kc, "doc = 'text'")
        cell = f"%%rlm --context doc --model openai/policy --api-base {server.url} --budget 1\nq"
        for _ in range(2):
            content, messages = execute(kc, cell)
            assert content["status"] == "ok", shown_text(messages)
            notes = [
                m["content"]["data"]["text/plain"]
                for m in messages
                if m["msg_type"] == "display_data" and "cannot bind" in m["content"]["data"].get("text/plain", "")
            ]
            assert len(notes) == 1 and "\n" not in notes[0], notes
            assert notes[0].startswith("⚠ max_cost_usd=1 cannot bind: litellm has no price for openai/policy")
            assert "Warning" not in shown_text(messages), shown_text(messages)
            first_display = next(m for m in messages if m["msg_type"] == "display_data")
            assert "cannot bind" in first_display["content"]["data"]["text/plain"]  # above the tree, as the run starts


def test_the_running_block_shows_its_code_while_it_runs():
    """What the frontend receives while a block waits on its sub-call: the block's code, before any output."""
    release = threading.Event()

    def policy(messages: list[dict[str, Any]]) -> str:
        if len(messages) == 1:  # the block's llm_query: held until the test has seen the code
            release.wait(60)
            return "late"
        if len(messages) > 2:
            return repl("FINAL(answer)")
        return repl("answer = llm_query('summarise the held part')\nprint(answer)")

    with ModelServer(policy) as server, kernel() as kc:
        try:
            execute(kc, "doc = 'text'")
            msg_id = kc.execute(f"%%rlm --context doc --model openai/policy --api-base {server.url}\nq")
            seen = ""
            deadline = time.monotonic() + 90
            while "summarise the held part" not in seen and time.monotonic() < deadline:
                msg = kc.get_iopub_msg(timeout=90)
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "comm_msg":
                    value = str(msg["content"]["data"].get("state", {}).get("value", ""))
                    seen = value if "code block 1 of 1 running" in value else seen
            assert "summarise the held part" in seen and ">llm_query<" in seen
            assert "cell" not in re.sub(r"<[^>]+>", "", seen)  # a model's block, not a notebook cell
        finally:
            release.set()
        reply = kc.get_shell_msg(timeout=90)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=90)
        assert reply["content"]["status"] == "ok"


def test_a_batch_of_sub_model_calls_gets_a_counts_line_and_folds_past_twenty():
    def policy(messages: list[dict[str, Any]]) -> str:
        if len(messages) == 1:
            return "no" if "7" in str(messages[0]["content"]) else "ok"
        if len(messages) > 2:
            return repl("FINAL(len(replies))")
        return repl("replies = llm_query_batched([f'prompt {i}' for i in range(30)])")

    with ModelServer(policy) as server, kernel() as kc:
        execute(kc, "doc = 'text'")
        content, messages = execute(kc, f"%%rlm --context doc --model openai/policy --api-base {server.url}\nq")
        assert content["status"] == "ok", shown_text(messages)
        page = [m for m in messages if m["msg_type"] == "update_display_data"][-1]["content"]["data"]["text/html"]
        assert "↳ 30 llm_query calls: 30 done" in page
        assert page.count("llm_query · openai/policy") == 30 and "show 10 more</summary>" in page
        assert page.index("show 10 more") > page.index("prompt 19") and page.index("show 10 more") < page.index(
            "prompt 20"
        )


def _numbers_each_view_shows(kc: BlockingKernelClient, messages: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Model calls, tokens and cost of the last run as the header, the root's title, `%rlm history`,
    `rlm_last.usage` and the CLI's summary line (`RLMResult.summary`) give them."""
    page = [m for m in messages if m["msg_type"] == "update_display_data"][-1]["content"]["data"]["text/html"]
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    header = text.split("RLM run: ", 1)[1]
    title = re.search(r"<summary[^>]*>(.*?)</summary>", page, re.S)
    assert title is not None
    title_text = html.unescape(re.sub(r"<[^>]+>", "", title.group(1)))

    def from_line(line: str) -> tuple[str, ...]:
        calls = re.search(r"([\d,]+) model calls?", line)
        tokens = re.search(r"([\d,]+)\+([\d,]+) tok", line) or re.search(r"([\d,]+) input \+ ([\d,]+) output", line)
        assert calls is not None and tokens is not None, line
        total = int(tokens.group(1).replace(",", "")) + int(tokens.group(2).replace(",", ""))
        cost = re.search(r"(\$[\d.]+(?: \+ unknown)?|cost unknown)", line)
        return calls.group(1), f"{total:,}", cost.group(1) if cost else "-"

    _, shown = execute(kc, "%rlm history")
    table = next(m for m in shown if m["msg_type"] == "display_data")["content"]["data"]["text/html"]
    last_row = re.findall(r"<tr>(.*?)</tr>", table)[-1]
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", last_row)]
    history = (cells[4], cells[5], cells[6].replace("unknown", "cost unknown") if cells[6] == "unknown" else cells[6])
    _, printed = execute(
        kc,
        "u = rlm_last.usage\nprint(f'{u.llm_calls:,}|{u.input_tokens + u.output_tokens:,}')\nprint(rlm_last.summary())",
    )
    usage_line, summary = shown_text(printed).strip().split("\n")
    calls, tokens = usage_line.split("|")
    return {
        "header": from_line(header.split("\n", 1)[0]),
        "root title": from_line(title_text),
        "history": history,
        "rlm_last.usage": (calls, tokens, from_line(summary)[2]),
        "CLI summary": from_line(summary),
    }


def _same_everywhere(numbers: dict[str, tuple[str, ...]], calls: str) -> None:
    assert len(set(numbers.values())) == 1, numbers
    assert numbers["header"][0] == calls, numbers


def test_every_view_gives_the_same_model_calls_tokens_and_cost_for_a_failed_an_interrupted_and_a_budget_stopped_run():
    """Model calls are requests sent (a failed attempt and a call cut by an interrupt included): the header and
    the root's title said 0 for a run whose 4 attempts failed, and 1 for a run interrupted with 6 calls in flight."""
    held = threading.Event()
    in_flight = threading.Semaphore(0)

    def policy(messages: list[dict[str, Any]]) -> str:
        if len(messages) == 1:
            if "hold" in str(messages[0]["content"]):
                in_flight.release()
                held.wait(60)
            return "sub reply"
        if len(messages) > 2:
            return repl("FINAL(len(replies))")
        if "hold" in str(messages[1]["content"]):
            return repl("replies = llm_query_batched([f'hold {i}' for i in range(6)])")
        return repl("replies = llm_query_batched([f'prompt {i}' for i in range(5)])")

    with ModelServer(policy) as server, kernel_and_manager() as (km, kc):
        try:
            execute(kc, "doc = 'text'\n%config RLMMagics.retries = 3\n%config RLMMagics.retry_backoff = 0.01")
            content, messages = execute(kc, "%%rlm --context doc --model openai/x --api-base http://127.0.0.1:9/v1\nq")
            assert content["status"] == "error"
            _same_everywhere(_numbers_each_view_shows(kc, messages), "4")  # 1 attempt + 3 retries, all sent

            msg_id = kc.execute(f"%%rlm --context doc --model openai/policy --api-base {server.url}\nhold them")
            for _ in range(6):
                assert in_flight.acquire(timeout=60)
            km.interrupt_kernel()
            messages = []
            while True:
                msg = kc.get_iopub_msg(timeout=60)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
                messages.append(msg)
            _same_everywhere(_numbers_each_view_shows(kc, messages), "7")  # the root's reply and 6 calls in flight
        finally:
            held.set()

        execute(kc, "%config RLMMagics.max_llm_calls = 3")
        content, messages = execute(kc, f"%%rlm --context doc --model openai/policy --api-base {server.url}\nq")
        assert "budget" in shown_text(messages) + str(messages), shown_text(messages)
        _same_everywhere(_numbers_each_view_shows(kc, messages), "3")


def _error_of(content: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[str, str]:
    """The cell's error line and the text of the static tree left in its output."""
    assert content["status"] == "error"
    page = [m for m in messages if m["msg_type"] == "update_display_data"][-1]["content"]["data"]["text/html"]
    return content["evalue"], html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_a_failed_run_says_its_error_once_and_in_words_that_fit_what_happened():
    def policy(messages: list[dict[str, Any]]) -> str:
        if len(messages) == 1:
            return "sub reply"
        return repl("part = llm_query('a part')\nprint(part)")

    environ = {name: "" for name in ("OPENAI_API_KEY", "RLM_API_KEY")}
    with ModelServer(policy) as server, kernel(**environ) as kc:
        execute(kc, "doc = 'text'\n%config RLMMagics.retries = 0")
        content, messages = execute(kc, "%%rlm --context doc --model openai/x --api-base http://127.0.0.1:9/v1\nq")
        error, tree = _error_of(content, messages)
        assert error.startswith("RLM run error: model call failed: cannot connect to http://127.0.0.1:9/v1: ")
        assert error.count("127.0.0.1") == 1 and "(gave up after 1 attempt)" in error, error  # aiohttp named it again
        assert "cannot connect" not in tree and "as the cell's error below says" in tree  # not twice

        content, messages = execute(kc, "%%rlm --context doc --model openai/gpt-4o-mini\nq")
        error, _ = _error_of(content, messages)
        assert "no API key for https://api.openai.com/v1, so nothing was sent; set OPENAI_API_KEY" in error, error
        assert "refused" not in error

        execute(kc, "%config RLMMagics.max_llm_calls = 2")
        content, messages = execute(kc, f"%%rlm --context doc --model openai/policy --api-base {server.url}\nq")
        error, _ = _error_of(content, messages)
        assert error.startswith("RLM run budget: budget exhausted (max_llm_calls): all 2 model calls are used"), error
        assert "Aggregate what you have" not in error  # what the model is told, not the user

        content, messages = execute(kc, "%rlm config --changed")
        assert content["status"] == "ok", shown_text(messages)
        (table,) = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "display_data"]
        rows = table.split("\n")[1:]
        assert sorted(row.split()[0] for row in rows) == ["max_llm_calls", "retries"], table


def test_iterations_carry_final_and_err_badges_and_failed_nodes_are_listed_apart():
    def policy(messages: list[dict[str, Any]]) -> str:
        question = str(messages[1]["content"]) if len(messages) > 1 else ""
        if "the part" in question:
            return repl("print('still looking')")  # a child that never answers: the call budget stops it
        if "fan out" in question:
            return repl("parts = rlm_query_batched([(context, 'the part'), (context, 'the part')])")
        return repl("x = 1 / 0") if len(messages) == 2 else repl("FINAL('done')")

    with ModelServer(policy) as server, kernel() as kc:
        execute(kc, "doc = 'text'")
        model = f"--model openai/policy --api-base {server.url}"
        content, messages = execute(kc, f"%%rlm --context doc {model}\nq")
        assert content["status"] == "ok", shown_text(messages)
        page = [m for m in messages if m["msg_type"] == "update_display_data"][-1]["content"]["data"]["text/html"]
        text = html.unescape(re.sub(r"<[^>]+>", "", page))
        assert "iteration 1 ERR · " in text and "iteration 2 FINAL · " in text
        assert "failed only" not in text  # nothing failed

        execute(kc, "%config RLMMagics.max_llm_calls = 3")
        content, messages = execute(kc, f"%%rlm --context doc {model} --depth 2 --concurrency 1\nfan out")
        page = [m for m in messages if m["msg_type"] == "update_display_data"][-1]["content"]["data"]["text/html"]
        listing = re.search(r"<details><summary[^>]*>failed only: (\d+) nodes</summary>(.*?)</details>", page, re.S)
        assert listing is not None, page[:2000]
        failed = re.findall(r"<b>(n\d+)</b>", listing.group(2))
        assert len(failed) == int(listing.group(1)) >= 2 and "n0" in failed, listing.group(2)


def test_insert_picks_the_block_that_did_work_and_its_final_shows_the_text_as_written():
    replies = iter([repl("x = len(context)\nprint(x)"), repl("FINAL('the answer')")])
    with ModelServer(lambda messages: next(replies)) as server, kernel() as kc:
        execute(kc, "doc = 'text'")
        content, messages = execute(kc, f"%%rlm --context doc --model openai/policy --api-base {server.url}\nq")
        assert content["status"] == "ok", shown_text(messages)
        content, _ = execute(kc, "%rlm insert n0")
        (inserted,) = [p["text"] for p in content["payload"] if p.get("source") == "set_next_input"]
        assert inserted.endswith("\n\nx = len(context)\nprint(x)")  # not the FINAL('the answer') block
        content, messages = execute(kc, "from rlm_kernel.jupyter.inserted import FINAL\nFINAL('the answer')")
        shown = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "display_data"]
        assert shown == ["the answer"]  # not "'the answer'"


def inserting_policy(messages: list[dict[str, Any]]) -> str:
    """A root that asks a sub-model and fans out to two children; each child counts over three iterations."""
    if messages[0]["role"] == "user":  # a plain sub-model call (llm_query)
        return f"recorded reply to {messages[0]['content']}"
    question, turn = str(messages[1]["content"]), len(messages)
    if "count the a" in question:
        return [
            repl("n = context.count('a')\nnote = llm_query('is ' + context + ' long?')"),
            repl("total = n * 10\nprint(total, note)"),
            repl("FINAL(total)"),
        ][(turn - 2) // 2]
    if turn == 2:
        return repl("head = llm_query('name ' + context[:3])\nprint(head)")
    if turn == 4:
        return repl("counts = rlm_query_batched([(context[:4], 'count the a'), (context[4:], 'count the a')])")
    return repl("FINAL(counts)")


def test_inserted_cells_run_childrens_blocks_and_sub_model_calls_offline():
    with ModelServer(inserting_policy) as server, kernel() as kc:
        execute(kc, "doc = 'banana bandana'")
        command = f"%%rlm --context doc --model openai/policy --api-base {server.url} --depth 2\nq"
        content, messages = execute(kc, command)
        assert content["status"] == "ok", shown_text(messages)
        assert results(messages) == ["[20, 40]"]
        asked = server.stats()["requests"]

        def inserted(args: str) -> str:
            content, messages = execute(kc, f"%rlm insert {args}")
            assert content["status"] == "ok", shown_text(messages)
            (source,) = [p["text"] for p in content["payload"] if p.get("source") == "set_next_input"]
            return source

        # The root's block that calls llm_query: the recorded reply, and no request to the server.
        source = inserted("n0:1")
        content, messages = execute(kc, source)
        assert content["status"] == "ok", shown_text(messages)
        assert shown_text(messages) == "recorded reply to name ban\n"

        # A child's second iteration: its own context, `n` and `note` from its first, with no NameError.
        for child, piece in (("n1", "bana"), ("n2", "na bandana")):
            source = inserted(f"{child}:2")
            assert f"context, n, note = names_before(1, {child!r}, 2, 'context', 'n', 'note')" in source, source
            execute(kc, "del n, note, total")  # nothing left over from the run or the last cell
            content, messages = execute(kc, source)
            assert content["status"] == "ok", shown_text(messages)
            count = piece.count("a")
            assert shown_text(messages) == f"{count * 10} recorded reply to is {piece} long?\n"
            content, messages = execute(kc, "context")
            assert results(messages) == [repr(piece)]

        # The root's fan-out again: the children run on their recorded replies and return their Python values.
        source = inserted("n0:2")
        content, messages = execute(kc, source + "\ncounts")
        assert content["status"] == "ok", shown_text(messages)
        assert results(messages) == ["[20, 40]"], shown_text(messages)
        assert server.stats()["requests"] == asked  # all of it offline

        # Asked for, the sub-model calls go to the model itself, as the cell's header says.
        source = inserted("n0:1 --live")
        assert "# the model, live" in source
        content, messages = execute(kc, source)
        assert content["status"] == "ok", shown_text(messages)
        assert shown_text(messages) == "recorded reply to name ban\n"  # the policy's answer, asked again
        assert server.stats()["requests"] == asked + 1


def test_counts_of_one_read_as_english_in_the_tree_and_the_export_while_the_model_reads_its_prompt_unchanged(tmp_path):
    asked = []

    def policy(messages: list[dict[str, Any]]) -> str:
        asked.append(str(messages[1]["content"]))
        return repl("FINAL('done')")

    with ModelServer(policy) as server, kernel() as kc:
        execute(kc, "doc = 'abc'")
        content, messages = execute(kc, f"%%rlm --context doc --model openai/policy --api-base {server.url}\nq")
        assert content["status"] == "ok", shown_text(messages)
        page = [m for m in messages if m["msg_type"] == "update_display_data"][-1]["content"]["data"]["text/html"]
        text = html.unescape(re.sub(r"<[^>]+>", "", page))
        assert "context: 3 chars in 1 line (about 1 token)" in text, text
        plain = [m for m in messages if m["msg_type"] == "update_display_data"][-1]["content"]["data"]["text/plain"]
        assert "1 model call," in plain and "1 calls" not in plain, plain  # a terminal's outline of the tree
        assert "summary: 3 chars in 1 lines (about 1 tokens)" in asked[0]  # what the model reads is as it was
        content, messages = execute(kc, f"%rlm export {tmp_path / 'run.ipynb'}")
        assert content["status"] == "ok", shown_text(messages)
    cells = "\n".join(cell.source for cell in nbformat.read(tmp_path / "run.ipynb", as_version=4).cells)
    assert "| call tree | 1 call, depth up to 0 |" in cells
    assert "3 chars in 1 line (about 1 token)" in cells and " · 1 iteration · " in cells
    assert "1 lines" not in cells and "1 iterations" not in cells


def test_papermill_parameters_carry_the_question_as_written_and_the_answer_shows_as_markdown(tmp_path):
    asked = []

    def policy(messages: list[dict[str, Any]]) -> str:
        asked.append(str(messages[1]["content"]))
        return repl("FINAL('**bold** answer')")

    source, executed = tmp_path / "run.ipynb", tmp_path / "executed.ipynb"
    parameters = nbformat.v4.new_code_cell("question = 'a default question'")
    parameters.metadata["tags"] = ["parameters"]
    with ModelServer(policy) as server:
        cells = [
            parameters,
            nbformat.v4.new_code_cell("doc = 'text'"),
            nbformat.v4.new_code_cell(
                f"%rlm --question-from question --context doc --format markdown --model openai/policy "
                f"--api-base {server.url}"
            ),
        ]
        nb = nbformat.v4.new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "rlm", "display_name": "rlm", "language": "python"}
        nbformat.write(nb, source)
        written = "What do {doc} and $doc say? 100% sure"  # braces and $ that a %%rlm line would expand
        command = [sys.executable, "-m", "papermill", str(source), str(executed), "-p", "question", written]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert asked and asked[0].startswith(f"Question: {written}\n"), asked
    (answer,) = [
        o for o in nbformat.read(executed, as_version=4).cells[-1].outputs if o["output_type"] == "execute_result"
    ]
    assert answer["data"]["text/markdown"] == "**bold** answer"


def test_a_question_in_the_cell_and_in_a_variable_is_refused_in_one_line():
    with kernel() as kc:
        execute(kc, "doc = 'text'\nq = 'asked'\nn = 3")
        for cell, said in (
            ("%%rlm --context doc --question-from q\nalso asked", "Two questions: the cell body and --question-from q"),
            ("%rlm --context doc --question-from n", "--question-from n: expected a string, but n is a int"),
            ("%rlm --context doc", "No question: write it in the cell body"),
            ("%%rlm --context doc --format html\nq", "argument --format: invalid choice: 'html'"),
        ):
            content, _ = execute(kc, cell)
            assert content["status"] == "error" and said in content["evalue"], content["evalue"]


def test_models_lists_the_configured_models_aliases_and_what_litellm_knows_for_the_keys_set():
    with ModelServer(lambda messages: repl("FINAL('ok')")) as server, kernel(OPENAI_API_KEY="sk-test-not-a-key") as kc:
        content, messages = execute(kc, "%rlm alias fast openai/policy")
        assert content["status"] == "ok", shown_text(messages)
        content, messages = execute(kc, "%rlm models")
        assert content["status"] == "ok", shown_text(messages)
        tables = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "display_data"]
        configured, providers = tables[0], tables[1]
        assert "alias fast" in configured and "openai/policy" in configured, configured
        assert re.search(r"^openai\s+\d+\s+openai/", providers, re.M), providers
        assert "anthropic" not in providers  # no key for it here
        content, messages = execute(kc, "%rlm models openai")
        (listed,) = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "display_data"]
        assert "openai/gpt-4o-mini" in listed.split()

        # The alias stands for its model in --model: the server is asked for `policy`.
        execute(kc, "doc = 'text'")
        content, messages = execute(kc, f"%%rlm --context doc --model fast --api-base {server.url}\nq")
        assert content["status"] == "ok" and results(messages) == ["ok"], shown_text(messages)
        assert server.stats()["models"] == {"policy": 1}
        for line, said in (
            ("%rlm alias a/b openai/x", "An alias is one word with no '/'"),
            ("%rlm alias --remove slow", "No alias named 'slow'"),
            ("%rlm models nowhere", "litellm lists no chat models for 'nowhere'"),
        ):
            content, _ = execute(kc, line)
            assert content["status"] == "error" and said in content["evalue"], content["evalue"]


def test_diff_shows_two_runs_of_one_question_side_by_side_with_their_code():
    replies = iter([repl("x = len(context)\nprint(x)"), repl("FINAL(x)"), repl("x = context.upper()\nFINAL(x)")])
    with ModelServer(lambda messages: next(replies)) as server, kernel() as kc:
        execute(kc, "doc = 'text'")
        model = f"--context doc --model openai/policy --api-base {server.url}"
        for extra in ("", " --max-iterations 5 --new"):
            content, messages = execute(kc, f"%%rlm {model}{extra}\nHow long is it?")
            assert content["status"] == "ok", shown_text(messages)
        content, messages = execute(kc, "%rlm diff 1 2")
        assert content["status"] == "ok", shown_text(messages)
        table, code = (m["content"]["data"] for m in messages if m["msg_type"] == "display_data")
        rows = {line.split("  ")[0]: re.split(r"\s{2,}", line.strip()) for line in table["text/plain"].split("\n")[1:]}
        assert rows["setting max_iterations"][1:] == ["20", "5"], table["text/plain"]
        assert "question" not in rows  # the same question
        assert rows["answer"][1:] == ["4", "TEXT"]
        assert rows["iterations"][1:] == ["2 at the root, 2 in all", "1 at the root, 1 in all"]
        assert rows["model calls"][1:] == ["2 model calls", "1 model call"]
        assert "-x = len(context)" in code["text/plain"] and "+x = context.upper()" in code["text/plain"]
        content, _ = execute(kc, "%rlm diff 1 3")
        assert content["status"] == "error" and "No run 3: this session has runs 1 to 2" in content["evalue"]


def test_the_tree_carries_a_timeline_of_its_nodes_with_their_waits_code_and_tokens(tmp_path):
    with ModelServer(inserting_policy) as server, kernel() as kc:
        execute(kc, "doc = 'banana bandana'")
        command = f"%%rlm --context doc --model openai/policy --api-base {server.url} --depth 2\nq"
        content, messages = execute(kc, command)
        assert content["status"] == "ok", shown_text(messages)
        page = [m for m in messages if m["msg_type"] == "update_display_data"][-1]["content"]["data"]["text/html"]
        folded = re.search(r"<details><summary[^>]*>timeline: [^<]*</summary>(.*?)</details>", page, re.S)
        assert folded is not None, page[:3000]
        rows = re.findall(
            r'title="([^"]*)">[^<]*</span><span style="position:relative[^"]*">(.*?)</span></div>', folded[1]
        )
        assert [label.split(" · ")[0].lstrip("· ") for label, _ in rows] == ["n0", "n1", "n2"]
        tokens = re.findall(r"(\d[\d,]*)\+(\d[\d,]*) tok", html.unescape(re.sub(r"<[^>]+>", "", page)))
        total = sum(int(a.replace(",", "")) + int(b.replace(",", "")) for a, b in tokens[:1])  # the run's header
        assert rows[0][0].startswith(f"n0 · {total:,} tok"), (rows[0][0], tokens[:1])
        for label, marks in rows:
            starts = [float(x) for x in re.findall(r"left:([\d.]+)%", marks)]
            assert marks.count("background:#0969da") >= 2 and "background:#1a7f37" in marks, label  # waits, code
            assert all(0 <= x <= 100 for x in starts)
        child_start = float(re.search(r"left:([\d.]+)%", rows[1][1])[1])
        root_first_code = float(
            re.findall(r"left:([\d.]+)%;width:[\d.]+%;top:1px;height:12px;background:#1a7f37", rows[0][1])[0]
        )
        assert child_start > root_first_code  # the children started inside the root's second block, after its first
        assert re.search(r"model calls in flight \(up to [1-9]\d*\)", folded[1])
        content, messages = execute(kc, f"%rlm export {tmp_path / 'run.ipynb'}")
        assert content["status"] == "ok", shown_text(messages)
    # The export shows it too, as an image: nbconvert's HTML (and JupyterLab, GitHub) keep an attachment's <img>.
    page = _details_in_html(tmp_path / "run.ipynb")
    (encoded,) = re.findall(r'<img[^>]*src="data:image/svg\+xml;base64,([^"]+)"', page)
    picture = base64.b64decode(encoded).decode()
    labels = re.findall(r"<text x=\"0\" y=\"\d+\" fill=\"[^\"]+\">([^<]*)</text>", picture)
    assert [label.split(" · ")[0].lstrip("· ") for label in labels[:3]] == ["n0", "n1", "n2"], labels
    assert labels[0].startswith(f"n0 · {total:,} tok") and picture.count('fill="#1a7f37"') >= 6  # code, 3 nodes


def _batch_policy(messages: list[dict[str, Any]]) -> str:
    """Each question's root asks the sub-model about its context and submits the reply."""
    if messages[0]["role"] != "system":
        return "said " + str(messages[-1]["content"])
    return repl("FINAL(llm_query('say ' + context))")


def _widget_values(messages: list[dict[str, Any]]) -> list[str]:
    """Every HTML value the live widgets were given, in order (their creation and their updates)."""
    values = []
    for msg in messages:
        if msg["msg_type"] in ("comm_open", "comm_msg"):
            value = msg["content"]["data"].get("state", {}).get("value")
            if isinstance(value, str):
                values.append(value)
    return values


def _running_counts(values: list[str]) -> list[int]:
    return [int(n) for value in values for n in re.findall(r">(\d+) running<", value)]


def test_a_batch_shows_live_counts_then_a_static_page_with_each_questions_call_tree():
    """`rlm.batch` and `await rlm.abatch` in a notebook: the live view's header counts questions as they run, and
    the static page that takes its place holds each question's call tree; view=False (or the extension's
    `batch_view` trait off) shows nothing."""
    with ModelServer(_batch_policy, latency_ms=250) as server, kernel() as kc:
        setup = f"from rlm_kernel import RLM\nrlm = RLM(model='openai/policy', api_base={server.url!r})\n"
        setup += "questions = [(f'doc{i}', f'Question {i}?') for i in range(3)]"
        content, messages = execute(kc, setup)
        assert content["status"] == "ok", shown_text(messages)
        for call in ("rlm.batch(questions, concurrency=2)", "await rlm.abatch(questions, concurrency=2)"):
            content, messages = execute(kc, f"results = {call}\nprint([r.status for r in results])")
            assert content["status"] == "ok", shown_text(messages)
            assert shown_text(messages).strip() == "['done', 'done', 'done']"
            (shown,) = [m for m in messages if m["msg_type"] == "display_data"]
            assert WIDGET_MIME in shown["content"]["data"]  # the live view, with the static page as its fallback
            values = _widget_values(messages)
            assert any(">3 queued<" in v for v in values), values[:3]  # before any question started
            assert any(0 < n <= 2 for n in _running_counts(values)), _running_counts(values)  # live, bounded by 2
            opened, closed = comm_counts(messages)
            assert opened > 5 and closed == opened, (opened, closed)
            final = [m for m in messages if m["msg_type"] == "update_display_data"][-1]
            assert final["content"]["transient"]["display_id"] == shown["content"]["transient"]["display_id"]
            data = final["content"]["data"]
            assert WIDGET_MIME not in data
            page = data["text/html"]
            assert ">3 done<" in page and ">0 failed<" in page and "6 model calls" in page
            for i in range(3):  # a row a question, holding its call tree as a local run's
                assert f">done</span> #{i} · Question {i}?" in page and f"said say doc{i}" in page
            assert page.count("<details") >= 6
            assert data["text/plain"].startswith("RLM batch: 3 questions: 0 queued · 0 running · 3 done · 0 failed")
        for cell in ("results = rlm.batch(questions, view=False)", "%config RLMMagics.batch_view = False\n" + call):
            content, messages = execute(kc, cell)
            assert content["status"] == "ok", shown_text(messages)
            assert [m["msg_type"] for m in messages if "display" in m["msg_type"] or "comm" in m["msg_type"]] == []
