"""`rlm bench oolong --baseline`: how far the keyword labeller gets on the generated lines, per size.

It calls no model. For each size it generates the tasks, counts their lines and distinct lines,
and labels every line with `questions.keyword_label` against the hidden gold labels. A benchmark
that measures label inference needs this accuracy low: OOLONG's real TREC-coarse questions give a
keyword rule set about 48% (issue 16's measurement on a sample); the grammar is built for at most 60%.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlm_kernel.bench import UsageError
from rlm_kernel.bench.families import GENERATORS
from rlm_kernel.bench.questions import keyword_label
from rlm_kernel.bench.tasks import size_label

TARGET = 0.60  # the ceiling for the keyword labeller's accuracy
LABELLED_FAMILIES = ("oolong", "oolong-pairs")


@dataclass(frozen=True)
class Survey:
    """The lines of one or more contexts, and how many of them the keyword labeller gets right."""

    lines: int
    distinct: int  # summed over the contexts: each counts the distinct lines it holds
    correct: int
    task_accuracies: tuple[float, ...]

    @property
    def accuracy(self) -> float:
        return self.correct / self.lines if self.lines else 0.0


def survey(family: str, size_tokens: int, n: int, seed: int = 0) -> Survey:
    """The keyword labeller on every line of `n` generated tasks of one size."""
    lines = correct = distinct = 0
    accuracies = []
    for index in range(n):
        records = GENERATORS[family](size_tokens, seed, index).records
        right = sum(keyword_label(r.instance) == r.label for r in records)
        lines, correct = lines + len(records), correct + right
        distinct += len({r.instance for r in records})  # within one context, as a reader meets them
        accuracies.append(right / len(records))
    return Survey(lines, distinct, correct, tuple(accuracies))


def run(family: str, sizes: list[int], n: int, seed: int) -> int:
    if family not in LABELLED_FAMILIES:
        raise UsageError(f"--baseline is for {' and '.join(LABELLED_FAMILIES)}, whose lines carry hidden labels")
    print(f"{family}: the keyword labeller (questions.keyword_label) against the hidden labels; {n} task(s) per size")
    header = ("size", "tasks", "lines", "distinct lines", "distinct %", "keyword accuracy", "per-task range")
    rows = [header]
    worst = 0.0
    for size in sizes:
        s = survey(family, size, n, seed)
        worst = max(worst, *s.task_accuracies)
        rows.append(
            (
                size_label(size),
                str(n),
                f"{s.lines:,}",
                f"{s.distinct:,}",
                f"{100 * s.distinct / s.lines:.1f}%",
                f"{100 * s.accuracy:.1f}%",
                f"{100 * min(s.task_accuracies):.1f}-{100 * max(s.task_accuracies):.1f}%",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for number, row in enumerate(rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        if number == 0:
            print("  ".join("-" * w for w in widths))
    verdict = "within" if worst <= TARGET else "ABOVE"
    print(
        f"highest per-task accuracy {100 * worst:.1f}%: {verdict} the {100 * TARGET:.0f}% ceiling "
        "(a keyword rule set labels about 48% of real TREC-coarse questions)"
    )
    return 0
