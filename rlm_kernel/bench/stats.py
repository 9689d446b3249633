"""Summary statistics for benchmark results: mean, median, 95th percentile, a bootstrap confidence interval."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Sequence

BOOTSTRAP_RESAMPLES = 2_000


def mean(values: Iterable[float]) -> float:
    items = list(values)
    return math.fsum(items) / len(items) if items else 0.0


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated linearly between the closest ranks."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def bootstrap_ci(values: Sequence[float], level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A percentile-bootstrap interval for the mean (seeded: the same results give the same interval).

    With one value the interval is that value: a single task says nothing about the spread.
    """
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(math.fsum(rng.choices(values, k=n)) / n for _ in range(BOOTSTRAP_RESAMPLES))
    tail = (1 - level) / 2
    return percentile(means, 100 * tail), percentile(means, 100 * (1 - tail))
