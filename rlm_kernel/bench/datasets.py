"""Loaders for the real datasets, from files the user downloaded (nothing is downloaded here).

`rlm bench TASK --data DIR` reads them from this layout under DIR:

    oolong-synth/*.jsonl             rows of oolongbench/oolong-synth (columns id, context_len, dataset,
                                     context_window_text, question, answer, answer_type, context_window_id),
                                     e.g. the parquet files written out with `datasets` as JSON lines;
                                     only dataset == "trec_coarse" is used, as in the paper
    oolong-pairs/oolong-pairs-N.json mit-oasys/oolong-pairs: a JSON list of {id, question, answer: ["(a, b)", ...]}
                                     for context length N; the contexts come from oolong-synth/ above
    browsecomp-plus/queries.jsonl    Tevatron/browsecomp-plus rows, decrypted with that repository's script:
                                     query_id, query, answer, gold_docs and evidence_docs ([{docid, text}])
    browsecomp-plus/corpus.jsonl     Tevatron/browsecomp-plus-corpus rows {docid, text}: fills each query's
                                     documents up to 1,000, as the paper does
    longbench-v2/data.json           THUDM/LongBench-v2's data.json; the domain "Code Repository Understanding"

A missing file is a one-line error that says where to put it.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlm_kernel.bench import scoring
from rlm_kernel.bench.tasks import Task, size_label
from rlm_kernel.core.errors import RLMError
from rlm_kernel.models.policies import count_tokens

REAL_ONLY = ("browsecomp-plus", "codeqa")
LAYOUT_HINT = "layout: rlm_kernel/bench/datasets.py or the README"
BC_DOCUMENTS = 1_000
_SOURCES = {
    "oolong-synth": "huggingface.co/datasets/oolongbench/oolong-synth (as JSON lines)",
    "oolong-pairs": "huggingface.co/datasets/mit-oasys/oolong-pairs",
    "browsecomp-plus": "huggingface.co/datasets/Tevatron/browsecomp-plus (decrypted) and browsecomp-plus-corpus",
    "longbench-v2": "huggingface.co/datasets/THUDM/LongBench-v2",
}
_ANSWER_TYPES: tuple[tuple[str, str], ...] = (
    ("NUMERIC", "number"),
    ("DATE", "date"),
    ("COMPARISON", "comparison"),
    ("LABEL", "label"),
)
_ANSWER_TYPES += (("USER", "user"),)
_DATE_REPR = re.compile(r"datetime\.date\((\d+),\s*(\d+),\s*(\d+)\)")
CODE_DOMAIN = "Code Repository Understanding"


class DataError(RLMError):
    """A dataset file that is missing or not in the documented format: one line for the user."""


def _need(path: Path, folder: str) -> Path:
    if not path.exists():
        raise DataError(f"missing {path}: download {_SOURCES[folder]} and put it there ({LAYOUT_HINT})")
    return path


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}, line {number}: not JSON ({exc.msg})") from None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc.msg})") from None


def _field(row: dict[str, Any], name: str, path: Path) -> Any:
    if name not in row:
        raise DataError(f"{path}: a row has no {name!r} field ({LAYOUT_HINT})")
    return row[name]


def _pick(rows: list[Any], n: int, seed: int, key: str) -> list[Any]:
    """`n` rows in a seeded order that does not depend on the file's order."""
    rows = sorted(rows, key=lambda r: str(r[key]))
    random.Random(f"real:{seed}").shuffle(rows)
    return rows[:n]


def _nearest(available: set[int], size: int) -> int:
    return min(available, key=lambda length: (abs(length - size), length))


# --------------------------------------------------------------------------------------------
# OOLONG-synth trec_coarse and OOLONG-Pairs


def _trec_rows(root: Path) -> list[dict[str, Any]]:
    folder = root / "oolong-synth"
    files = sorted(_need(folder, "oolong-synth").glob("*.jsonl"))
    if not files:
        raise DataError(f"no *.jsonl in {folder}: put {_SOURCES['oolong-synth']} there ({LAYOUT_HINT})")
    return [row for path in files for row in _jsonl(path) if _field(row, "dataset", path) == "trec_coarse"]


def parse_oolong_gold(answer: str, answer_type: str) -> tuple[str, Any]:
    """OOLONG's stored answer (a Python list literal such as "['human being']" or "[28]") as (type, value)."""
    kind = next((ours for theirs, ours in _ANSWER_TYPES if theirs in answer_type.upper()), "text")
    if date := _DATE_REPR.search(answer):
        return "date", dt.date(*map(int, date.groups()))
    try:
        value = ast.literal_eval(answer)
    except (ValueError, SyntaxError):
        value = answer
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return kind, value


def load_oolong(root: Path, sizes: list[int], n: int, seed: int) -> list[Task]:
    rows = _trec_rows(root)
    if not rows:
        raise DataError(f"{root / 'oolong-synth'}: no trec_coarse rows")
    tasks = []
    for size in sizes:
        length = _nearest({int(r["context_len"]) for r in rows}, size)
        for row in _pick([r for r in rows if int(r["context_len"]) == length], n, seed, "id"):
            gold = parse_oolong_gold(str(row["answer"]), str(row.get("answer_type", "")))
            tasks.append(
                Task(
                    id=f"oolong-real-{size_label(length)}-{row['id']}",
                    family="oolong",
                    kind=str(row.get("task", gold[0])),
                    size_tokens=length,
                    context=row["context_window_text"],
                    question=row["question"],
                    gold=gold,
                    meta={"context_window_id": row.get("context_window_id")},
                    source="oolong-synth",
                )
            )
    return tasks


def load_oolong_pairs(root: Path, sizes: list[int], n: int, seed: int) -> list[Task]:
    folder = _need(root / "oolong-pairs", "oolong-pairs")
    available = {
        int(m.group(1)): p for p in folder.glob("oolong-pairs-*.json") if (m := re.search(r"-(\d+)\.json$", p.name))
    }
    if not available:
        raise DataError(f"no oolong-pairs-N.json in {folder}: put {_SOURCES['oolong-pairs']} there ({LAYOUT_HINT})")
    contexts = {(int(r["context_len"]), r.get("context_window_id")): r["context_window_text"] for r in _trec_rows(root)}
    tasks = []
    for size in sizes:
        length = _nearest(set(available), size)
        path = available[length]
        for item in _pick(_json(path), n, seed, "id"):
            window = item.get("context_window_id")
            context = contexts.get((length, window)) or next((c for (k, _), c in contexts.items() if k == length), None)
            if context is None:
                raise DataError(f"no trec_coarse context of length {length} in {root / 'oolong-synth'}")
            answer = _field(item, "answer", path)
            pairs = (
                answer
                if isinstance(answer, str)
                else "\n".join(map(str, (tuple(p) if isinstance(p, list) else p for p in answer)))
            )
            tasks.append(
                Task(
                    id=f"oolong-pairs-real-{size_label(length)}-{item.get('id')}",
                    family="oolong-pairs",
                    kind=f"query {item.get('id')}",
                    size_tokens=length,
                    context=context,
                    question=_field(item, "question", path),
                    gold=frozenset(scoring.parse_pairs(pairs)),
                    source="oolong-pairs",
                )
            )
    return tasks


# --------------------------------------------------------------------------------------------
# BrowseComp-Plus and LongBench-v2 CodeQA


def load_browsecomp_plus(root: Path, sizes: list[int], n: int, seed: int) -> list[Task]:
    folder = root / "browsecomp-plus"
    queries_path = _need(folder / "queries.jsonl", "browsecomp-plus")
    corpus_path = _need(folder / "corpus.jsonl", "browsecomp-plus")
    corpus = {str(_field(d, "docid", corpus_path)): str(_field(d, "text", corpus_path)) for d in _jsonl(corpus_path)}
    tasks = []
    for row in _pick(list(_jsonl(queries_path)), n * len(sizes), seed, "query_id"):
        rng = random.Random(f"browsecomp-plus:{seed}:{row['query_id']}")
        needed = {
            str(d["docid"]): str(d.get("text") or corpus.get(str(d["docid"]), ""))
            for key in ("gold_docs", "evidence_docs")
            for d in row.get(key) or []
        }
        others = [docid for docid in sorted(corpus) if docid not in needed]
        chosen = dict(needed)
        chosen.update((d, corpus[d]) for d in rng.sample(others, max(0, min(len(others), BC_DOCUMENTS - len(needed)))))
        order = list(chosen)
        rng.shuffle(order)
        context = "".join(f"[Document {i}] docid {d}\n{chosen[d]}\n\n" for i, d in enumerate(order, 1))
        tasks.append(
            Task(
                id=f"browsecomp-plus-{row['query_id']}",
                family="browsecomp-plus",
                kind="query",
                size_tokens=count_tokens(context),
                context=context,
                question=str(_field(row, "query", queries_path))
                + " Give your final answer in the form 'Exact Answer: ...'.",
                gold=str(_field(row, "answer", queries_path)),
                meta={"documents": len(order), "evidence": len(needed)},
                source="browsecomp-plus",
            )
        )
    return tasks


def load_codeqa(root: Path, sizes: list[int], n: int, seed: int) -> list[Task]:
    path = _need(root / "longbench-v2" / "data.json", "longbench-v2")
    rows = [r for r in _json(path) if r.get("domain") == CODE_DOMAIN]
    if not rows:
        raise DataError(f"{path}: no rows with domain {CODE_DOMAIN!r}")
    tasks = []
    for row in _pick(rows, n * len(sizes), seed, "_id"):
        options = "\n".join(f"({letter}) {_field(row, f'choice_{letter}', path)}" for letter in "ABCD")
        tasks.append(
            Task(
                id=f"codeqa-{row['_id']}",
                family="codeqa",
                kind=str(row.get("difficulty", "")),
                size_tokens=count_tokens(row["context"]),
                context=row["context"],
                question=f"{_field(row, 'question', path)}\n{options}\nAnswer with the letter of the correct option, in the form 'Answer: (X)'.",
                gold=str(_field(row, "answer", path)).strip().upper(),
                meta={"length": row.get("length"), "sub_domain": row.get("sub_domain")},
                source="longbench-v2",
            )
        )
    return tasks


LOADERS = {
    "oolong": load_oolong,
    "oolong-pairs": load_oolong_pairs,
    "browsecomp-like": load_browsecomp_plus,
    "browsecomp-plus": load_browsecomp_plus,
    "codeqa-like": load_codeqa,
    "codeqa": load_codeqa,
}


def load(family: str, data: str, sizes: list[int], n: int, seed: int) -> list[Task]:
    """The real dataset's tasks for `family` from the folder `data` (sizes: the nearest lengths it has)."""
    if family not in LOADERS:
        raise DataError(f"{family} has no real dataset (those that do: {', '.join(LOADERS)})")
    root = Path(data).expanduser()
    if not root.is_dir():
        raise DataError(f"--data {data}: not a folder ({LAYOUT_HINT})")
    return LOADERS[family](root, sizes, n, seed)
