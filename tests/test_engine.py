"""The RLM loop end to end through litellm's scripted provider: protocols, recursion, errors, traces."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from rlm_kernel import RLM
from rlm_kernel.core import RunInterrupted, Trace
from rlm_kernel.core.context import ContextError
from tests.conftest import SIGINT_SELF, question_of, repl

DOC = "alpha line\n" * 50 + "The secret code is 4242.\n" + "omega line\n" * 50


def test_final_keeps_the_python_value(scripted):
    model = scripted([repl("hits = grep('secret')\nprint(hits)"), repl("FINAL({'code': 4242, 'hits': len(hits)})")])
    result = RLM(model=model).completion(DOC, "What is the secret code?")
    assert result.status == "done"
    assert result.answer == {"code": 4242, "hits": 1}
    assert result.usage.llm_calls == 2


def test_final_var_submits_a_variable(scripted):
    model = scripted([repl("import re\ncode = int(re.search(r'code is (\\d+)', context).group(1))\nFINAL_VAR('code')")])
    assert RLM(model=model).completion(DOC, "code?").answer == 4242


def test_final_var_on_a_missing_variable_lets_the_model_retry(scripted):
    model = scripted([repl("FINAL_VAR('nope')"), repl("FINAL('ok')")])
    result = RLM(model=model).completion(DOC, "q")
    assert result.answer == "ok"
    first = result.trace.root.iterations[0].cells[0]
    assert "no variable named 'nope'" in first.error


def test_answer_dict_protocol_stops_at_ready(scripted):
    code = "answer['content'] = [1, 2]\nanswer['ready'] = True\nprint('never printed')"
    model = scripted([repl(code)])
    result = RLM(model=model).completion(DOC, "q")
    assert result.answer == [1, 2]
    assert "never printed" not in result.trace.root.iterations[0].cells[0].output


def test_answer_dict_rebound_to_a_plain_dict_still_submits(scripted):
    model = scripted([repl("answer = {'content': 'rebound', 'ready': True}")])
    assert RLM(model=model).completion(DOC, "q").answer == "rebound"


def test_execution_stops_at_the_first_submitting_block(scripted):
    reply = repl("FINAL('first')") + "```python\nFINAL('second')\n```\n"
    result = RLM(model=scripted([reply])).completion(DOC, "q")
    assert result.answer == "first"
    assert len(result.trace.root.iterations[0].cells) == 1


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("I am sure now.\nFINAL(The code is 4242 (four-two-four-two))", "The code is 4242 (four-two-four-two)"),
        ('FINAL("quoted answer")', "quoted answer"),
        ("FINAL(unbalanced answer", "unbalanced answer"),
    ],
)
def test_paper_era_text_final(scripted, reply, expected):
    assert RLM(model=scripted([reply])).completion(DOC, "q").answer == expected


def test_text_final_var_after_code_ran(scripted):
    reply = repl("result = context.count('alpha')") + "\nFINAL_VAR(result)\n"
    assert RLM(model=scripted([reply])).completion(DOC, "q").answer == 50


def test_text_final_is_ignored_when_the_code_failed(scripted):
    reply = repl("1/0") + "\nFINAL(made up)\n"
    result = RLM(model=scripted([reply, repl("FINAL('after seeing the error')")])).completion(DOC, "q")
    assert result.answer == "after seeing the error"


def test_root_prompt_holds_metadata_not_the_context(scripted):
    seen: list[list[dict[str, Any]]] = []

    def policy(messages):
        seen.append(messages)
        return repl("FINAL(len(context))")

    secret_tail = "ZZ-UNSEEN-TAIL-ZZ"
    context = "x" * 200_000 + secret_tail
    result = RLM(model=scripted(policy)).completion(context, "How long is it?")
    assert result.answer == 200_000 + len(secret_tail)
    sent = json.dumps(seen)
    assert secret_tail not in sent
    assert "200,017" in sent  # the true length is in the metadata
    assert len(sent) < 20_000


def test_code_error_keeps_earlier_assignments_and_shows_a_plain_traceback(scripted):
    model = scripted([repl("kept = 41\nboom = 1/0"), repl("FINAL(kept + 1)")])
    result = RLM(model=model).completion(DOC, "q")
    assert result.answer == 42
    cell = result.trace.root.iterations[0].cells[0]
    assert "ZeroDivisionError" in cell.error and "boom = 1/0" in cell.error
    assert "\x1b[" not in cell.error
    assert "engine.py" not in cell.error


def test_silent_code_gets_a_no_output_note_and_trailing_values_are_shown(scripted):
    seen: list[str] = []

    def policy(messages):
        if len(messages) > 2:
            seen.append(messages[-1]["content"])
        return [repl("x = 1"), repl("x + 41"), repl("FINAL(x)")][len(seen)]

    RLM(model=scripted(policy)).completion(DOC, "q")
    assert seen[0].startswith("(no output: print what you need)")
    assert seen[1].startswith("42")


def test_megabytes_of_output_are_cut_to_head_and_tail_with_the_true_length(scripted):
    seen: list[str] = []

    def policy(messages):
        if len(messages) > 2:
            seen.append(messages[-1]["content"])
            return repl("FINAL('done')")
        return repl("print('H' + 'x' * 3_000_000 + 'T')")

    RLM(model=scripted(policy), max_output_chars=2_000).completion(DOC, "q")
    observation = seen[0]
    assert len(observation) < 3_000
    assert observation.startswith("Hxx") and "T\n" in observation
    assert "of 3,000,003 chars omitted" in observation  # H, 3M x, T and the newline


def test_reserved_names_are_restored_after_each_block(scripted):
    model = scripted(
        [repl("llm_query = None\ncontext = 'overwritten'"), repl("FINAL((callable(llm_query), len(context)))")]
    )
    assert RLM(model=model).completion(DOC, "q").answer == (True, len(DOC))


def test_reply_without_code_is_told_to_write_code(scripted):
    seen: list[str] = []

    def policy(messages):
        if len(messages) > 2:
            seen.append(messages[-1]["content"])
            return repl("FINAL(1)")
        return "I think the answer is probably 7."

    RLM(model=scripted(policy)).completion(DOC, "q")
    assert "no ```repl code block" in seen[0]


def test_fabricated_output_is_cut_from_the_reply_and_history(scripted):
    history: list[list[dict[str, Any]]] = []

    def policy(messages):
        history.append(messages)
        if len(messages) > 2:
            return repl("FINAL('real')")
        return repl("print(2 + 2)") + "REPL output:\n5\nFINAL(5)\n"

    result = RLM(model=scripted(policy)).completion(DOC, "q")
    assert result.answer == "real"
    assistant = history[1][2]["content"]
    assert "REPL output" not in assistant and "FINAL(5)" not in assistant
    assert history[1][3]["content"].startswith("4")


def test_unclosed_final_fence_runs(scripted):
    result = RLM(model=scripted(["Let me finish.\n```repl\nFINAL('unclosed')"])).completion(DOC, "q")
    assert result.answer == "unclosed"


def test_out_of_iterations_asks_once_more_and_says_so(scripted):
    replies = [repl("print(1)")] * 3 + ["FINAL(best guess)"]
    result = RLM(model=scripted(replies), max_iterations=3).completion(DOC, "q")
    assert result.status == "max_iterations"
    assert result.answer == "best guess"
    assert "max_iterations=3" in result.error
    assert result.usage.llm_calls == 4


def test_out_of_iterations_prefers_a_partial_answer_content(scripted):
    result = RLM(model=scripted([repl("answer['content'] = 'partial'")] * 2), max_iterations=2).completion(DOC, "q")
    assert (result.status, result.answer, result.usage.llm_calls) == ("max_iterations", "partial", 2)


def _depth_policy(messages):
    """Root and children: recurse while rlm_query really starts children, then answer."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    if not system:
        return "leaf:" + messages[-1]["content"].split("\n", 1)[0]
    question = question_of(messages)
    if len(messages) > 2:
        return repl("FINAL(got)")
    if "start a child RLM" in system:
        return repl(
            "me = 'ns-' + " + repr(question) + "\n"
            "got = rlm_query(context[:len(context)//2], 'sub of ' + " + repr(question) + ")\n"
            "print(got)"
        )
    return repl(f"got = 'bottom:{question}:' + str(len(context)) + ':' + str('me' in dir())\nprint(got)")


def test_recursion_to_depth_two_with_separate_namespaces_and_questions(scripted):
    rlm = RLM(model=scripted(_depth_policy), max_depth=3)
    result = rlm.completion("abcdefgh" * 100, "top")
    assert result.status == "done"
    assert result.answer == "bottom:sub of sub of top:200:False"
    nodes = list(result.trace.walk())
    assert [(n.depth, n.query) for n in nodes] == [(0, "top"), (1, "sub of top"), (2, "sub of sub of top")]
    assert [n.context["length"] for n in nodes] == [800, 400, 200]
    assert all(n.status == "done" for n in nodes)
    assert nodes[1].parent_id == nodes[0].id and nodes[2].parent_id == nodes[1].id


def test_rlm_query_at_the_depth_limit_degrades_to_llm_query(scripted):
    result = RLM(model=scripted(_depth_policy), max_depth=1).completion("abcd" * 10, "top")
    assert len(result.trace.nodes) == 1
    assert result.answer.startswith("bottom:top")
    model = scripted([repl("FINAL(rlm_query('ctx', 'q?'))")])
    sub = scripted(lambda messages: "plain:" + messages[-1]["content"])
    result = RLM(model=model, sub_model=sub).completion("abcd", "top")
    assert result.answer == "plain:q?\n\nctx"
    assert result.trace.root.subcalls[0].kind == "llm"


def test_batched_children_capture_their_own_output(scripted):
    def policy(messages):
        question = question_of(messages)
        if question == "root":
            if len(messages) > 2:
                return repl("FINAL(outs)")
            return repl("outs = rlm_query_batched([(str(i) * 10, f'child {i}') for i in range(6)])")
        if len(messages) > 2:
            return repl("FINAL(context[0])")
        return repl("import time\nfor k in range(20):\n    print(context[0] * 3, k)\n    time.sleep(0.001)")

    result = RLM(model=scripted(policy), max_depth=2, concurrency=6).completion("root context", "root")
    assert result.answer == [str(i) for i in range(6)]
    children = [n for n in result.trace.walk() if n.depth == 1]
    assert len(children) == 6
    for node in children:
        digit = node.query.split()[-1]
        printed = node.iterations[0].cells[0].output.splitlines()
        assert printed == [f"{digit * 3} {k}" for k in range(20)]


def test_children_given_the_context_share_the_roots_object_and_cannot_change_it(scripted):
    records = [{"id": i, "text": f"record {i}"} for i in range(50)]

    def policy(messages):
        if question_of(messages) == "root":
            return repl(
                "kids = rlm_query_batched([(context, 'child')] * 3)\n"
                "FINAL({'ids': [id(context)] + [kid[0] for kid in kids], 'tried': [kid[1] for kid in kids], "
                "'first': context[0]['text']})"
            )
        return repl(
            "try:\n    context[0]['text'] = 'changed by a child'\n    tried = 'changed'\n"
            "except TypeError:\n    tried = 'refused'\n"
            "FINAL([id(context), tried])"
        )

    result = RLM(model=scripted(policy), max_depth=2, concurrency=3).completion(records, "root")
    assert result.status == "done", result.error
    assert len(set(result.answer["ids"])) == 1  # one object for the root and its three children: no copies
    assert result.answer["tried"] == ["refused"] * 3
    assert result.answer["first"] == "record 0" and records[0]["text"] == "record 0"


def test_llm_query_batched_keeps_order_and_failed_slots_hold_their_error(scripted):
    def sub(messages):
        prompt = messages[-1]["content"]
        if prompt == "bad":
            raise RuntimeError("policy exploded")
        return prompt.upper()

    model = scripted([repl("FINAL(llm_query_batched(['a', 'bad', 'c']))")])
    result = RLM(model=model, sub_model=scripted(sub), retries=0).completion(DOC, "q")
    assert result.answer[0] == "A" and result.answer[2] == "C"
    assert result.answer[1].startswith("Error: sub-model call failed") and "policy exploded" in result.answer[1]


def test_children_cannot_spend_past_the_tree_budget(scripted):
    def policy(messages):
        if messages[0]["role"] != "system":
            return "sub reply"
        if messages[1]["content"].startswith("Question: root"):
            if len(messages) > 2:
                return repl("FINAL('root done')")
            return repl("outs = rlm_query_batched([('ctx', f'child {i}') for i in range(5)])\nprint(outs)")
        return repl("print(llm_query_batched(['x'] * 5))")  # children never submit: they loop

    result = RLM(model=scripted(policy), max_depth=2, max_llm_calls=12).completion(DOC, "root")
    assert result.usage.llm_calls == 12
    assert result.status == "budget" and result.limit == "max_llm_calls"
    statuses = {n.status for n in result.trace.walk() if n.depth == 1}
    assert statuses <= {"budget", "done", "max_iterations"}
    replies = [s.reply or "" for n in result.trace.walk() for s in n.subcalls if s.kind == "llm"]
    assert any("budget exhausted" in r and "submit" in r for r in replies)


def test_token_budget_is_never_exceeded(scripted):
    model = scripted(lambda messages: repl("print(llm_query('hello ' * 50))"))
    result = RLM(model=model, max_tokens=5_000, max_iterations=50).completion(DOC, "q")
    assert result.status == "budget" and result.limit == "max_tokens"
    assert result.usage.input_tokens + result.usage.output_tokens <= 5_000


def test_failing_provider_fails_the_run_with_a_clear_message_and_partial_trace(scripted):
    calls = []

    def policy(messages):
        calls.append(1)
        if len(calls) == 1:
            return repl("answer['content'] = 'partial'\nprint('step one')")
        raise RuntimeError("provider down")

    result = RLM(model=scripted(policy), retries=2, retry_backoff=0.01).completion(DOC, "q")
    assert result.status == "error"
    assert "provider down" in result.error and "model call failed" in result.error
    assert result.answer == "partial"
    assert len(result.trace.root.iterations) == 1
    assert result.trace.root.status == "error"


def test_interrupt_inside_model_code_keeps_the_partial_trace(scripted):
    model = scripted([repl("x = 1\nprint('before')"), repl(SIGINT_SELF)])
    with pytest.raises(RunInterrupted) as caught:
        RLM(model=model).completion(DOC, "q")
    partial = caught.value.result
    assert partial.status == "interrupted"
    assert partial.trace.root.status == "interrupted"
    assert partial.trace.root.iterations[0].cells[0].output == "before"
    assert isinstance(caught.value, KeyboardInterrupt)


def test_cell_timeout_stops_a_loop_and_the_run_goes_on(scripted):
    model = scripted([repl("n = 0\nwhile True:\n    n += 1"), repl("FINAL(n > 0)")])
    result = RLM(model=model, cell_timeout=0.3).completion(DOC, "q")
    assert result.answer is True
    assert "cell_timeout" in result.trace.root.iterations[0].cells[0].error


def test_cell_timeout_stops_a_loop_in_a_child_thread(scripted):
    results: list[Any] = []
    model = scripted([repl("n = 0\nwhile True:\n    n += 1"), repl("FINAL('stopped')")])
    thread = threading.Thread(target=lambda: results.append(RLM(model=model, cell_timeout=0.3).completion(DOC, "q")))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert results[0].answer == "stopped"


def test_trace_events_round_trip_through_jsonl(scripted, tmp_path):
    path = tmp_path / "trace.jsonl"
    events = []
    model = scripted([repl("v = llm_query('hi')\nprint(v)"), repl("FINAL(v)")])
    sub = scripted(lambda m: "hello back")
    result = RLM(model=model, sub_model=sub, trace_path=str(path), on_event=events.append).completion(DOC, "q")
    kinds = [e.kind for e in events]
    assert kinds == [
        "call_start",
        "model_wait",
        "iteration",
        "subcall_start",
        "model_wait",
        "subcall_end",
        "code_result",
        "model_wait",
        "iteration",
        "code_result",
        "call_end",
    ]
    waits = [e.data for e in events if e.kind == "model_wait" and "subcall_id" not in e.data]
    assert waits == [{"iteration": i, "model": model, "attempt": 0} for i in (0, 1)]
    (sent,) = [e.data for e in events if e.kind == "model_wait" and "subcall_id" in e.data]  # the sub-call's request
    assert sent == {"subcall_id": events[3].data["subcall_id"], "model": sub, "attempt": 0}
    assert all(e.node_id == result.trace.root_id for e in events)
    reloaded = Trace.from_jsonl(path)
    assert reloaded.outline() == result.trace.outline()
    assert reloaded.root.subcalls[0].reply == "hello back"
    text = path.read_text()
    assert DOC not in text and text.count(result.trace.root.context["sha256"]) == 1


def test_bad_contexts_are_refused_before_any_model_call(scripted):
    model = scripted(["never used"])
    for bad in ["", b"bytes", None, 3.5]:
        with pytest.raises(ContextError):
            RLM(model=model).completion(bad, "q")


def test_acompletion(scripted):
    import asyncio

    model = scripted([repl("FINAL(len(context))")])
    assert asyncio.run(RLM(model=model).acompletion("abc", "q")).answer == 3


def test_approve_runs_only_confirmed_blocks(scripted):
    asked = []

    def approver(code, node_id, depth):
        asked.append((code, node_id, depth))
        return "dangerous" not in code

    model = scripted([repl("dangerous = 1"), repl("safe = 2\nFINAL(safe)")])
    result = RLM(model=model, approve=approver).completion(DOC, "q")
    assert result.answer == 2
    assert [a[1:] for a in asked] == [("n0", 0), ("n0", 0)]
    first = result.trace.root.iterations[0].cells[0]
    assert "declined" in first.output and first.created == []


def test_approve_true_without_a_terminal_refuses_before_any_call(scripted, monkeypatch):
    import io

    from rlm_kernel.core.approve import ApprovalUnavailable

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(ApprovalUnavailable, match="interactive terminal"):
        RLM(model=scripted(["never asked"]), approve=True).completion(DOC, "q")


def test_an_interrupt_stops_a_child_waiting_for_approval(scripted):
    """The interrupt lands in the main thread; the child asking from its own thread is stopped too."""
    import _thread
    import threading
    import time

    from rlm_kernel.core import RunInterrupted

    waiting = threading.Event()
    left: list[str] = []

    def approver(code, node_id, depth):
        if depth == 0:
            return True
        waiting.set()
        try:
            while True:  # a frontend's input box that nobody answers (ipykernel polls like this)
                time.sleep(0.01)
        finally:
            left.append(node_id)

    root = scripted([repl("print(rlm_query_batched([('abc', 'child'), ('def', 'child')]))")])
    child = scripted([repl("FINAL('never')")])
    # No time limit on the wait: on a loaded machine the child can take more than seconds to ask.
    threading.Thread(target=lambda: waiting.wait() and _thread.interrupt_main(), daemon=True).start()
    with pytest.raises(RunInterrupted) as caught:
        RLM(model=root, sub_model=child, max_depth=2, approve=approver).completion(DOC, "q")
    deadline = time.monotonic() + 2
    while not left and time.monotonic() < deadline:
        time.sleep(0.01)
    assert left, "the child's approval wait was left running"
    assert caught.value.result.status == "interrupted"


def test_isolation_limits_are_checked_up_front(scripted):
    with pytest.raises(ValueError, match="unknown isolation limits"):
        RLM(model=scripted(["x"]), isolation="kernel", isolation_limits={"memory_mb": 1})
