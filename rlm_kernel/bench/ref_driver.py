"""The reference side of `rlm bench perf` figure 5: one task run by the reference package `rlms`.

It runs under the benchmark environment's interpreter (.venv-bench-ref, made by `make bench-ref`)
and imports only `rlms` and the standard library, never rlm_kernel, whose dependencies are not there.

    .venv-bench-ref/bin/python -I rlm_kernel/bench/ref_driver.py URL QUESTION CONTEXT_FILE

It prints one JSON line: the completion call's seconds, the answer and the process's peak RSS.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    url, question, path = argv
    from rlm import RLM  # the reference package (PyPI: rlms)

    with open(path, encoding="utf-8") as file:
        context = file.read()
    rlm = RLM(
        backend="openai",
        backend_kwargs={"model_name": "policy", "base_url": url, "api_key": "sk-no-key-required"},
        max_iterations=10,
    )
    started = time.perf_counter()
    result = rlm.completion(context, root_prompt=question)
    seconds = time.perf_counter() - started
    # VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts at its parent's RSS at fork.
    with open("/proc/self/status", encoding="ascii") as status:
        peak_mb = int(next(line.split()[1] for line in status if line.startswith("VmHWM:"))) / 1024
    print(json.dumps({"seconds": seconds, "answer": str(result.response), "peak_rss_mb": peak_mb}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
