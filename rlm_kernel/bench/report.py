"""`rlm bench report`: the summary table of results files, and score against context length as a plot.

    rlm bench report rlm.jsonl direct.jsonl --plot score.png

The plot draws one panel per task family and one line per mode and model, as the paper's Figure 1.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rlm_kernel.bench import UsageError
from rlm_kernel.bench.tasks import FAMILIES, size_label

OFFLINE_NOTE = "offline policy: plumbing check, not a model score"
_OK = ("done", "max_iterations")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="results files written by `rlm bench TASK --out`")
    parser.add_argument("--plot", help="write score against context length to this image (PNG, SVG, PDF)")


def run(args: argparse.Namespace) -> int:
    records = load(args.results)
    if not records:
        raise UsageError(f"no results in {', '.join(args.results)}")
    print(summary_table(records))
    if args.plot:
        plot(records, args.plot)
        print(f"plot: {args.plot}")
    return 0


def load(paths: Iterable[str]) -> list[dict[str, Any]]:
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


def _groups(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, int], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["task"], r["mode"], r["model"], r["size_tokens"])].append(r)
    order = {family: i for i, family in enumerate(FAMILIES)}
    return dict(sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1], kv[0][2], kv[0][3])))


def summary_table(records: list[dict[str, Any]]) -> str:
    """One row per task, mode, model and size: mean score, tokens, cost, seconds, failures, cuts."""
    header = ("task", "mode", "model", "size", "n", "score", "in tok", "out tok", "cost $", "seconds", "failed", "cut")
    rows = [header]
    for (task, mode, model, size), group in _groups(records).items():
        n = len(group)
        cost = f"{_mean(r['cost_usd'] for r in group):.4f}" + ("" if all(r["cost_known"] for r in group) else "+?")
        rows.append(
            (
                task,
                mode,
                model,
                size_label(size),
                str(n),
                f"{100 * _mean(r['score'] for r in group):.1f}%",
                f"{_mean(r['input_tokens'] for r in group):,.0f}",
                f"{_mean(r['output_tokens'] for r in group):,.0f}",
                cost,
                f"{_mean(r['seconds'] for r in group):.2f}",
                str(sum(r["status"] not in _OK for r in group)),
                str(sum(bool(r.get("truncated")) for r in group)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [
        "score: mean per task (S-NIAH: value found; OOLONG: exact, 0.75**|error| for numbers; pairs: F1); "
        "in/out tok, cost, seconds: mean per task; cut: direct prompts cut to the model's window; cost +?: unpriced model"
    ]
    if any(r.get("offline") for r in records):
        notes.insert(0, f"NOTE: {OFFLINE_NOTE}")
    return "\n".join(lines + notes)


def plot(records: list[dict[str, Any]], path: str) -> None:
    """Mean score against context length (log scale), one panel per task family, one line per mode and model."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    groups = _groups(records)
    families = list(dict.fromkeys(task for task, *_ in groups))
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 4), squeeze=False)
    for ax, family in zip(axes[0], families):
        lines: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
        for (task, mode, model, size), group in groups.items():
            if task == family:
                lines[(mode, model)].append((size, 100 * _mean(r["score"] for r in group)))
        for (mode, model), points in lines.items():
            style = "-" if mode == "rlm" else "--"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=f"{mode}: {model}")
        ax.set_xscale("log", base=2)
        ax.set_title(family)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("score (%)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if any(r.get("offline") for r in records):
        fig.suptitle(OFFLINE_NOTE, color="firebrick")
    fig.tight_layout()
    try:
        fig.savefig(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot write plot {path}: {exc}") from None
    finally:
        plt.close(fig)


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return math.fsum(items) / len(items) if items else 0.0
