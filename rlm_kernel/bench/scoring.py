"""Scorers, as the paper's benchmarks score: RULER containment (all values), OOLONG's synthetic scoring,
pairs F1, BrowseComp-Plus answers (normalised exact match, standing in for its LLM judge), multiple-choice
letters, and HotpotQA's exact match and F1."""

from __future__ import annotations

import datetime as dt
import re
import string
from collections import Counter
from typing import Any

COMPARISONS = ("more common than", "less common than", "same frequency as")
_DATE_FORMATS = ("%m/%d/%Y", "%Y-%m-%d", "%b %d, %Y", "%B %d, %Y", "%d %B %Y", "%d %b %Y", "%m/%d/%y")
_PAIR = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_EXACT_ANSWER = re.compile(r"(?:exact answer|answer)\s*:\s*(.+)", re.IGNORECASE)
_PUNCTUATION = frozenset(string.punctuation)
_FINAL_ANSWER = re.compile(r"answer\s*:\s*(.+)", re.IGNORECASE)
_CHOICE = re.compile(r"(?:answer(?: is)?\s*:?\s*|^)\(?([ABCD])\)?(?:[\s.,:)]|$)", re.IGNORECASE | re.MULTILINE)


def score_containment(answer: object, gold: str) -> float:
    """RULER's string match: 1 when the gold value occurs in the answer (case-insensitive)."""
    return float(str(gold).lower() in _text(answer).lower())


def score_all_contained(answer: object, gold: str | tuple[str, ...]) -> float:
    """RULER's string_match_all: the share of the gold values that occur in the answer (one value: containment)."""
    values = (gold,) if isinstance(gold, str) else gold
    return sum(score_containment(answer, value) for value in values) / len(values)


def render_oolong(answer_type: str, gold: Any) -> str:
    """The gold answer written in the form the question asks for."""
    if answer_type == "date":
        return f"Date: {gold:%m/%d/%Y}"
    prefix = {"label": "Label", "user": "User"}.get(answer_type, "Answer")
    return f"{prefix}: {gold}"


def score_oolong(answer: object, answer_type: str, gold: Any) -> float:
    """OOLONG's synthetic scoring: exact match, 0.75 ** |error| for numbers, date equality.

    The reply is parsed as OOLONG does: the last comparison phrase when the gold is one, else
    the text after the last colon with `*`, `[` and `]` stripped.
    """
    text = _text(answer)
    if answer_type == "comparison":
        found = [(text.lower().rfind(p), p) for p in COMPARISONS if p in text.lower()]
        return float(bool(found) and max(found)[1] == gold)
    parsed = text.rsplit(":", 1)[-1].strip().strip("*[]'\" .").strip()
    if parsed.lower() == str(gold).lower():
        return 1.0
    if answer_type == "number":
        number = re.search(r"-?\d+", parsed.replace(",", ""))
        return 0.75 ** abs(int(number.group()) - int(gold)) if number else 0.0
    if answer_type == "user":
        digits = re.findall(r"\d+", parsed)
        return float(len(digits) == 1 and int(digits[0]) == int(gold))
    if answer_type == "date":
        return float(parse_date(parsed) == gold)
    return float(str(gold).lower() in parsed.lower())


def parse_date(text: str) -> dt.date | None:
    """A date in any of the usual written forms, or None."""
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            continue
    return None


def parse_pairs(answer: object) -> set[tuple[int, int]]:
    """Every `(a, b)` in the answer, as (lower, higher)."""
    return {(min(a, b), max(a, b)) for a, b in ((int(x), int(y)) for x, y in _PAIR.findall(_text(answer))) if a != b}


def score_pairs(answer: object, gold: frozenset[tuple[int, int]]) -> float:
    """F1 of the predicted pairs against the gold pairs; 1 when both are empty."""
    predicted = parse_pairs(answer)
    if not predicted and not gold:
        return 1.0
    hits = len(predicted & gold)
    if not hits:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(gold)
    return 2 * precision * recall / (precision + recall)


def normalise(text: str) -> str:
    """Lower case, punctuation and articles dropped, spaces collapsed: 'The Velna Bridge.' -> 'velna bridge'."""
    words = re.sub(r"[^a-z0-9]+", " ", text.lower()).split()
    return " ".join(w for w in words if w not in ("a", "an", "the"))


def score_exact(answer: object, gold: str) -> float:
    """1 when the reply's final answer (after the last 'Exact Answer:' or 'Answer:', else all of it) is the gold."""
    text = _text(answer).strip()
    found = _EXACT_ANSWER.findall(text)
    final = found[-1].strip().splitlines()[0] if found else text
    return float(bool(normalise(gold)) and normalise(final) == normalise(gold))


def parse_choice(answer: object) -> str | None:
    """The option letter a multiple-choice reply settles on (the last one it states), or None."""
    found = _CHOICE.findall(_text(answer).strip())
    return found[-1].upper() if found else None


def score_choice(answer: object, gold: str) -> float:
    """LongBench-v2's accuracy: 1 when the chosen letter is the gold letter."""
    return float(parse_choice(answer) == gold)


def normalize_answer(text: str) -> str:
    """HotpotQA's answer normalisation: lower case, punctuation and a/an/the removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def final_answer(answer: object) -> str:
    """The reply's answer: the first line after its last 'Answer:', else the whole reply."""
    text = "" if answer is None else str(answer).strip()
    found = _FINAL_ANSWER.findall(text)
    return found[-1].strip().splitlines()[0] if found else text


def hotpot_exact_match(answer: object, gold: str) -> float:
    """HotpotQA's exact match of the reply's answer after normalisation."""
    return float(normalize_answer(final_answer(answer)) == normalize_answer(gold))


def hotpot_f1(answer: object, gold: str) -> float:
    """Token F1; a yes / no / noanswer on either side must match exactly, as HotpotQA scores it."""
    predicted, truth = normalize_answer(final_answer(answer)), normalize_answer(gold)
    special = ("yes", "no", "noanswer")
    if (predicted in special or truth in special) and predicted != truth:
        return 0.0
    common = Counter(predicted.split()) & Counter(truth.split())
    same = sum(common.values())
    if not same:
        return 0.0
    precision, recall = same / len(predicted.split()), same / len(truth.split())
    return 2 * precision * recall / (precision + recall)


def _text(answer: object) -> str:
    return "" if answer is None else answer if isinstance(answer, str) else str(answer)
