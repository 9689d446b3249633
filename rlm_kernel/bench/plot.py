"""The benchmark plots: score against context length per mode (n and a 95% interval at each point), and cost
against score. One column per task family; the offline stand-in's figures are titled a plumbing check."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rlm_kernel.bench import UsageError
from rlm_kernel.bench.records import OFFLINE_NOTE, groups, model_label
from rlm_kernel.bench.stats import bootstrap_ci, mean

_STYLE = {"rlm": "-", "rlm-no-subcalls": "-.", "direct": "--"}


def plot(records: list[dict[str, Any]], path: str) -> None:
    """Top row: mean score (%) against context length (log 2), error bars the 95% interval, n beside each point.
    Bottom row: mean cost per task against mean score, one point per mode, model and size."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    by_size = groups(records, by_size=True)
    families = list(dict.fromkeys(key[0] for key in by_size))
    fig, axes = plt.subplots(2, len(families), figsize=(5.5 * len(families), 8), squeeze=False)
    for column, family in enumerate(families):
        lines: dict[str, list[tuple[int, float, float, float, int, float]]] = defaultdict(list)
        for (task, source, mode, model, size), group in by_size.items():
            if task != family:
                continue
            scores = [r["score"] for r in group]
            low, high = bootstrap_ci(scores)
            label = f"{mode}: {model_label(model, group)}" + ("" if source == "generated" else f" ({source})")
            cost = mean(r["cost_usd"] for r in group)
            lines[label].append((size, 100 * mean(scores), 100 * low, 100 * high, len(group), cost))
        score_ax, cost_ax = axes[0][column], axes[1][column]
        for number, (label, points) in enumerate(lines.items()):
            # Lines of equal scores would hide each other: each is nudged a little along the log axis.
            xs, ys = [p[0] * 1.04**number for p in points], [p[1] for p in points]
            errors = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
            style = _STYLE.get(label.split(":")[0], ":")
            drawn = score_ax.errorbar(xs, ys, yerr=errors, fmt=style, marker="o", capsize=3, label=label)
            for x, y, n in zip(xs, ys, (p[4] for p in points)):
                score_ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            cost_ax.plot(ys, [p[5] for p in points], "o", color=drawn[0].get_color(), label=label)
        score_ax.set_xscale("log", base=2)
        score_ax.set(title=family, xlabel="context length (tokens)", ylabel="score (%, 95% CI)", ylim=(-5, 105))
        cost_ax.set(title=f"{family}: cost against score", xlabel="score (%)", ylabel="mean cost per task (USD)")
        cost_ax.set_xlim(-5, 105)
        for ax in (score_ax, cost_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    if any(r.get("offline") for r in records):
        fig.suptitle(OFFLINE_NOTE, color="firebrick")
    fig.tight_layout()
    try:
        fig.savefig(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot write plot {path}: {exc}") from None
    finally:
        plt.close(fig)
