"""`rlm trace convert --to reference`: the reference implementation's log lines, field by field."""

from __future__ import annotations

import json

from rlm_kernel import RLM
from rlm_kernel.cli import main
from rlm_kernel.formats.reference import NOT_RECORDED, reference_lines
from rlm_kernel.models.policies import register_policy
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
        assert line["prompt"] == messages  # rebuilt from the first two messages and the deltas
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
