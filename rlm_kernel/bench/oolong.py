"""OOLONG-like and OOLONG-Pairs-like tasks: dated, user-tagged questions whose categories a reader must infer.

Each context line is `Date: ... || User: N || Instance: <question>`; the questions come from the
grammar in `questions` (TREC-coarse-like, built so that cue words mislead), each with a hidden
category. OOLONG-like questions aggregate over the categories (counts, comparisons, the most
frequent user, date ranges); OOLONG-Pairs-like questions ask for every pair of users whose
categories meet a condition. Every gold answer is computed from the hidden labels.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlm_kernel.bench import questions, scoring
from rlm_kernel.bench.questions import LABELS
from rlm_kernel.bench.tasks import Task, rng_for, size_label

# --------------------------------------------------------------------------------------------
# OOLONG-like records

_FIRST_DATE = dt.date(2022, 1, 1)
_DAYS = 3 * 365

HEADER = (
    "The following lines contain {lines:,} general-knowledge questions, one per line. Each line has a date, a user ID "
    "(user IDs are not unique: one user may ask several questions) and the question itself, the instance. The answer "
    "to each question belongs to exactly one of 6 categories: 'numeric value', 'entity', 'location', 'description and "
    "abstract concept', 'abbreviation', 'human being'. The categories are not given: infer them from the questions.\n\n"
)


@dataclass(frozen=True)
class Record:
    date: dt.date
    user: int
    label: str  # hidden: never written into the context
    instance: str

    def line(self) -> str:
        return f"Date: {format_date(self.date)} || User: {self.user} || Instance: {self.instance}\n"


def format_date(date: dt.date) -> str:
    """'Jun 16, 2024', the way OOLONG writes dates in its contexts."""
    return f"{date:%b} {date.day}, {date.year}"


def oolong_records(
    rng: random.Random, size_tokens: int, users_per_line: float, max_users: int = 90_000
) -> tuple[str, list[Record]]:
    """The context (header plus one line per record, up to `size_tokens`) and its records with their labels."""
    budget = size_tokens * 4 - len(HEADER) - 8  # room for the header's line count
    n_users = min(max_users, max(6, round(budget / 90 * users_per_line)))
    users = rng.sample(range(10_000, 100_000), n_users)
    # Skewed, distinct weights make "most frequent" answers unique far more often than uniform ones would.
    # Cumulative weights: choices() would otherwise re-add every weight on every draw.
    user_cum = list(itertools.accumulate(1 / (rank + 1) ** 0.7 for rank in range(n_users)))
    label_cum = list(itertools.accumulate(rng.uniform(0.4, 2.0) for _ in LABELS))
    records: list[Record] = []
    used = 0
    while True:
        label = rng.choices(LABELS, cum_weights=label_cum)[0]
        record = Record(
            _FIRST_DATE + dt.timedelta(days=rng.randrange(_DAYS)),
            rng.choices(users, cum_weights=user_cum)[0],
            label,
            questions.instance(rng, label),
        )
        used += len(record.line())
        if used > budget and records:
            break
        records.append(record)
    context = HEADER.format(lines=len(records)) + "".join(r.line() for r in records)
    return context, records


# --------------------------------------------------------------------------------------------
# OOLONG-like questions

OOLONG_KINDS = ("most_common", "least_common", "count", "compare", "user_most", "range_count", "first_date")


def _unique_extreme(counts: Counter, largest: bool) -> Any:
    """The key with the strictly largest (or smallest) count, or None on a tie."""
    ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=largest)
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def _oolong_question(kind: str, rng: random.Random, records: list[Record]) -> tuple[str, tuple[str, Any]] | None:
    """(question, (answer type, gold)) for one kind, or None when its answer would not be unique."""
    labels = Counter({label: 0 for label in LABELS})
    labels.update(r.label for r in records)
    label = rng.choice(LABELS)
    if kind in ("most_common", "least_common"):
        answer = _unique_extreme(labels, kind == "most_common")
        word = "most" if kind == "most_common" else "least"
        question = f"In the data above, which of the 6 categories is the {word} common? Give your final answer in the form 'Label: answer'."
        return None if answer is None else (question, ("label", answer))
    if kind == "count":
        question = f"In the data above, how many data points should be classified as label '{label}'? Give your final answer in the form 'Answer: number'."
        return question, ("number", labels[label])
    if kind == "compare":
        other = rng.choice([x for x in LABELS if x != label])
        a, b = labels[label], labels[other]
        phrase = scoring.COMPARISONS[0] if a > b else scoring.COMPARISONS[1] if a < b else scoring.COMPARISONS[2]
        question = (
            f"In the data above, is label '{label}' more common, less common, or the same frequency as label '{other}'? "
            f"Give your final answer in the form 'Answer: {label} is [X] {other}', where [X] is 'more common than', "
            "'less common than', or 'same frequency as'."
        )
        return question, ("comparison", phrase)
    if kind == "user_most":
        user = _unique_extreme(Counter(r.user for r in records if r.label == label), True) if labels[label] else None
        question = f"In the data above, which user has the most instances with the label '{label}'? Give your final answer in the form 'User: id'."
        return None if user is None else (question, ("user", user))
    if kind == "range_count":
        start = _FIRST_DATE + dt.timedelta(days=rng.randrange(_DAYS - 365))
        end = start + dt.timedelta(days=rng.randrange(60, 365))
        count = sum(1 for r in records if r.label == label and start <= r.date <= end)
        question = (
            f"In the data above, how many data points with the label '{label}' are dated between {format_date(start)} and "
            f"{format_date(end)}, both included? Give your final answer in the form 'Answer: number'."
        )
        return question, ("number", count)
    if kind == "first_date":
        dates = [r.date for r in records if r.label == label]
        question = f"In the data above, on which date does the label '{label}' occur for the first time? Give your final answer in the form 'Date: MM/DD/YYYY'."
        return (question, ("date", min(dates))) if dates else None
    raise ValueError(f"unknown OOLONG question kind {kind!r}")


def oolong(size_tokens: int, seed: int = 0, index: int = 0) -> Task:
    """An OOLONG-like task: aggregate over the inferred categories of every line."""
    rng = rng_for("oolong", size_tokens, seed, index)
    context, records = oolong_records(rng, size_tokens, users_per_line=0.1)
    # Kinds take turns so that n tasks cover them evenly; a kind whose answer would tie yields to the next.
    for step in range(len(OOLONG_KINDS) * 4):
        kind = OOLONG_KINDS[(index + step) % len(OOLONG_KINDS)]
        made = _oolong_question(kind, rng, records)
        if made is not None:
            question, gold = made
            return Task(
                id=f"oolong-{size_label(size_tokens)}-s{seed}-{index}",
                family="oolong",
                kind=kind,
                size_tokens=size_tokens,
                context=context,
                question=question,
                gold=gold,
                meta={"lines": len(records)},
                records=tuple(records),
            )
    raise AssertionError("every OOLONG question kind tied")  # count and range_count never tie


# --------------------------------------------------------------------------------------------
# OOLONG-Pairs-like

PAIR_KINDS = ("either", "either_after", "asymmetric", "exactly_one")
PAIRS_FORMAT = (
    " List all pairs of user IDs (no duplicate pairs, lower ID first), sorted by the first user ID, in the format "
    "(user_id_1, user_id_2), one pair per line. If there is no such pair, answer []."
)


def _pair_condition(kind: str, rng: random.Random) -> tuple[str, Callable[[dict[str, Any], dict[str, Any]], bool]]:
    """The condition's wording and a predicate over two users' label profiles."""
    a, b, c = rng.sample(LABELS, 3)
    if kind == "either":
        text = f"both users have at least one instance with the label '{a}' or the label '{b}'"
        return text, lambda u, v: u["count"][a] + u["count"][b] > 0 and v["count"][a] + v["count"][b] > 0
    if kind == "either_after":
        cutoff = _FIRST_DATE + dt.timedelta(days=rng.randrange(_DAYS // 4, 3 * _DAYS // 4))
        text = (
            f"both users have at least one instance with the label '{a}' or the label '{b}', and all instances with the "
            f"label '{c}' of both users are dated after {format_date(cutoff)}"
        )

        def either_after(u: dict[str, Any], v: dict[str, Any]) -> bool:
            return all(p["count"][a] + p["count"][b] > 0 and all(d > cutoff for d in p["dates"][c]) for p in (u, v))

        return text, either_after
    if kind == "asymmetric":
        text = (
            f"one user has at least two instances with the label '{a}', and the other user has at least one instance "
            f"with the label '{b}' and at least one instance with the label '{c}'"
        )

        def asymmetric(u: dict[str, Any], v: dict[str, Any]) -> bool:
            def second(p: dict[str, Any]) -> bool:
                return p["count"][b] >= 1 and p["count"][c] >= 1

            return (u["count"][a] >= 2 and second(v)) or (v["count"][a] >= 2 and second(u))

        return text, asymmetric
    if kind == "exactly_one":
        text = f"both users have exactly one instance with the label '{a}'"
        return text, lambda u, v: u["count"][a] == 1 and v["count"][a] == 1
    raise ValueError(f"unknown pair question kind {kind!r}")


def user_profiles(records: list[Record]) -> dict[int, dict[str, Any]]:
    """Per user: how many instances of each label, and the dates of each label's instances."""
    profiles: dict[int, dict[str, Any]] = defaultdict(lambda: {"count": Counter(), "dates": defaultdict(list)})
    for r in records:
        profiles[r.user]["count"][r.label] += 1
        profiles[r.user]["dates"][r.label].append(r.date)
    return profiles


def oolong_pairs(size_tokens: int, seed: int = 0, index: int = 0) -> Task:
    """An OOLONG-Pairs-like task: every pair of users whose inferred categories meet a condition."""
    rng = rng_for("oolong-pairs", size_tokens, seed, index)
    # Capped users keep the gold set (quadratic in users) listable at large sizes.
    context, records = oolong_records(rng, size_tokens, users_per_line=0.15, max_users=600)
    kind = PAIR_KINDS[index % len(PAIR_KINDS)]
    condition, holds = _pair_condition(kind, rng)
    profiles = user_profiles(records)
    users = sorted(profiles)
    gold = frozenset((u, v) for i, u in enumerate(users) for v in users[i + 1 :] if holds(profiles[u], profiles[v]))
    return Task(
        id=f"oolong-pairs-{size_label(size_tokens)}-s{seed}-{index}",
        family="oolong-pairs",
        kind=kind,
        size_tokens=size_tokens,
        context=context,
        question=f"In the data above, list all pairs of user IDs where {condition}.{PAIRS_FORMAT}",
        gold=gold,
        meta={"lines": len(records), "users": len(users)},
        records=tuple(records),
    )
