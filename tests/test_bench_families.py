"""Benchmarks, issue 16: the keyword-proof OOLONG grammar, the browsecomp-like and codeqa-like families, the
rlm-no-subcalls mode as the model server sees it, real-data loaders on shipped fixtures, the report's published
column and cost statistics."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from pathlib import Path

import pytest

from rlm_kernel.bench import baseline, browsecomp, codeqa, datasets, published, stats
from rlm_kernel.bench import main as bench_main
from rlm_kernel.bench.questions import FRAMES, LABELS, instance
from rlm_kernel.core.prompts import NO_SUB_CALLS_NOTE
from rlm_kernel.models.policies import count_tokens
from rlm_kernel.models.server import ModelServer

FIXTURES = Path(__file__).parent / "fixtures" / "bench"

# ----------------------------------------------------------------------------------------------
# the OOLONG-like grammar and its keyword baseline


def test_each_generated_question_has_exactly_one_label():
    rng = random.Random(0)
    seen: dict[str, set[str]] = defaultdict(set)
    for _ in range(20_000):
        label = rng.choice(LABELS)
        seen[instance(rng, label)].add(label)
    assert all(len(labels) == 1 for labels in seen.values())
    assert len(seen) > 19_000  # names from syllables: lines rarely repeat


@pytest.mark.parametrize("family", ["oolong", "oolong-pairs"])
def test_the_keyword_labeller_stays_at_or_under_sixty_percent_on_every_context(family):
    for size in (8000, 32000):
        survey = baseline.survey(family, size, n=4, seed=3)
        assert max(survey.task_accuracies) <= baseline.TARGET, survey
        assert 0.35 < survey.accuracy  # well above chance (1/6): the cue words are not noise either
        assert survey.distinct / survey.lines > 0.97


def test_baseline_command_prints_distinct_lines_and_accuracy_per_size(capsys):
    assert bench_main(["oolong", "--baseline", "--sizes", "4k,16k", "--n", "2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if re.match(r"^ *(4k|16k) ", line)}
    assert set(rows) == {"4k", "16k"}
    lines, distinct, accuracy = (
        int(rows["16k"][2].replace(",", "")),
        int(rows["16k"][3].replace(",", "")),
        rows["16k"][5],
    )
    assert distinct <= lines and lines > 400 and float(accuracy.rstrip("%")) <= 60
    assert "within the 60% ceiling" in out


def test_baseline_is_refused_for_families_without_labels(capsys):
    assert bench_main(["sniah", "--baseline"]) == 2
    assert "--baseline is for oolong and oolong-pairs" in capsys.readouterr().err


def test_every_category_has_frames_that_mislead_the_keyword_labeller():
    from rlm_kernel.bench.questions import keyword_label

    rng = random.Random(1)
    for label, frames in FRAMES.items():
        accuracies = [sum(keyword_label(f(rng)) == label for _ in range(50)) / 50 for f in frames]
        assert min(accuracies) < 0.2, label  # at least one frame whose cue words point elsewhere


# ----------------------------------------------------------------------------------------------
# browsecomp-like and codeqa-like


@pytest.mark.parametrize("index", range(6))
def test_browsecomp_like_answers_follow_from_the_documents_alone(index):
    task = browsecomp.browsecomp_like(16000, seed=2, index=index)
    assert 0.9 * 16000 <= count_tokens(task.context) <= 16000
    assert browsecomp.solve_from_text(task.context, task.question) == task.gold
    assert task.score(f"Explanation: hops.\nExact Answer: {task.gold}") == 1.0 and task.score("Exact Answer: x") == 0.0


def test_browsecomp_like_has_about_a_thousand_documents_and_near_misses():
    task = browsecomp.browsecomp_like(110_000, seed=0, index=0)  # designer_birthplace: kind, year and river
    assert 900 <= task.meta["documents"] <= 1100
    kind, year, river = re.match(
        r"A (.+?) was finished in (\d+) in a town on the river (\w+)\.", task.question
    ).groups()
    same_year = re.findall(rf"is an? {kind} in \w+\. It was finished in {year} ", task.context)
    on_river = re.findall(rf"is a town on the river {river},", task.context)
    assert len(same_year) + len(on_river) > 2  # one clue alone picks out more than one document


@pytest.mark.parametrize("index", range(6))
def test_codeqa_like_answers_follow_from_the_source_alone(index):
    task = codeqa.codeqa_like(24000, seed=1, index=index)
    assert codeqa.solve_from_text(task.context, task.question) == task.gold
    assert task.score(f"The correct answer is ({task.gold}).") == 1.0
    assert task.score(f"Answer: ({'A' if task.gold != 'A' else 'B'})") == 0.0


def test_codeqa_like_needs_imports_resolved_not_just_a_grep():
    task = next(t for t in (codeqa.codeqa_like(24000, 4, i) for i in range(1, 30, 3)) if t.kind == "callers")
    name, path = re.search(r"call the function `(\w+)` defined in `(\S+)`", task.question).groups()
    graph = codeqa.call_graph(task.context)
    callers = {ref for ref, calls in graph.items() if (path, name) in calls}
    assert len([ref for ref in graph if ref[1] == name]) >= 1 and callers
    # A text search for the name finds its definition, its namesakes, mentions in comments and strings, and callers.
    assert len(re.findall(rf"\b{name}\b", task.context)) > len(callers) + 1


# ----------------------------------------------------------------------------------------------
# rlm-no-subcalls, as the model server sees it


class RecordingPolicy:
    """The offline stand-in, keeping every prompt it was sent; its first reply tries a sub-call."""

    def __init__(self) -> None:
        from rlm_kernel.bench.offline import BenchPolicy

        self.stand_in = BenchPolicy()
        self.systems: list[str] = []
        self.observations: list[str] = []

    def __call__(self, messages):
        if messages[0]["role"] == "system":
            self.systems.append(messages[0]["content"])
            self.observations += [m["content"] for m in messages[2:] if m["role"] == "user"]
            if len(messages) == 2:
                return "```repl\nprint(llm_query('hello'))\n```"
        return self.stand_in(messages)


def test_no_subcalls_mode_shows_no_subcall_functions_and_has_none(tmp_path):
    policy = RecordingPolicy()
    out = tmp_path / "r.jsonl"
    with ModelServer(policy) as server:
        argv = ["sniah", "--model", "openai/policy", "--api-base", server.url, "--mode", "rlm-no-subcalls"]
        assert bench_main([*argv, "--sizes", "4k", "--out", str(out)]) == 0
        served = server.stats()["served"]
    system = policy.systems[0]
    assert system.endswith(NO_SUB_CALLS_NOTE)
    described = system.removesuffix(NO_SUB_CALLS_NOTE)  # the REPL's functions as the prompt describes them
    assert "llm_query" not in described and "rlm_query" not in described
    assert "peek(" in system and "grep(" in system and "FINAL(" in system  # the rest of the REPL is there
    assert any("NameError" in o and "llm_query" in o for o in policy.observations)
    record = json.loads(out.read_text())
    assert record["mode"] == "rlm-no-subcalls" and record["sub_model"] is None
    assert record["llm_calls"] == served == len(policy.systems)  # root calls only, every one through the server


# ----------------------------------------------------------------------------------------------
# real-data loaders on tiny fixtures in the datasets' own formats


def test_oolong_synth_loader_reads_trec_coarse_rows_and_their_gold():
    tasks = datasets.load("oolong", str(FIXTURES), [1000], n=10, seed=0)
    assert len(tasks) == 3 and {t.source for t in tasks} == {"oolong-synth"}  # the spam row is left out
    golds = {t.id.rsplit("-", 1)[1]: t.gold for t in tasks}
    assert golds["1"] == ("label", "human being") and golds["2"] == ("number", 1)
    assert golds["3"][0] == "date" and golds["3"][1].isoformat() == "2023-04-20"
    assert all(t.score(t.gold_text) == 1.0 and "Label:" not in t.context for t in tasks)


def test_oolong_pairs_loader_joins_queries_to_their_context():
    tasks = datasets.load("oolong-pairs", str(FIXTURES), [32000], n=5, seed=0)
    by_kind = {t.kind: t for t in tasks}
    assert by_kind["query 1"].gold == {(44301, 51877), (44301, 60212), (51877, 60212)}
    assert by_kind["query 2"].gold == frozenset() and by_kind["query 2"].score("[]") == 1.0
    assert all("User: 44301" in t.context and t.size_tokens == 1024 for t in tasks)


def test_browsecomp_plus_loader_puts_every_evidence_document_among_the_thousand():
    tasks = datasets.load("browsecomp-plus", str(FIXTURES), [0], n=2, seed=0)
    task = next(t for t in tasks if t.id.endswith("q2"))
    assert "Corin Ash played the viola" in task.context  # a gold doc given by id only: its text from the corpus
    assert task.meta["documents"] == 10  # the fixture corpus has 10 documents, fewer than 1,000
    assert task.score("Exact Answer: The viola") == 1.0


def test_codeqa_loader_keeps_the_code_domain_only():
    (task,) = datasets.load("codeqa", str(FIXTURES), [0], n=5, seed=0)
    assert task.gold == "B" and "(B) load_config" in task.question and task.score("Answer: (B)") == 1.0


def test_real_data_runs_end_to_end_and_says_where_it_came_from(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    argv = ["codeqa", "--data", str(FIXTURES), "--model", "scripted/bench", "--mode", "direct", "--out", str(out)]
    assert bench_main(argv) == 0
    record = json.loads(out.read_text())
    assert record["source"] == "longbench-v2" and record["task"] == "codeqa" and record["offline"]
    assert re.search(r"^codeqa +real \(longbench-v2\) +direct ", capsys.readouterr().out, re.M)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["codeqa", "--model", "m", "--data", "/nonexistent"], "--data /nonexistent: not a folder"),
        (["codeqa", "--model", "m"], "codeqa is read from the real dataset: give --data DIR"),
        (["sniah", "--model", "m", "--data", str(FIXTURES)], f"missing {FIXTURES / 'ruler' / 'PaulGrahamEssays.json'}"),
    ],
)
def test_real_data_errors_are_one_line(argv, message, capsys):
    assert bench_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_missing_dataset_file_says_where_to_put_it(tmp_path, capsys):
    assert bench_main(["browsecomp-plus", "--model", "m", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"missing {tmp_path}/browsecomp-plus/queries.jsonl: download" in err and "Tevatron" in err
    assert err.count("\n") == 1


# ----------------------------------------------------------------------------------------------
# the report: cost statistics and the published numbers, labelled


def test_percentile_and_bootstrap_interval():
    assert stats.percentile([1, 2, 3, 4, 5], 95) == pytest.approx(4.8)
    assert stats.median([3, 1, 2]) == 2
    low, high = stats.bootstrap_ci([0.0, 1.0] * 20)
    assert 0.3 < low < 0.5 < high < 0.7 and stats.bootstrap_ci([0.25]) == (0.25, 0.25)


def test_report_shows_cost_mean_median_p95_and_the_papers_numbers_labelled(tmp_path, capsys):
    base = {"task": "oolong", "mode": "rlm", "model": "m", "size_tokens": 131000, "input_tokens": 1, "output_tokens": 1}
    base |= {"seconds": 1.0, "status": "done", "cost_known": True}
    path = tmp_path / "r.jsonl"
    costs = [0.10, 0.20, 0.30, 0.40, 2.00]
    path.write_text("".join(json.dumps({**base, "score": 0.5, "cost_usd": c}) + "\n" for c in costs))
    assert bench_main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("oolong"))
    assert "0.6000" in row and "0.3000" in row and "1.6800" in row  # mean, median, p95
    assert "GPT-5 56.5, Qwen3-Coder-480B 48.0" in row and "[plumbing check]" not in row
    assert published.SOURCE in out and "not ours" in out


# ----------------------------------------------------------------------------------------------
# side by side with the reference package

REF_PYTHON = Path(__file__).parents[1] / ".venv-bench-ref" / "bin" / "python"


def test_compare_without_the_reference_package_says_how_to_get_it(tmp_path, capsys):
    assert bench_main(["compare", "sniah", "--ref-python", str(tmp_path / "python")]) == 2
    err = capsys.readouterr().err
    assert "`make bench-ref` installs the reference package rlms there" in err and err.count("\n") == 1


def test_compare_refuses_what_the_portable_stand_in_cannot_run(capsys):
    assert bench_main(["compare", "oolong", "--ref-python", __file__]) == 2
    assert "portable policy knows sniah only" in capsys.readouterr().err


@pytest.mark.skipif(not REF_PYTHON.exists(), reason="rlms is not installed here (make bench-ref)")
def test_compare_runs_both_engines_on_the_same_tasks(capsys):
    assert bench_main(["compare", "sniah", "--ref-python", str(REF_PYTHON), "--sizes", "8k"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("sniah-8k")]
    assert [r[1] for r in rows] == ["rlm_kernel", "rlms"] and all(r[2] == "100.0%" for r in rows)
    assert rows[0][3] == rows[1][3] == "4"  # the same policy: the same calls on both sides
