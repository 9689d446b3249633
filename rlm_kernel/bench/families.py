"""Every task family by name: the offline generators, and which real dataset each one stands in for."""

from __future__ import annotations

from collections.abc import Callable

from rlm_kernel.bench import browsecomp, codeqa, hotpotqa, oolong
from rlm_kernel.bench.tasks import Task, sniah

GENERATORS: dict[str, Callable[[int, int, int], Task]] = {
    "sniah": sniah,
    "oolong": oolong.oolong,
    "oolong-pairs": oolong.oolong_pairs,
    "browsecomp-like": browsecomp.browsecomp_like,
    hotpotqa.FAMILY: hotpotqa.task,  # real text: RULER's copy of HotpotQA (installed, or --data DIR)
    "codeqa-like": codeqa.codeqa_like,
}
FAMILIES = tuple(GENERATORS)
# The paper's benchmark (Table 1's column) that each family reproduces, offline or from the real files.
BENCHMARK = {
    "oolong": "OOLONG",
    "oolong-pairs": "OOLONG-Pairs",
    "browsecomp-like": "BrowseComp+ 1K",
    "browsecomp-plus": "BrowseComp+ 1K",
    # hotpotqa-distractor: no published number (the paper does not run HotpotQA); see bench/hotpotqa.py
    "codeqa-like": "CodeQA",
    "codeqa": "CodeQA",
}


def make_tasks(family: str, sizes: list[int], n: int, seed: int = 0) -> list[Task]:
    """`n` generated tasks of each size, smallest size first."""
    if family not in GENERATORS:
        raise ValueError(f"unknown task {family!r} (known: {', '.join(FAMILIES)})")
    return [GENERATORS[family](size, seed, index) for size in sizes for index in range(n)]
