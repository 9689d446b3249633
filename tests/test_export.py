"""Notebook export: the layout, nbformat validity, the offline re-run under nbclient, and every way in."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import nbformat
import pytest
from IPython.core.error import UsageError
from nbclient import NotebookClient

from rlm_kernel import RLM, RLMResult
from rlm_kernel.cli import main
from rlm_kernel.core.trace import JSONLWriter
from rlm_kernel.formats import notebook as export
from rlm_kernel.formats.notebook import cell_outputs, read_export
from rlm_kernel.jupyter.replay import ReplayedError, show_outputs
from rlm_kernel.models.policies import register_policy
from tests.conftest import repl, run
from tests.test_secrets import FAKE_ARG_KEY, FAKE_ENV_KEY, FAKE_TOKEN

QUESTION = "Which station reported the fault?"
CHILD_QUESTION = "What does this part say?"
CONTEXT = "\n".join(f"line {i}: station {i % 7} ok" for i in range(200)) + "\nline 200: station 3 FAULT coolant\n"
FIRST_REPLY = (
    "I will look first.\n```repl\nprint(len(context), 'chars')\nhits = grep('FAULT')\nhits\n```\n"
    "```repl\nimport sys\nprint('checking', file=sys.stderr)\nnotes = llm_query_batched(['note ' + h for h in hits] + ['extra'])\nprint(notes)\n```\n"
)


def depth_two_policy(messages: list[dict[str, Any]]) -> str:
    """Root: look (two blocks, sub-calls), start a child in a block that fails, submit. Child: one sub-call, submit."""
    if messages[0]["role"] != "system":
        return "sub:" + " ".join(messages[-1]["content"].split()[:4])
    turn = sum(m["role"] == "assistant" for m in messages)
    if f"Question: {CHILD_QUESTION}" in messages[1]["content"]:
        return [
            repl("part = llm_query('summarise: ' + context)\nprint(part)", "Child looks."),
            repl("FINAL(part.upper())"),
        ][turn]
    return [
        FIRST_REPLY,
        repl(
            f"detail = rlm_query(hits[0], {CHILD_QUESTION!r})\nprint(detail)\nraise ValueError('deliberate: ' + detail)",
            "Ask a child.",
        ),
        repl("FINAL(detail + ' / ' + str(len(notes)))", "Done."),
    ][turn]


def record_depth_two_run(**kwargs: Any) -> RLMResult:
    result = RLM(model=register_policy(depth_two_policy), max_depth=2, **kwargs).completion(CONTEXT, QUESTION)
    assert result.status == "done", result.error
    return result


@pytest.fixture(scope="module")
def recorded() -> RLMResult:
    return record_depth_two_run()


def generated(nb) -> list[Any]:
    return [c for c in nb.cells if "rlm-generated" in c.metadata.get("tags", [])]


def comparable(outputs: list[Any]) -> list[dict[str, Any]]:
    """Outputs as recorded vs as replayed: streams of one name joined, counts and traceback file numbers set aside."""
    merged: list[dict[str, Any]] = []
    for output in outputs:
        output = {k: v for k, v in dict(output).items() if k not in ("execution_count", "metadata")}
        if output.get("traceback"):
            output["traceback"] = [re.sub(r"<rlm-cell-\d+>", "<rlm-cell>", line) for line in output["traceback"]]
        if merged and output["output_type"] == "stream" and merged[-1].get("name") == output.get("name"):
            merged[-1]["text"] += output["text"]
        else:
            merged.append(output)
    return merged


def test_export_is_a_valid_notebook_laid_out_as_the_run(recorded, tmp_path):
    exported = recorded.to_notebook(tmp_path / "run.ipynb", CONTEXT)
    assert exported.rerunnable and exported.context == "embedded"
    nb = nbformat.read(exported.path, as_version=4)
    nbformat.validate(nb)
    trace = recorded.trace
    root = trace.root
    child = trace.nodes[root.children[0]]
    cells = nb.cells
    assert (cells[0].cell_type, cells[0].source) == ("code", "%load_ext rlm_kernel")
    header = cells[1].source
    assert cells[1].cell_type == "markdown" and header.startswith(f"# RLM run: {QUESTION}")
    for needle in (
        f"root `{root.model}`",
        "| status | done |",
        f"{recorded.usage.llm_calls} model calls",
        "| cost | $0.0000 |",
        "embedded",
    ):
        assert needle in header
    assert cells[2].metadata.jupyter.source_hidden and cells[2].metadata.tags == ["rlm-replay"]
    # The setup cell is one readable line; the replay data is in the notebook's metadata, stored once.
    (payload_id,) = nb.metadata.rlm_kernel.replay
    assert cells[2].source == f"%rlm_replay {payload_id}" and re.fullmatch(r"[0-9a-f]{16}", payload_id)
    data = nb.metadata.rlm_kernel.replay[payload_id].data
    assert exported.path.read_text(encoding="utf-8").count(data) == 1
    assert nb.metadata.kernelspec.name == "rlm" and nb.metadata.kernelspec.language == "python"

    headings = [c.source.split("\n")[0] for c in cells if c.cell_type == "markdown" and c.source.startswith("##")]
    assert headings == [
        f"## Depth 0 · {root.id}: {QUESTION}",
        f"### Depth 1 · {child.id}: {CHILD_QUESTION}",
        "## Final answer",
    ]
    blocks = [(n, it, cell) for n in trace.walk() for it in n.iterations for cell in it.cells]
    code_cells = generated(nb)
    assert len(code_cells) == len(blocks) == 6
    for cell, (node, iteration, block) in zip(code_cells, blocks):
        assert (
            cell.source
            == f"%%rlm_step {node.id} iteration {iteration.index + 1} block {block.index + 1}\n{block.code.rstrip()}"
        )
        meta = cell.metadata.rlm
        assert (meta.node, meta.parent, meta.depth, meta.iteration, meta.block) == (
            node.id,
            node.parent_id,
            node.depth,
            iteration.index,
            block.index,
        )
        assert meta.model == node.model and meta.usage == iteration.usage.to_dict()
    assert "I will look first." in cells[cells.index(code_cells[0]) - 1].source  # the prose comes before its code

    first, second, failing = code_cells[0], code_cells[1], code_cells[2]
    # stdout and the trailing value apart, as the notebook showed them (the events record them apart)
    assert first.outputs == [
        {"output_type": "stream", "name": "stdout", "text": f"{len(CONTEXT)} chars\n"},
        {
            "output_type": "execute_result",
            "execution_count": None,
            "data": {"text/plain": "['L201: line 200: station 3 FAULT coolant']"},
            "metadata": {},
        },
    ]
    assert [(o.output_type, o.name) for o in second.outputs] == [("stream", "stdout"), ("stream", "stderr")]
    assert second.outputs[1].text == "checking\n"
    assert "raises-exception" in failing.metadata.tags and "raises-exception" not in first.metadata.tags
    assert [o.output_type for o in failing.outputs] == ["stream", "error"]
    error = failing.outputs[1]
    assert (
        error.ename == "ValueError"
        and error.evalue == f"deliberate: {child.answer}"
        and error.traceback[0].startswith("Traceback")
    )

    subcalls = cells[cells.index(second) + 1]
    assert subcalls.cell_type == "markdown" and subcalls.source.startswith("<details><summary>2 sub-model calls")
    assert (
        "<pre>note L201: line 200: station 3 FAULT coolant</pre>" in subcalls.source
        and "<pre>sub:note L201: line 200:</pre>" in subcalls.source
    )
    pointer = cells[cells.index(failing) + 1]
    assert f"child RLM **{child.id}**" in pointer.source and CHILD_QUESTION in pointer.source
    assert cells[-2].source == f"## Final answer\n\n```text\n{recorded.answer}\n```"  # as written, not as Markdown
    assert (cells[-1].source, cells[-1].metadata.tags) == ("%rlm_replay_check", ["rlm-replay"])
    # The replay data is the trace itself, with the context.
    carried = read_export(exported.path)
    assert [e.kind for e in carried.events if e.kind != "context"] == [e.kind for e in trace.events]
    assert carried.contexts[root.id]["value"] == CONTEXT


@pytest.mark.kernel
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kernel, where", [("rlm", "as written"), ("python3", "renamed, moved, beside another export")])
def test_executing_the_export_replays_the_run_offline_with_the_same_outputs(
    recorded, kernel, where, tmp_path, monkeypatch
):
    # Any attempt to reach a network fails: the replay must not need one.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    path = recorded.to_notebook(tmp_path / "run.ipynb", CONTEXT).path
    if where != "as written":  # the setup cell finds its data by id, not by the file's name
        folder = tmp_path / "shared reports"
        folder.mkdir()
        path = path.rename(folder / "station report (copy).ipynb")
        recorded.to_notebook(folder / "another.ipynb", with_context=False)  # read first, another id
    nb = nbformat.read(path, as_version=4)
    executed = copy.deepcopy(nb)
    NotebookClient(
        executed, kernel_name=kernel, timeout=120, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    for before, after in zip(generated(nb), generated(executed)):
        assert comparable(after.outputs) == comparable(before.outputs), before.source
    assert any(o.output_type == "error" for c in generated(executed) for o in c.outputs)
    check = executed.cells[-1].outputs
    assert "same answer" in check[0].data["text/plain"]
    assert check[-1].output_type == "execute_result" and check[-1].data["text/plain"] == recorded.answer


@pytest.mark.kernel
def test_an_export_run_away_from_its_file_says_in_one_line_how_to_find_it(recorded, tmp_path):
    nb = nbformat.read(recorded.to_notebook(tmp_path / "run.ipynb", CONTEXT).path, as_version=4)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    nb.cells = nb.cells[:3]  # %load_ext, the header, the setup cell
    where = {"metadata": {"path": str(elsewhere)}}
    NotebookClient(nb, kernel_name="rlm", timeout=60, allow_errors=True, resources=where).execute()
    setup = nb.cells[2]
    (payload_id,) = nb.metadata.rlm_kernel.replay
    # What the frontend receives: one stderr line, no traceback.
    assert [(o.output_type, o.get("name")) for o in setup.outputs] == [("stream", "stderr")]
    assert setup.outputs[0].text == (
        f"UsageError: The replay data {payload_id} is kept in this notebook's file, and the kernel found no notebook "
        f"holding it in its folder {elsewhere}: run the notebook from its own folder, or name the file with "
        f"%rlm_replay {payload_id} --from PATH.ipynb\n"
    )
    nb.cells[2].source += f" --from {tmp_path / 'run.ipynb'}"
    NotebookClient(nb, kernel_name="rlm", timeout=60, resources=where).execute()
    assert "Replaying n0" in nb.cells[2].outputs[0].data["text/plain"]


def test_stepping_through_an_export_runs_each_root_block_when_its_cell_runs(recorded, ip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a kernel runs in the notebook's folder
    nb = nbformat.read(recorded.to_notebook(tmp_path / "run.ipynb", CONTEXT).path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    steps = generated(nb)
    with pytest.raises(UsageError, match="No replay is running"):
        run(ip, steps[0].source)
    run(ip, code[0].source)
    run(ip, code[1].source)  # the setup cell: the replay waits for the first block's cell
    assert "context" in ip.user_ns and "hits" not in ip.user_ns
    with pytest.raises(
        UsageError, match="waiting for the cell %%rlm_step n0 iteration 1 block 1: run the cells in order"
    ):
        run(ip, steps[1].source)
    with pytest.raises(UsageError, match="not the recorded block"):
        run(ip, steps[0].source + "\nprint('edited')")
    run(ip, steps[0].source)
    assert ip.user_ns["hits"] == ["L201: line 200: station 3 FAULT coolant"] and "notes" not in ip.user_ns
    run(ip, steps[1].source)
    with pytest.raises(ReplayedError, match="deliberate") as failed:  # the recorded error, raised again
        run(ip, steps[2].source)
    assert type(failed.value).__name__ == "ValueError" and failed.value._render_traceback_()[-1].startswith(
        "ValueError: deliberate"
    )
    assert ip.user_ns["detail"] == recorded.trace.nodes[recorded.trace.root.children[0]].answer
    assert "part" not in ip.user_ns  # the child's variables live in its own namespace
    for step in steps[3:]:
        run(ip, step.source)
    assert run(ip, code[-1].source) == recorded.answer
    assert "llm_query" not in ip.user_ns and "context" not in ip.user_ns  # the engine's names are put back
    assert ip.user_ns["rlm_last"].answer == recorded.answer


WORDS = "alpha beta gamma delta epsilon zeta eta theta"


def reverse_words_policy(messages: list[dict[str, Any]]) -> str:
    """Root: one child RLM per word, in parallel; each child prints its word and submits it reversed."""
    if "Question: part" in messages[1]["content"]:
        return repl("print('child sees', context)\nFINAL(context[::-1])")
    if len(messages) == 2:
        return repl(
            "answers = rlm_query_batched([(w, f'part {i}') for i, w in enumerate(context.split())])\nprint(answers)"
        )
    return repl("FINAL(' '.join(answers))")


def test_stepping_through_parallel_children_shows_each_childs_own_outputs(ip, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recorded = RLM(model=register_policy(reverse_words_policy), max_depth=2, concurrency=8).completion(
        WORDS, "reverse each word"
    )
    nb = nbformat.read(recorded.to_notebook(tmp_path / "run.ipynb", WORDS).path, as_version=4)
    run(ip, nb.cells[2].source)
    children = 0
    for step in generated(nb):
        capsys.readouterr()
        run(ip, step.source)
        if step.metadata.rlm.depth == 1:  # children ran in parallel: their ids may differ in the replay
            children += 1
            assert capsys.readouterr().out == step.outputs[0].text
    assert children == 8
    assert run(ip, "%rlm_replay_check") == recorded.answer
    assert ip.magics_manager.registry["RLMMagics"].replay is None  # the check ended the replay


def test_an_export_without_its_context_reads_as_a_report_and_says_how_to_rerun(recorded, ip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exported = recorded.to_notebook(tmp_path / "run.ipynb")
    assert not exported.rerunnable and exported.context.startswith("not available")
    nb = nbformat.read(exported.path, as_version=4)
    nbformat.validate(nb)
    assert "cannot re-run as it is" in nb.cells[1].source and "--context NAME" in nb.cells[1].source
    setup = nb.cells[2].source
    with pytest.raises(UsageError, match="holds no context"):
        run(ip, setup)
    ip.user_ns["station_log"] = CONTEXT
    run(ip, f"{setup} --context station_log")
    for step in generated(nb):
        ip.run_cell(step.source, store_history=False)
    assert run(ip, "%rlm_replay_check") == recorded.answer


def test_context_embedding_rules(recorded, tmp_path, monkeypatch):
    path = tmp_path / "run.ipynb"
    assert recorded.to_notebook(path, CONTEXT, with_context=False).context == "left out, as asked"
    assert "sha256 differs" in recorded.to_notebook(path, CONTEXT + "changed").context
    monkeypatch.setattr(export, "MAX_EMBEDDED_CONTEXT_CHARS", 100)
    assert "over the 100 embedded unless asked" in recorded.to_notebook(path, CONTEXT).context
    assert recorded.to_notebook(path, CONTEXT, with_context=True).rerunnable


def test_rlm_export_and_rlm_replay_magics(ip, tmp_path, capsys):
    ip.user_ns["station_log"] = CONTEXT
    model = register_policy(depth_two_policy)
    trace = tmp_path / "trace.jsonl"
    answer = run(ip, f"%%rlm --context station_log --model {model} --depth 2 --trace {trace}\n{QUESTION}")
    capsys.readouterr()
    run(ip, f"%rlm export {tmp_path / 'run.ipynb'} --run 1")
    assert "context: embedded" in capsys.readouterr().out
    nbformat.validate(nbformat.read(tmp_path / "run.ipynb", as_version=4))
    assert run(ip, f"%rlm replay {tmp_path / 'run.ipynb'}") == answer
    assert "same answer" in capsys.readouterr().out
    assert run(ip, f"%rlm replay {trace} --context station_log") == answer
    assert (
        ip.user_ns["rlm_last"].trace.root.query == QUESTION and len(ip.magics_manager.registry["RLMMagics"].runs) == 3
    )
    assert (
        trace.read_text(encoding="utf-8").count(json.dumps(answer)) == 1
    )  # the answer, recorded once (in the root's call_end)
    forged = tmp_path / "forged.jsonl"
    forged.write_text(trace.read_text(encoding="utf-8").replace(json.dumps(answer), '"forged"'), encoding="utf-8")
    with pytest.raises(
        UsageError, match="ended differently from the recorded run: recorded done with 'forged', replayed done with"
    ):
        run(ip, f"%rlm replay {forged} --context station_log")
    ip.user_ns["station_log"] = "another text"
    run(ip, f"%rlm export {tmp_path / 'later.ipynb'} --run 1")
    assert "sha256 differs" in capsys.readouterr().out  # the variable changed since the run: left out
    with pytest.raises(UsageError, match="not the one the recorded run used"):
        run(ip, f"%rlm replay {trace} --context station_log")


@pytest.mark.parametrize(
    "source, message",
    [
        ("%rlm export", "usage: %rlm export"),
        ("%rlm export notes.txt", "usage: %rlm export"),
        ("%rlm export out.ipynb --run", "--run needs a value"),
        ("%rlm replay", "usage: %rlm replay"),
        ("%rlm replay /no/such/trace.jsonl", "/no/such/trace.jsonl"),
        ("%%rlm_step n0 zero 0\nprint(1)", "usage: %%rlm_step"),
        ("%%rlm_replay\nnot base64 at all", "damaged"),
        ("%rlm_replay", "usage: %rlm_replay ID"),
        ("%rlm_replay 0123abcd extra", "usage: %rlm_replay ID"),
        ("%rlm_replay 0123abcd --from /no/such/run.ipynb", "--from /no/such/run.ipynb: there is no such file"),
        ("%rlm_replay_check", "No replay is running"),
    ],
)
def test_export_and_replay_user_errors_are_usage_errors(ip, source, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        run(ip, source)


def test_rlm_export_command(tmp_path, capsys):
    trace_path, context_path = tmp_path / "trace.jsonl", tmp_path / "log.txt"
    context_path.write_text(CONTEXT, encoding="utf-8")
    result = record_depth_two_run(trace_path=str(trace_path))
    assert main(["export", str(trace_path), str(tmp_path / "run.ipynb"), "--context", str(context_path)]) == 0
    assert "context: embedded" in capsys.readouterr().out
    nb = nbformat.read(tmp_path / "run.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.cells[-2].source.endswith(f"{result.answer}\n```")
    assert main(["export", str(trace_path), str(tmp_path / "bare.ipynb")]) == 0
    assert "context: not available" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "missing.jsonl"), str(tmp_path / "x.ipynb")]) == 2
    assert capsys.readouterr().err.startswith("rlm: error:")


def test_a_context_recorded_in_the_trace_is_embedded(tmp_path, capsys):
    trace_path = tmp_path / "trace.jsonl"
    writer = JSONLWriter(trace_path, context=CONTEXT)
    record_depth_two_run(on_event=writer)
    writer.close()
    assert main(["export", str(trace_path), str(tmp_path / "run.ipynb")]) == 0
    assert "context: embedded" in capsys.readouterr().out


def test_cell_outputs_from_recorded_parts_and_from_the_observation():
    traceback = "Traceback (most recent call last):\n  File \"<rlm-cell-1>\", line 1, in <module>\nKeyError: 'x'"
    parts = {"output": "ignored", "error": traceback, "stdout": "out\n", "stderr": "warn", "value": None}
    assert cell_outputs(parts) == [
        {"output_type": "stream", "name": "stdout", "text": "out\n"},
        {"output_type": "stream", "name": "stderr", "text": "warn\n"},
        {"output_type": "error", "ename": "KeyError", "evalue": "'x'", "traceback": traceback.split("\n")},
    ]
    value = cell_outputs({"output": "", "error": None, "stdout": "", "stderr": "", "value": "42"})
    assert value == [
        {"output_type": "execute_result", "execution_count": None, "data": {"text/plain": "42"}, "metadata": {}}
    ]
    assert show_outputs(value)._repr_mimebundle_() == {"text/plain": "42"}
    observed = cell_outputs({"output": f"partial\n{traceback}", "error": traceback})
    assert [o["output_type"] for o in observed] == ["stream", "error"] and observed[0]["text"] == "partial\n"
    timeout = cell_outputs(
        {
            "output": "TimeoutError: this code ran past cell_timeout=1s",
            "error": "TimeoutError: this code ran past cell_timeout=1s",
        }
    )
    assert timeout == [
        {
            "output_type": "error",
            "ename": "TimeoutError",
            "evalue": "this code ran past cell_timeout=1s",
            "traceback": ["TimeoutError: this code ran past cell_timeout=1s"],
        }
    ]


def test_no_planted_key_reaches_an_export_a_trace_or_a_converted_log(scripted, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_ENV_KEY)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)

    def policy(messages):
        if messages[0]["role"] != "system":
            return "sub saw: " + messages[-1]["content"]
        if len(messages) == 2:
            return repl(
                "import os\nprint(os.environ['OPENAI_API_KEY'], os.environ['HF_TOKEN'])\n"
                f"echo = llm_query('my key is ' + os.environ['OPENAI_API_KEY'] + ' and {FAKE_ARG_KEY}')\n"
                "print(echo)\nraise ValueError(os.environ['HF_TOKEN'])",
                f"My key is {FAKE_ARG_KEY}.",
            )
        return repl("FINAL(echo + ' ' + os.environ['OPENAI_API_KEY'])")

    trace_path = tmp_path / "trace.jsonl"
    with_key = f"notes with a leaked key {FAKE_ENV_KEY} inside"
    for context in (with_key, "clean notes"):
        writer = JSONLWriter(trace_path, context=context)
        result = RLM(model=scripted(policy), api_key=FAKE_ARG_KEY, on_event=writer).completion(context, "q")
        writer.close()
        assert result.status == "done"
        exported = result.to_notebook(tmp_path / "run.ipynb", context)
        assert exported.rerunnable == (context == "clean notes")  # a context holding a secret is never written
        main(["export", str(trace_path), str(tmp_path / "cli.ipynb")])
        main(["trace", "convert", str(trace_path), "--to", "reference", str(tmp_path / "reference.jsonl")])
        written = [p.read_text(encoding="utf-8") for p in tmp_path.iterdir()]
        payloads = [read_export(p) for p in tmp_path.glob("*.ipynb")]
        written += [json.dumps([e.data for e in trace.events]) for trace in payloads]
        for text in written:
            for secret in (FAKE_ENV_KEY, FAKE_TOKEN, FAKE_ARG_KEY):
                assert secret not in text
        assert all("[redacted]" in text for text in written)
        trace_path.unlink()


def _session_policy(messages):
    asked = str(messages[1]["content"])
    if "Question: and one more?" in asked:
        return repl("FINAL(found + 1)")  # uses what the first question made
    return repl("found = 41\nFINAL(found)")


@pytest.mark.kernel
@pytest.mark.timeout(300)
def test_the_export_of_a_follow_up_replays_its_sessions_earlier_questions_first(ip, tmp_path, capsys):
    ip.user_ns["doc"] = "ctx"
    model = register_policy(_session_policy)
    assert run(ip, f"%%rlm --context doc --model {model} --new\nhow many?") == 41
    run(ip, f"%%rlm --context doc --model {model}\nand one more?")
    assert ip.user_ns["rlm_last"].answer == 42
    path = tmp_path / "follow-up.ipynb"
    run(ip, f"%rlm export {path}")
    assert "context: embedded" in capsys.readouterr().out
    nb = nbformat.read(path, as_version=4)
    setup = [c.source for c in nb.cells if "rlm-replay" in c.metadata.get("tags", []) and "--whole" in c.source]
    assert len(setup) == 1 and len(nb.metadata["rlm_kernel"]["replay"]) == 2  # each question stored once
    assert read_export(path).root.query == "and one more?"  # the export's own run, not the earlier question
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    checks = [c.outputs for c in nb.cells if c.cell_type == "code" and c.source.startswith("%rlm_replay")]
    assert "same answer" in "".join(o.get("text", "") + str(o.get("data", "")) for o in checks[0])
    final = nb.cells[-1].outputs
    assert "same answer" in final[0].data["text/plain"] and final[-1].data["text/plain"] == "42"
