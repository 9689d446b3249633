"""One measurement of figure 8, in a fresh process: `python records_probe.py RECORDS CHILDREN`.

Run by path (not as a module) so that any environment's rlm_kernel can be measured, an older release's
included: it uses only `RLM` and `register_policy`. Prints one JSON line.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from rlm_kernel.core import RLM
from rlm_kernel.models.policies import register_policy

_FENCE = "`" * 3
ROOT_QUERY = "How many records does each child see?"
CHILD_QUERY = "Count your records."


def _status(field: str) -> float:
    """A /proc/self/status memory field in MB (VmRSS: now; VmHWM: the peak since the last reset)."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return int(next(line.split()[1] for line in lines if line.startswith(f"{field}:"))) / 1024


def _reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux 4.0+; elsewhere the peak keeps the warm-up's)."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def records(count: int) -> list[dict[str, Any]]:
    """`count` records of about 300 bytes of Python objects each: four fields, as a JSONL export has them."""
    return [
        {"id": i, "user": f"user-{i % 5000}", "text": f"message {i}: " + "the quick brown fox " * 3, "score": i / 7}
        for i in range(count)
    ]


class Policy:
    """The root hands the whole context to `children` child RLMs (or reads its length); each child answers at once.
    Remembers when the first request arrived."""

    def __init__(self, children: int) -> None:
        self.children = children
        self.first_request: float | None = None

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        if self.first_request is None:
            self.first_request = time.perf_counter()
        if CHILD_QUERY in messages[1]["content"]:
            code = "FINAL(len(context))"
        elif self.children:
            code = f"FINAL(rlm_query_batched([(context, {CHILD_QUERY!r})] * {self.children}))"
        else:
            code = "FINAL(len(context))"
        return f"{_FENCE}repl\n{code}\n{_FENCE}"


def measure(count: int, children: int) -> dict[str, Any]:
    policy = Policy(children)
    model = register_policy(policy, "bench-records")
    options: dict[str, Any] = {"model": model, "max_depth": 2, "concurrency": max(children, 1)}
    RLM(**options).completion(records(100), "warm up")  # imports and first-call costs are not the context's
    policy.first_request = None
    baseline = _status("VmRSS")
    _reset_peak()
    context = records(count)
    context_mb = _status("VmRSS") - baseline
    started = time.perf_counter()
    result = RLM(**options).completion(context, ROOT_QUERY)
    seconds = time.perf_counter() - started
    assert policy.first_request is not None
    return {
        "records": count,
        "children": children,
        "context_mb": context_mb,
        "peak_over_baseline_mb": _status("VmHWM") - baseline,
        "first_request_s": policy.first_request - started,
        "run_s": seconds,
        "status": result.status,
        "answer": str(result.answer)[:200],
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]))))
