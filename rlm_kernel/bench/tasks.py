"""The benchmark task, its scorers by family, and S-NIAH (RULER's single needle), generated offline from a seed.

Recipes follow the paper's benchmarks (Zhang, Kraska and Khattab, "Recursive Language Models",
arXiv 2512.24601): S-NIAH here; OOLONG-like and OOLONG-Pairs-like in `oolong`; BrowseComp-Plus-like
in `browsecomp`; LongBench-v2-CodeQA-like in `codeqa`; loaders for the real datasets in `datasets`.
The same (family, size, seed, index) always gives the same task.

Sizes are in tokens as estimated by `count_tokens` (4 characters a token); a real tokenizer
gives a somewhat different count, which the results record next to the requested size.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlm_kernel.bench import scoring

DEPTHS = 40  # RULER: the needle goes at one of 40 evenly spaced depths

# --------------------------------------------------------------------------------------------
# the task


@dataclass(frozen=True)
class Task:
    """One benchmark item: a context, a question about it, the gold answer and how to score a reply."""

    id: str
    family: str
    kind: str  # the question's kind within the family
    size_tokens: int  # the requested size (real data: the dataset's own length)
    context: str = field(repr=False)
    question: str
    gold: Any  # see GOLD_TEXT: a value, (answer type, value), a frozenset of pairs, or a choice letter
    meta: dict[str, Any] = field(default_factory=dict)
    records: tuple[Any, ...] = field(default=(), repr=False)  # OOLONG families: each line with its hidden label
    source: str = "generated"  # or the dataset file the task was read from

    def score(self, answer: object) -> float:
        return SCORERS[self.family](answer, self.gold)

    def other_scores(self, answer: object) -> dict[str, float]:
        """Scores the benchmark reports beside the main one (HotpotQA: exact match beside F1)."""
        return {name: scorer(answer, self.gold) for name, scorer in OTHER_SCORES.get(self.family, {}).items()}

    @property
    def gold_text(self) -> str:
        """The gold answer as the question asks it to be written."""
        return GOLD_TEXT.get(self.family, str)(self.gold)


SCORERS: dict[str, Callable[[object, Any], float]] = {
    "sniah": scoring.score_all_contained,
    "oolong": lambda answer, gold: scoring.score_oolong(answer, *gold),
    "oolong-pairs": scoring.score_pairs,
    "browsecomp-like": scoring.score_exact,
    "browsecomp-plus": scoring.score_exact,
    "codeqa-like": scoring.score_choice,
    "codeqa": scoring.score_choice,
    "hotpotqa-distractor": scoring.hotpot_f1,
}
OTHER_SCORES: dict[str, dict[str, Callable[[object, Any], float]]] = {
    "hotpotqa-distractor": {"exact_match": scoring.hotpot_exact_match},
}
GOLD_TEXT: dict[str, Callable[[Any], str]] = {
    "sniah": lambda gold: gold if isinstance(gold, str) else ", ".join(gold),
    "oolong": lambda gold: scoring.render_oolong(*gold),
    "oolong-pairs": lambda gold: "\n".join(f"({a}, {b})" for a, b in sorted(gold)) or "[]",
    "codeqa-like": lambda gold: f"Answer: ({gold})",
    "codeqa": lambda gold: f"Answer: ({gold})",
}


DIRECT_INTRO = "Read the text below and answer the question after it."


def direct_prompt(context: str, question: str) -> str:
    """The baseline's single prompt: the whole context, then the question."""
    return f"{DIRECT_INTRO}\n\n<text>\n{context}\n</text>\n\nQuestion: {question}"


def parse_size(text: str) -> int:
    """Tokens from `8k`, `131k`, `1m`, `10M`, `2^17` or a plain number (k = 1,000, m = 1,000,000)."""
    cleaned = text.strip().lower().replace("_", "").replace(",", "")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([km]?)|2\^(\d+)", cleaned)
    if not match:
        raise ValueError(f"bad size {text!r}: use e.g. 8k, 131k, 1m or 2^17")
    if match.group(3):
        return 2 ** int(match.group(3))
    return int(float(match.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2)])


def size_label(tokens: int) -> str:
    """8000 -> '8k', 1000000 -> '1m', 131072 -> '131k'."""
    if tokens >= 1_000_000 and tokens % 100_000 == 0:
        return f"{tokens / 1_000_000:g}m"
    if tokens >= 1_000:
        return f"{round(tokens / 1_000)}k"
    return str(tokens)


def rng_for(family: str, size_tokens: int, seed: int, index: int) -> random.Random:
    # A str seed is hashed with SHA-512 by random.seed: stable across processes and Python versions.
    return random.Random(f"{family}:{size_tokens}:{seed}:{index}")


# --------------------------------------------------------------------------------------------
# S-NIAH

NOISE_LINE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
_ADJECTIVES = (
    "ancient bitter brave calm clever crimson curious eager fancy fierce gentle golden hollow humble icy jolly "
    "lucky mellow nimble odd polite quiet rapid rustic shiny silent sleepy tidy vivid wandering witty zealous"
).split()
_NOUNS = (
    "anchor badger beacon cactus canyon comet dolphin ember falcon fern glacier harbor island jackal kettle "
    "lantern meadow nebula orchard otter pebble quartz raven saddle thistle tulip valley walrus willow zephyr"
).split()


def sniah(size_tokens: int, seed: int = 0, index: int = 0) -> Task:
    """RULER's single needle ("One of the special magic numbers for {key} is: {value}.") in noise lines."""
    rng = rng_for("sniah", size_tokens, seed, index)
    key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
    value = str(rng.randint(1_000_000, 9_999_999))
    depth_index = rng.randrange(DEPTHS)
    needle = f"One of the special magic numbers for {key} is: {value}.\n"
    lines = max(1, (size_tokens * 4 - len(needle)) // len(NOISE_LINE))
    before = round(depth_index / (DEPTHS - 1) * lines)
    # Built with one join: a 10M-token haystack is 40 MB, and + would copy it several times.
    context = "".join((NOISE_LINE * before, needle, NOISE_LINE * (lines - before)))
    return Task(
        id=f"sniah-{size_label(size_tokens)}-s{seed}-{index}",
        family="sniah",
        kind="single-needle",
        size_tokens=size_tokens,
        context=context,
        question=f"What is the special magic number for {key} mentioned in the provided text?",
        gold=value,
        meta={"key": key, "depth": depth_index / (DEPTHS - 1), "depth_index": depth_index},
    )
