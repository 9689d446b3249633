"""The reference side of `rlm bench perf` figure 5 and `rlm bench compare`: one task run by the reference package `rlms`.

It runs under the benchmark environment's interpreter (.venv-bench-ref, made by `make bench-ref`)
and imports only `rlms` and the standard library, never rlm_kernel, whose dependencies are not there.

    .venv-bench-ref/bin/python -I rlm_kernel/bench/ref_driver.py URL QUESTION CONTEXT_FILE [MODEL [MAX_ITERATIONS]]

It prints one JSON line: the completion call's seconds, the answer, the process's peak RSS and rlms's
own usage summary (calls and tokens per model). The API key, if any, comes from OPENAI_API_KEY.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    url, question, path, *rest = argv
    model = rest[0] if rest else "policy"
    max_iterations = int(rest[1]) if len(rest) > 1 else 10
    from rlm import RLM  # the reference package (PyPI: rlms)

    with open(path, encoding="utf-8") as file:
        context = file.read()
    rlm = RLM(
        backend="openai",
        backend_kwargs={
            "model_name": model,
            "base_url": url,
            "api_key": os.environ.get("OPENAI_API_KEY", "sk-no-key-required"),
        },
        max_iterations=max_iterations,
    )
    started = time.perf_counter()
    result = rlm.completion(context, root_prompt=question)
    seconds = time.perf_counter() - started
    # VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts at its parent's RSS at fork.
    with open("/proc/self/status", encoding="ascii") as status:
        peak_mb = int(next(line.split()[1] for line in status if line.startswith("VmHWM:"))) / 1024
    summary = getattr(result, "usage_summary", None)
    usage = summary.to_dict() if summary is not None and hasattr(summary, "to_dict") else {}
    print(json.dumps({"seconds": seconds, "answer": str(result.response), "peak_rss_mb": peak_mb, "usage": usage}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
