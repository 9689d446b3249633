"""rlm_kernel's side of figure 5 (perf_reference.py), one task in a fresh process; the same output as ref_driver.py.

    python -m rlm_kernel.bench.figures.side_child URL QUESTION CONTEXT_FILE

It imports what `rlm run` imports (the CLI) and nothing of the figure's own rig (its server, tasks and
statistics), so that the process's time and memory are those of `rlm run`; it runs on the default settings, so
the transport is the default's pick (direct, for this server).
"""

from __future__ import annotations

import json
import sys
import time

import rlm_kernel.cli  # noqa: F401 - what `rlm run` imports before it reads the context
from rlm_kernel.core import RLM


def main(argv: list[str]) -> int:
    url, question, path = argv
    with open(path, encoding="utf-8") as file:
        context = file.read()
    started = time.perf_counter()
    result = RLM(model="openai/policy", api_base=url, max_iterations=10).completion(context, question)
    seconds = time.perf_counter() - started
    # VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts at its parent's RSS at fork.
    with open("/proc/self/status", encoding="ascii") as status:
        peak_mb = int(next(line.split()[1] for line in status if line.startswith("VmHWM:"))) / 1024
    print(json.dumps({"seconds": seconds, "answer": str(result.answer), "peak_rss_mb": peak_mb}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
