"""`rlm trace convert --to reference`: the reference implementation's log lines, field by field."""

from __future__ import annotations

import json

from rlm_kernel import RLM
from rlm_kernel.cli import main
from rlm_kernel.formats.reference import NOT_RECORDED, reference_lines
from rlm_kernel.models.policies import register_policy
from tests.conftest import SIGINT_SELF
from tests.test_export import CHILD_QUESTION, CONTEXT, QUESTION, depth_two_policy

METADATA_KEYS = {
    "type",
    "timestamp",
    "root_model",
    "max_depth",
    "max_iterations",
    "backend",
    "backend_kwargs",
    "environment_type",
    "environment_kwargs",
    "other_backends",
}
ITERATION_KEYS = {
    "type",
    "iteration",
    "timestamp",
    "prompt",
    "response",
    "code_blocks",
    "final_answer",
    "iteration_time",
}
RESULT_KEYS = {"stdout", "stderr", "locals", "execution_time", "rlm_calls"}


def test_converted_lines_have_the_reference_fields_and_the_prompts_the_model_saw(tmp_path, capsys):
    sent: list[list[dict]] = []  # the message lists the root model received

    def policy(messages):
        if messages[0]["role"] == "system" and QUESTION in messages[1]["content"]:
            sent.append([dict(m) for m in messages])
        return depth_two_policy(messages)

    trace_path = tmp_path / "trace.jsonl"
    result = RLM(model=register_policy(policy), max_depth=2, trace_path=str(trace_path)).completion(CONTEXT, QUESTION)
    assert main(["trace", "convert", str(trace_path), "--to", "reference", str(tmp_path / "reference.jsonl")]) == 0
    assert "3 iteration lines" in capsys.readouterr().out
    lines = [json.loads(line) for line in (tmp_path / "reference.jsonl").read_text(encoding="utf-8").splitlines()]
    assert lines == json.loads(json.dumps(reference_lines(result.trace)))

    metadata, iterations = lines[0], lines[1:]
    assert METADATA_KEYS <= set(metadata) and metadata["type"] == "metadata"
    assert metadata["root_model"] == result.trace.root.model and metadata["max_depth"] == 2
    assert (
        metadata["rlm_kernel"]["query"] == QUESTION
        and metadata["rlm_kernel"]["usage"]["llm_calls"] == result.usage.llm_calls
    )
    assert len(iterations) == len(sent) == 3
    for number, (line, messages) in enumerate(zip(iterations, sent), 1):
        assert set(line) == ITERATION_KEYS and line["type"] == "iteration" and line["iteration"] == number
        # Rebuilt from the first two messages and the deltas; the first user message ends with the line the
        # viewer reads the question from (it shows no user message over 500 characters).
        first_user = messages[1]["content"] + f'\n\n[rlm_kernel] original query: "{QUESTION}"'
        assert line["prompt"] == [messages[0], {**messages[1], "content": first_user}, *messages[2:]]
        assert line["response"] == result.trace.root.iterations[number - 1].reply
        for block in line["code_blocks"]:
            assert set(block) == {"code", "result"} and set(block["result"]) == RESULT_KEYS
    assert [line["final_answer"] for line in iterations] == [None, None, result.answer]

    look, fan_out = iterations[0]["code_blocks"]
    assert look["result"]["stdout"] == f"{len(CONTEXT)} chars\n['L201: line 200: station 3 FAULT coolant']"
    assert look["result"]["stderr"] == "" and look["result"]["locals"] == {"hits": NOT_RECORDED}
    calls = fan_out["result"]["rlm_calls"]
    assert [c["prompt"] for c in calls] == ["note L201: line 200: station 3 FAULT coolant", "extra"]
    assert calls[0]["response"] == "sub:note L201: line 200:" and calls[0]["usage_summary"]["model_usage_summaries"]
    assert calls[0]["prompt_tokens"] > 0 and calls[0]["execution_time"] >= 0

    (failing,) = iterations[1]["code_blocks"]
    assert failing["result"]["stderr"].endswith(
        "ValueError: deliberate: " + result.trace.nodes[result.trace.root.children[0]].answer
    )
    assert "Traceback" not in failing["result"]["stdout"]
    (child,) = failing["result"]["rlm_calls"]
    assert child["prompt"] == CHILD_QUESTION and child["response"] == "SUB:SUMMARISE: L201: LINE 200:"
    child_iterations = child["metadata"]["iterations"]
    assert [i["iteration"] for i in child_iterations] == [1, 2] and child_iterations[-1]["final_answer"] == child[
        "response"
    ]
    assert child_iterations[0]["code_blocks"][0]["result"]["rlm_calls"][0]["prompt"].startswith("summarise: ")
    assert child_iterations[0]["prompt"][1]["content"].startswith(f"Question: {CHILD_QUESTION}")


def _question_as_the_viewer_reads_it(line: dict) -> str | None:
    """The reference viewer's rule (visualizer/src/lib/parse-logs.ts, extractContextQuestion), in Python."""
    import re

    for message in line["prompt"]:
        if message["role"] == "user" and message["content"]:
            found = re.search(r'original query: "([^"]+)"', message["content"])
            if found:
                return found.group(1)
            if 50 < len(message["content"]) < 500:
                return message["content"][:200]
    return None


def test_the_viewer_finds_the_question_even_with_quotes_in_it():
    question = 'Which "station" reported the fault?'
    model = register_policy(lambda messages: "```repl\nFINAL('3')\n```")
    result = RLM(model=model).completion(CONTEXT, question)
    first = reference_lines(result.trace)[1]
    assert _question_as_the_viewer_reads_it(first) == "Which \u201dstation\u201d reported the fault?"


def test_a_child_without_an_answer_converts_to_the_text_the_model_received():
    def policy(messages):
        if "child question" in messages[1]["content"]:
            return "```repl\nraise_nothing = 1\n```"  # never answers: runs out of iterations
        return "```repl\nr = rlm_query('some text', 'child question')\nFINAL(r)\n```"

    result = RLM(model=register_policy(policy), max_depth=2, child_max_iterations=1).completion(CONTEXT, "q")
    received = result.answer
    call = reference_lines(result.trace)[1]["code_blocks"][0]["result"]["rlm_calls"][0]
    assert call["response"] == received and received.startswith("Error: the child RLM stopped (max_iterations)")


def test_the_block_an_interrupt_stopped_stays_in_the_conversion():
    import pytest

    from rlm_kernel.core.errors import RunInterrupted

    code = "x = 1\n" + SIGINT_SELF  # the user's stop arrives while the block runs
    model = register_policy(lambda messages: f"```repl\n{code}\n```")
    with pytest.raises(RunInterrupted) as stopped:
        RLM(model=model).completion(CONTEXT, "q")
    blocks = reference_lines(stopped.value.result.trace)[1]["code_blocks"]
    assert [b["code"] for b in blocks] == [code + "\n"]
    assert blocks[0]["result"]["stderr"] == "interrupted"


def test_trace_convert_writes_every_appended_run_or_the_one_asked_for(tmp_path, capsys):
    trace = tmp_path / "runs.jsonl"
    for answer in ("first", "second", "third"):
        model = register_policy(lambda messages, a=answer: f"```repl\nFINAL('{a}')\n```")
        RLM(model=model, trace_path=str(trace)).completion(CONTEXT, f"question {answer}")
    out = tmp_path / "ref.jsonl"
    assert main(["trace", "convert", str(trace), "--to", "reference", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "holds 3 runs" in printed
    finals = [
        json.loads((tmp_path / f"ref-run{n}.jsonl").read_text().splitlines()[-1])["final_answer"] for n in (1, 2, 3)
    ]
    assert finals == ["first", "second", "third"]
    assert main(["trace", "convert", str(trace), "--to", "reference", str(out), "--run", "2"]) == 0
    assert json.loads(out.read_text().splitlines()[-1])["final_answer"] == "second"
    assert "run 2 of 3" in capsys.readouterr().out
    assert main(["trace", "convert", str(trace), "--to", "reference", str(out), "--run", "4"]) == 2
    assert "holds 3 run(s)" in capsys.readouterr().err
