"""Benchmarks: task generators, scorers, the runner and report end to end with the offline stand-in, perf plumbing.

The offline stand-in's scores only check that generators, scorers and plumbing agree; no timing is asserted.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

import pytest

from rlm_kernel.bench import compare, offline, report, runner, scoring
from rlm_kernel.bench import main as bench_main
from rlm_kernel.bench.families import make_tasks
from rlm_kernel.bench.figures import perf, perf_records, perf_reference
from rlm_kernel.bench.oolong import oolong, oolong_pairs
from rlm_kernel.bench.questions import LABELS, keyword_label
from rlm_kernel.bench.tasks import DEPTHS, NOISE_LINE, direct_prompt, parse_size, sniah
from rlm_kernel.models.policies import count_tokens
from rlm_kernel.models.server import ModelServer

# ----------------------------------------------------------------------------------------------
# generators


@pytest.mark.parametrize("generate", [sniah, oolong, oolong_pairs])
def test_same_seed_same_task_and_other_seeds_differ(generate):
    a, b = generate(8000, seed=3, index=1), generate(8000, seed=3, index=1)
    assert (a.id, a.context, a.question, a.gold) == (b.id, b.context, b.question, b.gold)
    others = [generate(8000, seed=4, index=1), generate(8000, seed=3, index=2)]
    assert all(o.context != a.context for o in others)


@pytest.mark.parametrize("generate", [sniah, oolong, oolong_pairs])
@pytest.mark.parametrize("size", [8000, 32000])
def test_context_sizes_are_close_to_the_requested_tokens(generate, size):
    tokens = count_tokens(generate(size, seed=0).context)
    assert 0.98 * size <= tokens <= size


def test_the_needle_sits_at_its_depth_among_whole_noise_lines():
    depths = set()
    for index in range(30):
        task = sniah(32000, seed=1, index=index)
        needle = f"One of the special magic numbers for {task.meta['key']} is: {task.gold}.\n"
        at = task.context.index(needle)
        assert task.context.count(needle) == 1 and task.context.count("special magic") == 1
        assert at % len(NOISE_LINE) == 0  # on a line (and sentence) boundary
        assert abs(at / len(task.context) - task.meta["depth"]) < 0.01
        assert task.meta["depth"] == task.meta["depth_index"] / (DEPTHS - 1)
        depths.add(task.meta["depth_index"])
        assert task.meta["key"] in task.question and task.gold not in task.question
    assert len(depths) > 10


def test_sniah_reaches_ten_million_tokens():
    task = sniah(10_000_000, seed=0)
    assert 9_900_000 <= count_tokens(task.context) <= 10_000_000 and task.gold in task.context


def test_oolong_lines_carry_no_labels_and_match_the_hidden_records():
    task = oolong(8000, seed=2)
    lines = [line for line in task.context.splitlines() if line.startswith("Date: ")]
    assert len(lines) == len(task.records) == task.meta["lines"]
    for line, record in zip(lines, task.records):
        date, user, instance = re.fullmatch(r"Date: (.+?) \|\| User: (\d+) \|\| Instance: (.+)", line).groups()
        assert dt.datetime.strptime(date, "%b %d, %Y").date() == record.date and int(user) == record.user
        assert instance == record.instance and record.label in LABELS
    header = task.context.split("\n\n", 1)[0]
    assert all(f"'{label}'" in header for label in LABELS)


def _recompute_oolong(question: str, records) -> tuple[str, object]:
    """The gold answer, from the hidden labels, by this test's own reading of the question."""
    quoted = re.findall(r"label '([^']+)'", question)
    counts = Counter({label: 0 for label in LABELS})
    counts.update(r.label for r in records)
    if m := re.search(r"is the (most|least) common", question):
        ranked = sorted(counts, key=counts.get)
        return "label", ranked[-1] if m.group(1) == "most" else ranked[0]
    if "should be classified as" in question:
        return "number", counts[quoted[0]]
    if "same frequency as" in question:
        a, b = counts[quoted[0]], counts[quoted[1]]
        return "comparison", {True: "more common than", False: "less common than"}[
            a > b
        ] if a != b else "same frequency as"
    if "which user" in question:
        return "user", Counter(r.user for r in records if r.label == quoted[0]).most_common(1)[0][0]
    if m := re.search(r"between (.+) and (.+), both", question):
        start, end = (dt.datetime.strptime(x, "%b %d, %Y").date() for x in m.groups())
        return "number", len([r for r in records if r.label == quoted[0] and start <= r.date <= end])
    if "first time" in question:
        return "date", sorted(r.date for r in records if r.label == quoted[0])[0]
    raise AssertionError(question)


def test_oolong_gold_answers_recomputed_from_the_hidden_labels():
    tasks = make_tasks("oolong", [8000, 16000], 7, seed=5)
    assert {t.kind for t in tasks} == {
        "most_common",
        "least_common",
        "count",
        "compare",
        "user_most",
        "range_count",
        "first_date",
    }
    for task in tasks:
        assert _recompute_oolong(task.question, task.records) == task.gold, task.id
        assert task.score(task.gold_text) == 1.0


def test_pairs_gold_recomputed_from_the_hidden_labels():
    for task in make_tasks("oolong-pairs", [8000], 8, seed=1):
        quoted = re.findall(r"label '([^']+)'", task.question)
        per_user = defaultdict(list)
        for r in task.records:
            per_user[r.user].append(r)

        def n(user, label):
            return sum(r.label == label for r in per_user[user])

        if "exactly one" in task.question:
            ok = lambda u, v: n(u, quoted[0]) == 1 == n(v, quoted[0])  # noqa: E731
        elif "one user has at least two" in task.question:
            two = lambda u: n(u, quoted[0]) >= 2  # noqa: E731
            both = lambda u: n(u, quoted[1]) and n(u, quoted[2])  # noqa: E731
            ok = lambda u, v: (two(u) and both(v)) or (two(v) and both(u))  # noqa: E731
        else:
            after = re.search(r"dated after (.+)\. List", task.question)
            cutoff = dt.datetime.strptime(after.group(1), "%b %d, %Y").date() if after else None

            def fits(u):
                if not (n(u, quoted[0]) or n(u, quoted[1])):
                    return False
                return cutoff is None or all(r.date > cutoff for r in per_user[u] if r.label == quoted[2])

            ok = lambda u, v: fits(u) and fits(v)  # noqa: E731
        expected = {(u, v) for u, v in combinations(sorted(per_user), 2) if ok(u, v)}
        assert expected == task.gold, task.id
    assert {t.kind for t in make_tasks("oolong-pairs", [8000], 4)} == {
        "either",
        "either_after",
        "asymmetric",
        "exactly_one",
    }


def test_sizes_parse_as_documented():
    assert [parse_size(s) for s in ("8k", "131k", "1m", "10M", "2^17", "4096", "1.5k")] == [
        8000,
        131000,
        10**6,
        10**7,
        131072,
        4096,
        1500,
    ]
    with pytest.raises(ValueError, match="bad size"):
        parse_size("8q")


# ----------------------------------------------------------------------------------------------
# scorers


def test_containment_scorer():
    assert scoring.score_containment("The number is 1234567.", "1234567") == 1.0
    assert scoring.score_containment("123456", "1234567") == 0.0
    assert scoring.score_containment(None, "1") == 0.0


@pytest.mark.parametrize(
    "answer, kind, gold, expected",
    [
        ("Label: human being", "label", "human being", 1.0),
        ("**Label: [Human Being]**", "label", "human being", 1.0),
        ("Label: location", "label", "human being", 0.0),
        ("Answer: 28", "number", 28, 1.0),
        ("Answer: 30", "number", 28, 0.75**2),
        ("Answer: 1,204", "number", 1200, 0.75**4),
        ("Answer: none", "number", 3, 0.0),
        ("User: 12345", "user", 12345, 1.0),
        ("User: 12346", "user", 12345, 0.0),
        ("Date: 06/16/2024", "date", dt.date(2024, 6, 16), 1.0),
        ("Date: Jun 16, 2024", "date", dt.date(2024, 6, 16), 1.0),
        ("Date: 2024-06-16", "date", dt.date(2024, 6, 16), 1.0),
        ("Date: 06/17/2024", "date", dt.date(2024, 6, 16), 0.0),
        ("Answer: entity is more common than location", "comparison", "more common than", 1.0),
        # The last comparison phrase counts, as in OOLONG's scorer.
        ("not less common than... Answer: entity is more common than location", "comparison", "more common than", 1.0),
        ("Answer: entity is more common than location", "comparison", "less common than", 0.0),
        ("Answer: same frequency as", "comparison", "same frequency as", 1.0),
        ("I cannot tell", "comparison", "same frequency as", 0.0),
    ],
)
def test_oolong_scorer(answer, kind, gold, expected):
    assert scoring.score_oolong(answer, kind, gold) == pytest.approx(expected)


def test_pairs_f1_including_empty_sets():
    gold = frozenset({(1, 2), (1, 3), (2, 3), (4, 5)})
    assert scoring.score_pairs("(1, 2)\n(1,3)\n(3, 2)\n(4, 5)", gold) == 1.0  # order inside a pair does not matter
    assert scoring.score_pairs("(1, 2)\n(1, 3)", gold) == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert scoring.score_pairs("(1, 2)\n(7, 8)", gold) == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert scoring.score_pairs("[]", frozenset()) == 1.0
    assert scoring.score_pairs("(1, 2)", frozenset()) == 0.0
    assert scoring.score_pairs("[]", gold) == 0.0


# ----------------------------------------------------------------------------------------------
# the runner and the report, end to end with the offline stand-in

FIELDS = {
    "task",
    "id",
    "kind",
    "mode",
    "model",
    "sub_model",
    "seed",
    "size_tokens",
    "context_tokens",
    "context_chars",
    "score",
    "answer",
    "answer_chars",
    "gold",
    "offline",
    "window",
    "window_source",
    "seconds",
    "meta",
    "status",
    "error",
    "truncated",
    "input_tokens",
    "output_tokens",
    "llm_calls",
    "cost_usd",
    "cost_known",
}


def keyword_answer_score(task) -> float:
    """The score of the answer the stand-in's aggregation code gives over keyword labels of every line."""
    namespace = {
        "records": [
            (f"{r.date:%b} {r.date.day}, {r.date.year}", r.user, keyword_label(r.instance)) for r in task.records
        ]
    }
    exec(offline.answer_code(task.question), namespace)
    return task.score(namespace["result"])


@pytest.mark.parametrize("mode", ["rlm", "rlm-no-subcalls"])
@pytest.mark.parametrize("family", ["sniah", "oolong", "oolong-pairs", "browsecomp-like", "codeqa-like"])
def test_rlm_modes_end_to_end_write_every_field(family, mode, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    argv = [family, "--model", "scripted/bench", "--sizes", "4k,8k", "--n", "2", "--mode", mode, "--out", str(out)]
    assert bench_main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 and all(FIELDS <= set(r) for r in records)
    tasks = make_tasks(family, [4000, 8000], 2)
    if family.startswith("oolong"):
        # The stand-in labels lines with the keyword baseline: its score is what those labels give, no more.
        assert [r["score"] for r in records] == pytest.approx([keyword_answer_score(t) for t in tasks])
    else:
        assert [r["score"] for r in records] == [1.0] * 4
    subcalls = [r["llm_calls"] - 3 for r in records]  # three root replies on every task but codeqa/browsecomp's two
    assert all(r["status"] == "done" and r["offline"] and r["input_tokens"] > 0 for r in records)
    if mode == "rlm-no-subcalls" or family in ("browsecomp-like", "codeqa-like"):
        assert all(r["llm_calls"] <= 3 for r in records), subcalls  # root calls only
    else:
        assert all(r["llm_calls"] >= 4 for r in records)
    assert [r["size_tokens"] for r in records] == [4000, 4000, 8000, 8000]
    printed = capsys.readouterr().out
    assert report.OFFLINE_NOTE in printed and "[plumbing check]" in printed


def test_direct_mode_cuts_the_context_to_the_window_and_says_so(tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    args = [
        "oolong",
        "--model",
        "scripted/bench",
        "--sizes",
        "4k,16k",
        "--n",
        "3",
        "--mode",
        "direct",
        "--window",
        "9000",
    ]
    assert bench_main([*args, "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(FIELDS <= set(r) and r["llm_calls"] == 1 and r["window"] == 9000 for r in records)
    assert [r["truncated"] for r in records] == [False] * 3 + [True] * 3
    assert all(r["input_tokens"] < 9000 for r in records)
    # The whole context fits: the stand-in's answer is what the keyword labels give.
    expected = [keyword_answer_score(t) for t in make_tasks("oolong", [4000], 3)]
    assert [r["score"] for r in records[:3]] == pytest.approx(expected)
    assert re.search(r"^oolong +generated +direct ", capsys.readouterr().out, re.M)


def test_fit_context_cuts_the_middle():
    text = "".join(f"{i:05d}\n" for i in range(10_000))
    kept, cut = runner.fit_context(text, 1000, 4.0)
    assert cut == len(text) - 4000 and kept.startswith("00000\n") and kept.endswith("09999\n")
    assert f"{cut:,} characters cut" in kept
    assert runner.fit_context("short", 1000, 4.0) == ("short", 0)


def test_report_prints_the_table_and_draws_the_plot(tmp_path, capsys):
    results = tmp_path / "r.jsonl"
    for mode in ("rlm", "direct"):
        assert (
            bench_main(
                [
                    "sniah",
                    "--model",
                    "scripted/bench",
                    "--sizes",
                    "4k,8k",
                    "--mode",
                    mode,
                    "--window",
                    "5000",
                    "--out",
                    str(results),
                ]
            )
            == 0
        )
    capsys.readouterr()
    plot = tmp_path / "score.png"
    assert bench_main(["report", str(results), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("sniah")]
    assert len(rows) == 2 + 4 and report.OFFLINE_NOTE in out  # one row per mode, then one per mode and size
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope", "--model", "m"], "invalid choice: 'nope'"),
        (["sniah", "--model", "scripted/bench", "--sizes", "8q"], "bad size '8q'"),
        (["sniah"], "required: --model"),
        (["report", "/nonexistent/r.jsonl"], "cannot read /nonexistent/r.jsonl"),
        (["perf", "--figures", "9"], "--figures takes numbers"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(argv, message, capsys):
    assert bench_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlm bench: error:") and message in err and err.count("\n") == 1


def test_report_rejects_a_file_that_is_not_json(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "sniah"}\nnot json\n')
    assert bench_main(["report", str(bad)]) == 2
    assert "line 2: not JSON" in capsys.readouterr().err


def test_rlm_bench_is_wired_into_the_rlm_command(capsys):
    from rlm_kernel.cli import main

    assert main(["bench", "sniah", "--model", "scripted/bench", "--sizes", "2k"]) == 0
    assert re.search(r"^sniah +RULER essays +rlm ", capsys.readouterr().out, re.M)


# ----------------------------------------------------------------------------------------------
# offline stand-in and perf plumbing

_PORTABLE_NAMES = {"context", "llm_query_batched", "answer", "print", "len", "range", "str", "round", "sum", "time"}


def _repl_code(reply: str) -> str:
    return re.search(r"```repl\n(.*?)\n```", reply, re.S).group(1)


def test_the_side_by_side_policy_writes_only_code_that_also_runs_in_rlms():
    policy = offline.BenchPolicy(portable=True)
    task = sniah(8000)
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": f"Answer the following: {task.question}"},
    ]
    replies = []
    for _ in range(3):
        replies.append(policy(messages))
        messages.append({"role": "assistant", "content": replies[-1]})
    replies.append(
        policy(
            [{"role": "system", "content": "s"}, {"role": "user", "content": "Answer the following: fan out 8 prompts"}]
        )
    )
    for reply in replies:
        tree = ast.parse(_repl_code(reply))
        loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        assert (
            loaded - stored - {"chunks", "found", "replies", "ask", "elapsed", "t0", "i", "c", "r"} <= _PORTABLE_NAMES
        ), reply
    assert "answer['ready'] = True" in replies[2] and "answer['ready'] = True" in replies[3]


def test_side_by_side_policy_counts_root_requests_over_http():
    task = sniah(8000, seed=2)
    with ModelServer(offline.SideBySidePolicy()) as server:
        result = perf.RLM(model="openai/policy", api_base=server.url).completion(task.context, task.question)
        counters = perf_reference._counters(server.url)
        stats = server.stats()
    assert result.answer == task.gold
    assert counters["root_requests"] == 3 and counters["sub_requests"] >= 1
    assert counters["root_requests"] + counters["sub_requests"] == result.usage.llm_calls == stats["served"] - 1
    assert counters["root_input_tokens"] > 1000


def test_figure_5s_own_side_runs_a_task_in_a_fresh_process_importing_what_rlm_run_imports(tmp_path):
    task = sniah(8000, seed=2)
    (tmp_path / "context.txt").write_text(task.context, encoding="utf-8")
    with ModelServer(offline.SideBySidePolicy()) as server:
        command = [*perf_reference.OWN_SIDE, server.url, task.question, str(tmp_path / "context.txt")]
        row = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert row["answer"] == task.gold and row["seconds"] > 0 and row["peak_rss_mb"] > 10
    source = Path(perf_reference.__file__).with_name("side_child.py").read_text()
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert {name for name in imported if name.startswith("rlm_kernel")} == {"rlm_kernel.cli", "rlm_kernel.core"}


def test_fan_out_through_a_router_of_two_deployments_splits_the_load():
    with ModelServer(offline.BenchPolicy()) as first, ModelServer(offline.BenchPolicy()) as second:
        router = [
            {
                "model_name": "local-model",
                "litellm_params": {"model": "openai/policy", "api_base": s.url, "api_key": "x"},
            }
            for s in (first, second)
        ]
        seconds = perf.fan_out("", 24, 8, model="local-model", router=router)
        served = [first.stats()["served"], second.stats()["served"]]
    assert seconds > 0 and sum(served) == 25 and min(served) > 0


def test_memory_child_runs_ten_iterations_over_a_built_context(capsys):
    perf.memory_child(4)
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["status"] == "done" and row["iterations"] == 10 and "NEEDLE-4242" in row["answer"]
    assert row["context_mb"] == 4 and row["peak_mb"] >= row["after_build_mb"] >= row["baseline_mb"] > 0


def test_the_records_probe_hands_the_context_to_children_in_a_fresh_process():
    row = perf_records.probe(sys.executable, 50_000, 4)  # about 20 MB: smaller ones fit in memory freed earlier
    assert row["status"] == "done" and row["answer"] == str([50_000] * 4)
    assert row["peak_over_baseline_mb"] >= row["context_mb"] > 5 and 0 < row["first_request_s"] <= row["run_s"]


def test_the_reference_driver_imports_only_rlms_and_the_standard_library():
    source = Path(compare.REF_DRIVER).read_text()
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    assert modules == {"__future__", "json", "os", "sys", "time", "rlm"}


def test_direct_prompt_stand_in_reads_only_what_the_prompt_shows():
    task = next(t for t in (sniah(8000, seed=s) for s in range(20)) if 0.3 < t.meta["depth"] < 0.7)
    assert task.gold in offline.BenchPolicy()([{"role": "user", "content": direct_prompt(task.context, task.question)}])
    cut = direct_prompt(runner.fit_context(task.context, 1000, 4.0)[0], task.question)
    assert "I did not find it" in offline.BenchPolicy()([{"role": "user", "content": cut}])


@pytest.mark.kernel
def test_the_first_cell_figure_times_a_real_kernel_up_to_its_first_request():
    from rlm_kernel.bench.figures import perf_kernel

    row = perf_kernel.first_cell_seconds(1)
    (run,) = row["runs"]
    # The first %%rlm pays the engine's first use; the second only the cell itself. The figures subtract a trivial
    # cell's round trip, which a loaded machine can make longer than the second cell's wait: the raw waits are > 0.
    assert 0 < run["second_s"] + run["trivial_s"] and run["second_s"] < run["first_s"] < 30
    assert run["load_ext_s"] > 0 and run["trivial_s"] > 0
