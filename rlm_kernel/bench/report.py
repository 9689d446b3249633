"""`rlm bench report`: tasks x modes with score and cost, the paper's published numbers beside, and the plots.

    rlm bench report rlm.jsonl direct.jsonl no-subcalls.jsonl --plot score.png

The first table has one row per task, data source, mode and model: the mean score with its 95%
bootstrap interval, and the cost per task as mean, median and 95th percentile, next to the paper's
Table 1 numbers for that benchmark and mode (published reference numbers, not ours). The second has
one row per context size. The plot draws score against context length per mode (n and the interval
at each point) and cost against score.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence

from rlm_kernel.bench import UsageError, published
from rlm_kernel.bench.families import BENCHMARK
from rlm_kernel.bench.records import GENERATED, OFFLINE_NOTE, PACKAGED, Record, groups, model_label, order, source_label
from rlm_kernel.bench.stats import bootstrap_ci, mean, median, percentile
from rlm_kernel.bench.tasks import size_label

PUBLISHED_NOTE = f"published: {published.SOURCE}; shown for reference beside the benchmark each task stands for"
_OK = ("done", "max_iterations")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="results files written by `rlm bench TASK --out`")
    parser.add_argument(
        "--plot", help="write score against context length, and cost against score, to this image (PNG, SVG, PDF)"
    )


def run(args: argparse.Namespace) -> int:
    records = load(args.results)
    if not records:
        raise UsageError(f"no results in {', '.join(args.results)}")
    print(summary_table(records))
    if args.plot:
        from rlm_kernel.bench.plot import plot  # matplotlib only when a plot is asked for

        plot(records, args.plot)
        print(f"plot: {args.plot}")
    return 0


def load(paths: Iterable[str]) -> list[Record]:
    """Every record of the given JSONL files, in order."""
    records = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as file:
                for number, line in enumerate(file, 1):  # noqa: B007 - the except clause reports it
                    if line.strip():
                        records.append(json.loads(line))
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}, line {number}: not JSON ({exc.msg})") from None
    return records


def score_cell(group: list[Record]) -> tuple[str, str]:
    """('56.5%', '[48.0, 64.1]'): the mean score and its 95% bootstrap interval, in percent."""
    scores = [r["score"] for r in group]
    low, high = bootstrap_ci(scores)
    return f"{100 * mean(scores):.1f}%", f"[{100 * low:.1f}, {100 * high:.1f}]"


def _cost_cells(group: list[Record]) -> tuple[str, str, str]:
    costs = [r["cost_usd"] for r in group]
    unknown = "" if all(r["cost_known"] for r in group) else "+?"
    return tuple(f"{value:.4f}{unknown}" for value in (mean(costs), median(costs), percentile(costs, 95)))  # type: ignore[return-value]


def _render(rows: Sequence[tuple[str, ...]], left: int) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def modes_table(records: list[Record]) -> list[str]:
    """Tasks x modes: score, its interval, cost mean / median / p95, and the paper's numbers for that cell."""
    header = ("task", "data", "mode", "model", "n", "score", "95% CI", "cost mean $", "median $", "p95 $")
    rows = [(*header, "published (Table 1)")]
    for (task, source, mode, model), group in groups(records, by_size=False).items():
        beside = published.scores_beside(BENCHMARK.get(task), mode)
        row = (task, source, mode, model_label(model, group), str(len(group)), *score_cell(group), *_cost_cells(group))
        rows.append((*row, beside))
    return _render(rows, left=4)


def sizes_table(records: list[Record]) -> list[str]:
    """One row per task, source, mode, model and size: score, tokens, cost, seconds, failures, cuts."""
    header = ("task", "data", "mode", "model", "size", "n", "score", "95% CI", "in tok", "out tok", "cost $")
    rows = [(*header, "seconds", "failed", "cut")]
    for (task, source, mode, model, size), group in groups(records, by_size=True).items():
        rows.append(
            (
                task,
                source,
                mode,
                model_label(model, group),
                size_label(size),
                str(len(group)),
                *score_cell(group),
                f"{mean(r['input_tokens'] for r in group):,.0f}",
                f"{mean(r['output_tokens'] for r in group):,.0f}",
                _cost_cells(group)[0],
                f"{mean(r['seconds'] for r in group):.2f}",
                str(sum(r["status"] not in _OK for r in group)),
                str(sum(bool(r.get("truncated")) for r in group)),
            )
        )
    return _render(rows, left=4)


def summary_table(records: list[Record]) -> str:
    """Both tables and their notes; the offline stand-in's rows are marked a plumbing check."""
    notes = [
        "score: mean per task (S-NIAH: value found; OOLONG: exact, 0.75**|error| for numbers; pairs: F1; "
        "BrowseComp: normalised exact match; CodeQA: the option letter; HotpotQA: F1); 95% CI: bootstrap of the mean over tasks; "
        "cost: per task; cost +?: unpriced model; cut: direct prompts cut to the model's window",
        PUBLISHED_NOTE,
    ]
    if any(r.get("offline") for r in records):
        notes.insert(0, f"NOTE: {OFFLINE_NOTE}")
    notes += [*data_notes(records), *exact_match_notes(records)]
    if any(r["task"] in BROWSECOMP_STAND_INS for r in records):
        notes.append(BROWSECOMP_NOTE)
    return "\n".join([*modes_table(records), "", *sizes_table(records), *notes])


BROWSECOMP_STAND_INS = ("browsecomp-like", "hotpotqa-distractor")
BROWSECOMP_NOTE = (
    "BrowseComp-Plus stand-ins: browsecomp-like is generated text (multi-hop constraints over a 1,000-document "
    "corpus, BrowseComp-Plus's shape); hotpotqa-distractor is real Wikipedia text (two-hop questions among "
    "distractor paragraphs, RULER qa_2); neither is BrowseComp-Plus's web pages or its judge"
)


def data_notes(records: list[Record]) -> list[str]:
    """Per task family, where its texts came from, so that a table never mixes them unlabelled."""
    by_family: dict[str, dict[str, None]] = {}
    for key in sorted({(r["task"], r.get("source", GENERATED), "", "") for r in records}, key=order):
        by_family.setdefault(key[0], {})[source_label(key[1])] = None
    lines = ["data: " + "; ".join(f"{family}: {', '.join(labels)}" for family, labels in by_family.items())]
    used = {r.get("source") for r in records}
    return lines + [f"  {label}: {text}" for label, text in PACKAGED.items() if label in used]


def exact_match_notes(records: list[Record]) -> list[str]:
    """HotpotQA's exact match beside its F1 (the score column), per data, mode and model."""
    lines = []
    for (task, source, mode, model), group in groups(records, by_size=False).items():
        if all("exact_match" in r for r in group):
            value = 100 * mean(r["exact_match"] for r in group)
            lines.append(f"{task} ({source}, {mode}, {model}): exact match {value:.1f}%, F1 in the score column")
    return lines
