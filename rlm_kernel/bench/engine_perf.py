"""Engine figures: overhead per iteration, and root-prompt size against context size.

    python -m rlm_kernel.bench.engine_perf [--iterations N]

Both use offline policies through litellm, so they measure the engine, not a model.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rlm_kernel import RLM  # noqa: E402
from rlm_kernel.core.trace import Event  # noqa: E402
from rlm_kernel.models.demo import sample_document  # noqa: E402
from rlm_kernel.models.policies import count_tokens, register_policy  # noqa: E402

QUESTION = "What went wrong with the coolant, and what was done about it?"


def overhead_per_iteration(iterations: int) -> list[float]:
    """Seconds the engine spends per iteration outside the model call, zero-latency model."""
    model = register_policy(lambda messages: "Step.\n```repl\nx = len(context)\nprint(x)\n```", "bench-zero-latency")
    stamps: list[tuple[float, float]] = []

    def on_event(event: Event) -> None:
        if event.kind == "iteration":
            stamps.append((time.perf_counter(), event.data["seconds"]))

    RLM(model=model, max_iterations=iterations, on_event=on_event).completion("abc" * 1000, "q")
    # Between two iteration events: run the block, build the next prompt, then the model call.
    return [(t1 - t0) - model_s for (t0, _), (t1, model_s) in zip(stamps, stamps[1:])]


def root_input_tokens(n_chars: int) -> tuple[int, int]:
    """Root-model input tokens over the demo task at a context size, and its number of root calls."""
    root_tokens, root_calls = 0, 0
    root_id: list[str] = []

    def on_event(event: Event) -> None:
        nonlocal root_tokens, root_calls
        if event.kind == "call_start" and event.parent_id is None:
            root_id.append(event.node_id)
        if event.kind == "iteration" and event.node_id in root_id:
            root_tokens += event.data["usage"]["input_tokens"]
            root_calls += 1

    result = RLM(model="scripted/demo", on_event=on_event).completion(sample_document(n_chars), QUESTION)
    assert result.status == "done", result.error
    return root_tokens, root_calls


_LOAD_EXT = """
import sys, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
started = time.perf_counter()
shell.extension_manager.load_extension("rlm_kernel")
print(time.perf_counter() - started, "litellm" in sys.modules)
"""


def extension_load_seconds(runs: int = 5) -> tuple[float, bool]:
    """Median time of `%load_ext rlm_kernel` in fresh processes, and whether litellm got imported."""
    timings, imported = [], False
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _LOAD_EXT], capture_output=True, text=True, check=True).stdout.split()
        timings.append(float(out[0]))
        imported = imported or out[1] == "True"
    return statistics.median(timings), imported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")

    RLM(model=register_policy(["```repl\nFINAL(1)\n```"], "bench-warmup")).completion("x", "warm up litellm")
    overhead = sorted(overhead_per_iteration(args.iterations))
    median = statistics.median(overhead) * 1000
    p95 = overhead[int(len(overhead) * 0.95)] * 1000
    print(f"engine overhead per iteration ({len(overhead)} iterations, zero-latency model): median {median:.2f} ms, p95 {p95:.2f} ms (target: median < 2 ms)")

    small_chars, large_chars = 10_000, 10_000_000
    small, calls_small = root_input_tokens(small_chars)
    large, calls_large = root_input_tokens(large_chars)
    direct_small = count_tokens(sample_document(small_chars))
    direct_large = count_tokens(sample_document(large_chars))
    print(f"root-model input tokens, demo task: {small:,} at {small_chars:,} chars ({calls_small} calls), {large:,} at {large_chars:,} chars ({calls_large} calls): ratio {large / small:.3f} (target < 1.05)")
    print(f"a direct prompt of the whole context: {direct_small:,} vs {direct_large:,} tokens: ratio {direct_large / direct_small:,.0f}")

    load, imported = extension_load_seconds()
    print(f"%load_ext rlm_kernel: median {load * 1000:.0f} ms over 5 fresh processes; litellm imported: {imported} (target: well under 300 ms, no litellm)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
