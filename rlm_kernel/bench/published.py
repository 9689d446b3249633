"""Published reference numbers: the paper's Table 1 (Zhang, Kraska and Khattab, "Recursive Language
Models", arXiv 2512.24601 v2). These are the authors' results on the real benchmarks, printed beside
ours for reference only; they are never our measurements, and our offline families are stand-ins
for those benchmarks, not the benchmarks themselves.

Scores are percentages (OOLONG-Pairs: F1); costs are the paper's mean API cost per query in USD
(None where the paper gives none). Base models marked * in the paper hit their context limit on
some instances.
"""

from __future__ import annotations

from typing import NamedTuple

SOURCE = "published reference numbers, Table 1 of arXiv 2512.24601 v2 (the paper's, not ours)"
BENCHMARKS = ("CodeQA", "BrowseComp+ 1K", "OOLONG", "OOLONG-Pairs")


class Published(NamedTuple):
    score: float
    cost_usd: float | None


# (model, mode) -> benchmark -> (score, mean cost); our mode names: direct = the paper's base model.
TABLE_1: dict[tuple[str, str], dict[str, Published]] = {
    ("GPT-5", "direct"): {
        "CodeQA": Published(24.0, 0.13),
        "BrowseComp+ 1K": Published(0.0, None),
        "OOLONG": Published(44.0, 0.14),
        "OOLONG-Pairs": Published(0.1, 0.16),
    },
    ("GPT-5", "rlm"): {
        "CodeQA": Published(62.0, 0.11),
        "BrowseComp+ 1K": Published(91.3, 0.99),
        "OOLONG": Published(56.5, 0.43),
        "OOLONG-Pairs": Published(58.0, 0.33),
    },
    ("GPT-5", "rlm-no-subcalls"): {
        "CodeQA": Published(58.0, 0.18),
        "BrowseComp+ 1K": Published(88.0, 0.44),
        "OOLONG": Published(36.0, 0.37),
        "OOLONG-Pairs": Published(43.9, 0.69),
    },
    ("Qwen3-Coder-480B", "direct"): {
        "CodeQA": Published(20.0, 0.13),
        "BrowseComp+ 1K": Published(0.0, None),
        "OOLONG": Published(36.0, 0.06),
        "OOLONG-Pairs": Published(0.1, 0.05),
    },
    ("Qwen3-Coder-480B", "rlm"): {
        "CodeQA": Published(56.0, 0.92),
        "BrowseComp+ 1K": Published(44.7, 0.84),
        "OOLONG": Published(48.0, 0.61),
        "OOLONG-Pairs": Published(23.1, 1.02),
    },
    ("Qwen3-Coder-480B", "rlm-no-subcalls"): {
        "CodeQA": Published(66.0, 0.18),
        "BrowseComp+ 1K": Published(46.0, 0.82),
        "OOLONG": Published(43.5, 0.32),
        "OOLONG-Pairs": Published(17.3, 1.77),
    },
}
MODELS = ("GPT-5", "Qwen3-Coder-480B")


def scores_beside(benchmark: str | None, mode: str) -> str:
    """'GPT-5 56.5, Qwen3-Coder-480B 48.0' for a benchmark and mode, or '-' where the table has none."""
    if benchmark is None:
        return "-"
    found = [(m, TABLE_1.get((m, mode), {}).get(benchmark)) for m in MODELS]
    return ", ".join(f"{m} {p.score:.1f}" for m, p in found if p) or "-"
