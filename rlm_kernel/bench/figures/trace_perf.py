"""Trace figures: notebook export time for a 1,000-node call tree, and JSONL trace size against context size.

    python -m rlm_kernel.bench.figures.trace_perf

Both use real runs of offline policies through litellm: a root that fans out 999 child RLMs
with rlm_query_batched (max_depth=2), and a root that iterates 20 times over contexts of
1 KB, 1 MB and 100 MB while its JSONL trace is written.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rlm_kernel import RLM
from rlm_kernel.core.trace import Trace
from rlm_kernel.formats.notebook import write_notebook
from rlm_kernel.models.policies import register_policy

CHILDREN = 999
ITERATIONS = 20
SIZES = {"1 KB": 1_000, "1 MB": 1_000_000, "100 MB": 100_000_000}
_FAN_OUT = "pairs = [(f'part {i}: ' + context[:40], f'What does part {i} say?') for i in range(%d)]\nanswers = rlm_query_batched(pairs)\nprint(len(answers))"


def fan_out_policy(messages: list[dict[str, Any]]) -> str:
    """Root: one fan-out block, then FINAL; each child: look, then FINAL, in one block."""
    if "Question: What does part" in messages[1]["content"]:
        return "Read it.\n```repl\nprint(len(context), context[:30])\nFINAL(context[:12])\n```"
    if len(messages) == 2:
        return "Fan out.\n```repl\n" + _FAN_OUT % CHILDREN + "\n```"
    return "Done.\n```repl\nFINAL(len(answers))\n```"


def fan_out_trace() -> Trace:
    """A real run whose call tree has 1 + CHILDREN nodes."""
    model = register_policy(fan_out_policy, "bench-fan-out")
    result = RLM(model=model, max_depth=2, max_iterations=3).completion("x" * 1_000, "How many parts are there?")
    assert result.status == "done" and len(result.trace.nodes) == CHILDREN + 1, (result.status, result.error)
    return result.trace


def export_seconds(trace: Trace, context: str, runs: int = 5) -> tuple[list[float], int, int]:
    """Seconds to write `trace` as a notebook, run after run (the first imports the exporter's modules); cells; bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tree.ipynb"
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            exported = write_notebook(trace, path, context=context)
            timings.append(time.perf_counter() - started)
        return timings, exported.cells, path.stat().st_size


def _context(n_chars: int) -> str:
    line = "2026-11-21 07:00 station log: pressure nominal, coolant nominal, crew on schedule.\n"
    return (line * (n_chars // len(line) + 1))[:n_chars]


def trace_bytes(n_chars: int) -> int:
    """Bytes of the JSONL trace of a 20-iteration run over a context of `n_chars` characters."""
    step = "Look again.\n```repl\nprint(len(context))\nprint(peek(0, 200))\nprint(len(grep('nominal')) > 0)\n```"
    model = register_policy([step] * (ITERATIONS - 1) + ["```repl\nFINAL('ok')\n```"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.jsonl"
        result = RLM(model=model, max_iterations=ITERATIONS, trace_path=str(path)).completion(
            _context(n_chars), "Is all nominal?"
        )
        assert result.status == "done" and len(result.trace.root.iterations) == ITERATIONS, result.error  # type: ignore[union-attr]
        return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )

    started = time.perf_counter()
    trace = fan_out_trace()
    timings, cells, size = export_seconds(trace, "x" * 1_000)
    print(
        f"notebook export of a {len(trace.nodes):,}-node trace (real run, {time.perf_counter() - started:.1f} s): "
        f"median {statistics.median(timings) * 1000:.0f} ms over {len(timings)}, first {timings[0] * 1000:.0f} ms "
        f"(with imports), {cells:,} cells, {size / 1e6:.1f} MB (target < 1 s)"
    )

    sizes = {label: trace_bytes(n) for label, n in SIZES.items()}
    smallest = min(sizes.values())
    for label, size in sizes.items():
        print(
            f"JSONL trace, {ITERATIONS} iterations over a {label} context: {size:,} bytes, "
            f"{size / ITERATIONS:,.0f} bytes per iteration (x{size / smallest:.3f} the smallest)"
        )
    print(f"target: size independent of the context; well under 1 MB at 100 MB ({sizes['100 MB'] / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
