"""The replay backend and JSONL traces: same answers, outputs and tokens with no model; readable prefixes; flat sizes."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import nbformat
import pytest

from rlm_kernel import RLM
from rlm_kernel.core.errors import ReplayError, TraceError
from rlm_kernel.core.trace import Event, JSONLWriter, Trace
from rlm_kernel.formats.rerun import NodeMap, load_trace, recorded_settings, replay_run
from rlm_kernel.models.policies import register_policy
from rlm_kernel.models.recorded import ReplayBook
from tests.conftest import SIGINT_SELF, repl
from tests.test_export import CONTEXT, QUESTION, WORDS, depth_two_policy, record_depth_two_run, reverse_words_policy


def counting(policy):
    """The policy, and a list that grows by one per call: a replay must leave it alone."""
    calls: list[int] = []

    def counted(messages):
        calls.append(1)
        return policy(messages)

    return counted, calls


def outputs(trace: Trace) -> list[tuple[str, int, int, str, str]]:
    """Every block's code and output, by question and place (node ids may differ between runs).

    Tracebacks name the block's source `<rlm-cell-N>`, N counting blocks run in this process: set aside.
    """
    rows = []
    for node in trace.walk():
        for iteration in node.iterations:
            rows += [
                (node.query, iteration.index, c.index, c.code, re.sub(r"<rlm-cell-\d+>", "<rlm-cell>", c.output))
                for c in iteration.cells
            ]
    return sorted(rows)


def test_replay_gives_the_same_answer_outputs_and_tokens_without_calling_the_model():
    policy, calls = counting(depth_two_policy)
    recorded = RLM(model=register_policy(policy), max_depth=2).completion(CONTEXT, QUESTION)
    made = len(calls)
    replayed = replay_run(recorded.trace, CONTEXT)
    assert len(calls) == made  # every reply came from the recording
    assert replayed.matches and replayed.result.answer == recorded.answer
    assert outputs(replayed.result.trace) == outputs(recorded.trace)
    assert dataclasses.astuple(replayed.result.usage) == dataclasses.astuple(recorded.usage)
    # Wide enough that no question is cut: where the cut falls depends on how many digits the seconds take.
    assert replayed.result.trace.outline(10_000).split("(")[0] == recorded.trace.outline(10_000).split("(")[0]


def test_parallel_children_replay_to_the_same_answers():
    recorded = RLM(model=register_policy(reverse_words_policy), max_depth=2, concurrency=8).completion(
        WORDS, "reverse each word"
    )
    replayed = replay_run(recorded.trace, WORDS)
    assert replayed.matches and replayed.result.answer == "ahpla ateb ammag atled nolispe atez ate ateht"
    assert outputs(replayed.result.trace) == outputs(recorded.trace)


def test_a_model_named_in_code_is_replayed_too():
    sub, sub_calls = counting(lambda messages: "from the other model")
    other = register_policy(sub)
    model = register_policy([repl(f"x = llm_query('hi', model={other!r})\nprint(x)"), repl("FINAL(x)")])
    recorded = RLM(model=model).completion("text", "q")
    assert sub_calls == [1]
    replayed = replay_run(recorded.trace, "text")
    assert replayed.matches and sub_calls == [1]


def test_a_request_the_recording_lacks_fails_clearly():
    recorded = record_depth_two_run()
    book = ReplayBook(recorded.trace.events)
    with pytest.raises(ReplayError, match="replay has no recorded reply for the sub-model prompt 'never asked'"):
        book.reply([{"role": "user", "content": "never asked"}])
    events = [
        e
        for e in recorded.trace.events
        if not (e.kind == "iteration" and e.node_id == recorded.trace.root_id and e.data["index"] == 2)
    ]
    replayed = replay_run(Trace.from_events(events), CONTEXT)
    assert not replayed.matches and replayed.result.status == "error"
    assert "replay has no recorded reply for RLM call 3 of the conversation" in replayed.result.error
    with pytest.raises(ReplayError, match="not the one the recorded run used"):
        replay_run(recorded.trace, CONTEXT + "!")
    with pytest.raises(ReplayError, match="holds no context"):
        replay_run(recorded.trace)


def test_settings_are_read_back_from_the_recorded_run():
    policy = register_policy(depth_two_policy)
    settings = dict(
        model=policy,
        sub_model=policy,
        max_depth=3,
        max_iterations=7,
        child_max_iterations=4,
        max_output_tokens=2048,
        max_llm_calls=40,
        max_tokens=90_000,
        max_cost_usd=0.75,
        max_output_chars=5_000,
        concurrency=4,
        cell_timeout=2.5,
    )
    recorded = RLM(**settings).completion(CONTEXT, QUESTION)
    assert recorded_settings(recorded.trace) == settings
    assert replay_run(recorded.trace, CONTEXT).matches

    # A trace of schema 1 recorded no settings: they are read back from its system prompt, when it reads back.
    def as_schema_1(events, edit=lambda prompt: prompt):
        old = []
        for e in events:
            d = {k: v for k, v in e.data.items() if k not in ("schema", "settings", "max_iterations")}
            if e.kind == "call_start":
                d["system_prompt"] = edit(d["system_prompt"])
            old.append(dataclasses.replace(e, data=d))
        return old

    from_prompt = recorded_settings(Trace.from_events(as_schema_1(recorded.trace.events)))
    assert from_prompt == {k: v for k, v in settings.items() if k != "max_output_tokens"}  # prompts never said it
    doctored = as_schema_1(recorded.trace.events, lambda prompt: prompt.replace("persistent", "lasting"))
    with pytest.raises(ReplayError, match="does not record its run's settings"):
        recorded_settings(Trace.from_events(doctored))


def test_a_trace_written_with_its_context_replays_on_its_own(tmp_path):
    path = tmp_path / "trace.jsonl"
    writer = JSONLWriter(path, context=CONTEXT)
    recorded = record_depth_two_run(on_event=writer)
    writer.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["kind"] for line in lines[:2]] == ["call_start", "context"]
    assert sum(json.dumps(CONTEXT)[1:-1] in line for line in lines) == 1  # written once
    replayed = replay_run(path)
    assert replayed.matches and replayed.result.answer == recorded.answer
    exported = recorded.to_notebook(tmp_path / "run.ipynb", CONTEXT).path
    assert replay_run(exported).matches and load_trace(exported).root.query == QUESTION


def test_a_context_holding_a_secret_is_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVICE_API_KEY", "sk-very-secret-value-123")
    path = tmp_path / "trace.jsonl"
    context = "config: sk-very-secret-value-123"
    writer = JSONLWriter(path, context=context)
    RLM(model=register_policy([repl("FINAL(len(context))")]), on_event=writer).completion(context, "q")
    writer.close()
    assert "sk-very-secret-value-123" not in path.read_text(encoding="utf-8")
    trace = Trace.from_jsonl(path)
    assert trace.contexts[trace.root_id] == {
        "sha256": trace.root.context["sha256"],
        "omitted": "it contains a secret (an API key or token)",
    }


def test_an_interrupted_run_leaves_a_readable_prefix(tmp_path):
    path = tmp_path / "trace.jsonl"
    model = register_policy([repl("x = llm_query('one')\nprint(x)"), repl(SIGINT_SELF)])
    with pytest.raises(KeyboardInterrupt):
        RLM(model=model, sub_model=register_policy(["one back"]), trace_path=str(path)).completion("text", "q")
    trace = Trace.from_jsonl(path)
    assert trace.root.status == "interrupted" and len(trace.root.iterations) == 2 and trace.root.subcalls[0].done
    # A writer killed in the middle of a line leaves a torn last line: it is left out.
    whole = path.read_text(encoding="utf-8")
    path.write_text(whole + '{"kind": "iteration", "node_id": "n0", "da', encoding="utf-8")
    assert len(Trace.from_jsonl(path).events) == len(trace.events)
    path.write_text('{"kind": "call_sta\n' + whole, encoding="utf-8")  # damage elsewhere is an error
    with pytest.raises(TraceError, match="not JSON"):
        Trace.from_jsonl(path)


def test_a_file_that_several_runs_appended_to_reads_as_the_last_run(tmp_path):
    path = tmp_path / "trace.jsonl"
    for answer in ("first", "second"):
        RLM(model=register_policy([repl(f"FINAL({answer!r})")]), trace_path=str(path)).completion("text", answer)
    trace = Trace.from_jsonl(path)
    assert trace.root.query == "second" and trace.root.answer == "second"
    assert [e.kind for e in trace.events] == ["call_start", "model_wait", "iteration", "code_result", "call_end"]


def trace_size(tmp_path, n_chars: int) -> int:
    step = "Look again.\n```repl\nprint(len(context))\nprint(peek(0, 200))\n```"
    model = register_policy([step] * 19 + [repl("FINAL('ok')")])
    path = tmp_path / f"trace-{n_chars}.jsonl"
    line = "2026-11-21 station log: pressure nominal, coolant nominal.\n"
    context = (line * (n_chars // len(line) + 1))[:n_chars]
    result = RLM(model=model, max_iterations=20, trace_path=str(path)).completion(context, "Is all nominal?")
    assert len(result.trace.root.iterations) == 20
    return path.stat().st_size


def test_trace_size_does_not_grow_with_the_context(tmp_path):
    small, large = trace_size(tmp_path, 1_000), trace_size(tmp_path, 20_000_000)
    assert abs(large - small) / small < 0.05, (small, large)
    assert large < 100_000


def test_event_json_round_trips():
    event = Event(
        "iteration", "n0", None, {"reply": "é ✓", "usage": {"input_tokens": 1}, "nested": [1, {"a": None}]}, time=12.5
    )
    assert Event.from_json(event.to_json()) == event
    assert json.loads(event.to_json())["kind"] == "iteration"


def test_an_export_carries_nothing_but_the_trace_and_the_context(tmp_path):
    recorded = record_depth_two_run()
    nb = nbformat.read(recorded.to_notebook(tmp_path / "run.ipynb", CONTEXT).path, as_version=4)
    carried = load_trace(tmp_path / "run.ipynb")
    assert [e.to_json() for e in carried.events if e.kind != "context"] == [e.to_json() for e in recorded.trace.events]
    assert nb.metadata.rlm.root == recorded.trace.root_id


def test_replayed_children_are_matched_to_recorded_ones_by_question_not_by_id():
    def policy(messages):
        if "Question: part" in messages[1]["content"]:
            return repl("FINAL(context)")
        if len(messages) == 2:
            return repl("answers = rlm_query_batched([(w, f'part {i}') for i, w in enumerate(context.split())])")
        return repl("FINAL(answers)")

    recorded = RLM(model=register_policy(policy), max_depth=2).completion("alpha beta gamma", "q").trace
    starts = [e for e in recorded.events if e.kind == "call_start"]
    # The children start in another order and get other ids: n7, n8, n9 for the third, first and second.
    renamed = {starts[3].node_id: "n7", starts[1].node_id: "n8", starts[2].node_id: "n9"}
    nodes = NodeMap(recorded)
    assert nodes.recorded_id(starts[0]) == recorded.root_id
    for start in (starts[3], starts[1], starts[2]):
        replayed = dataclasses.replace(start, node_id=renamed[start.node_id])
        assert nodes.recorded_id(replayed) == start.node_id
    unknown = dataclasses.replace(starts[1], node_id="n10", data={**starts[1].data, "query": "never asked"})
    assert nodes.recorded_id(unknown) is None


def test_traces_and_exports_of_earlier_versions_still_load_and_replay():
    """Files written before events carried settings and blocks (schema 1, recorded with commit 4842cdc), and an
    export of schema 2 written before its replay data moved to the notebook's metadata (commit 3fb736e)."""
    fixtures = Path(__file__).parent / "fixtures"
    for path in (
        fixtures / "trace_schema1.jsonl",
        fixtures / "export_schema1.ipynb",
        fixtures / "export_schema2.ipynb",
    ):
        trace = load_trace(path)
        assert recorded_settings(trace)["max_depth"] == 2
        linked = [s for node in trace.walk() for s in node.subcalls]
        assert linked and all(s.iteration is not None and s.block is not None for s in linked)
        replayed = replay_run(trace)  # the context travels in the file
        assert replayed.matches, path
        assert replayed.result.answer == trace.root.answer
