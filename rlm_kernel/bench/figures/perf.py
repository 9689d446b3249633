"""Performance figures: what rlm_kernel costs in time, tokens and memory, and how it compares with `rlms`.

    rlm bench perf                     # every figure (about 5 minutes on 2 cores)
    rlm bench perf --quick             # a smaller, faster version of each
    rlm bench perf --figures 2,5       # some figures only

1. engine overhead per iteration, zero-latency scripted model
2. fan-out: 256 llm_query_batched prompts at 200 ms through `rlm serve-model`, against ceil(256/c) * 0.2 s
3. root-prompt flatness: root input tokens at 10K, 1M and 10M characters of context
4. memory: peak RSS of 10 iterations over a 256 MB context
5. side by side with the reference package `rlms` (needs `make bench-ref`): one server, one policy, same tasks
6. scale-out: fan-out through a litellm Router over two `rlm serve-model` deployments
7. the first `%%rlm` in a fresh kernel: its delay before the first model request
8. contexts of records: a 1M-record list to the first request, and peak memory, alone and shared by 4 children

Every figure uses offline scripted policies, in process or over HTTP on 127.0.0.1: they
measure the engine and the HTTP path, never a model.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rlm_kernel.bench import UsageError
from rlm_kernel.bench.compare import DEFAULT_REF_PYTHON
from rlm_kernel.bench.figures.perf_kernel import figure_first_cell
from rlm_kernel.bench.figures.perf_records import figure_records
from rlm_kernel.bench.figures.perf_reference import figure_side_by_side
from rlm_kernel.bench.offline import register as register_bench
from rlm_kernel.bench.serving import environment_kept, peak_rss_mb, serve, server_stats
from rlm_kernel.core import RLM, Event
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import Completion
from rlm_kernel.core.lm.support import estimate_tokens
from rlm_kernel.models.demo import sample_document
from rlm_kernel.models.policies import count_tokens, register_policy
from rlm_kernel.models.server import ModelServer

DEMO_QUESTION = "What went wrong with the coolant, and what was done about it?"
FIGURES = (1, 2, 3, 4, 5, 6, 7, 8)
_FENCE = "`" * 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument(
        "--figures", default=",".join(map(str, FIGURES)), help="comma-separated figure numbers (default: all)"
    )
    parser.add_argument(
        "--ref-python", default=DEFAULT_REF_PYTHON, help="interpreter of the environment with `rlms` (figure 5)"
    )
    parser.add_argument(
        "--before-python", help="figure 8 also measures the rlm_kernel of this interpreter (an older checkout's)"
    )
    parser.add_argument("--out", help="also write the figures as JSON to this file")
    parser.add_argument(
        "--fan-out-paths", help=f"figure 2's paths, comma-separated (default: all of {','.join(FAN_OUT_PATHS)})"
    )


def run(args: argparse.Namespace) -> int:
    try:
        chosen = sorted({int(f) for f in args.figures.split(",") if f.strip()})
    except ValueError:
        raise UsageError(f"--figures takes numbers from {FIGURES}, not {args.figures!r}") from None
    if not chosen or not set(chosen) <= set(FIGURES):
        raise UsageError(f"--figures takes numbers from {FIGURES}, not {args.figures!r}")
    print(f"machine: {machine()}")
    options = [*(["--quick"] if args.quick else []), "--figures", ",".join(map(str, chosen))]
    if 5 in chosen and args.ref_python != DEFAULT_REF_PYTHON:
        options += ["--ref-python", args.ref_python]
    if 8 in chosen and args.before_python:
        options += ["--before-python", args.before_python]
    print(f"command: {shlex.join(['rlm', 'bench', 'perf', *options])}")
    register_bench()
    RLM(model=register_policy([f"{_FENCE}repl\nFINAL(1)\n{_FENCE}"], "bench-warmup")).completion("x", "warm up litellm")
    figures: dict[str, Any] = {"machine": machine()}
    runners: dict[int, Callable[[argparse.Namespace], dict[Any, Any]]] = {
        1: figure_overhead,
        2: figure_fan_out,
        3: figure_flatness,
        4: figure_memory,
        5: figure_side_by_side,
        6: figure_scale_out,
        7: figure_first_cell,
        8: figure_records,
    }
    for number in chosen:
        print()
        started = time.perf_counter()
        figures[str(number)] = runners[number](args)
        print(
            f"  ({time.perf_counter() - started:.0f} s; reproduce: rlm bench perf --figures {number}{' --quick' if args.quick else ''})"
        )
    figures["load_average_after"] = os.getloadavg()
    print(f"\nload average after: {', '.join(f'{x:.1f}' for x in figures['load_average_after'])}")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2), encoding="utf-8")
        print(f"\nfigures: {args.out}")
    return 0


def machine() -> str:
    """CPU, cores, Python, and how busy the machine was (timings on a shared machine vary)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):  # no /proc, or no model name (some ARM kernels)
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}; load average {load}"
    )


# --------------------------------------------------------------------------------------------
# 1. engine overhead per iteration


class _InstantLM:
    """An LM that answers at once without litellm: what is left of an iteration is the engine's own work."""

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def estimate_tokens(self, messages: list[dict[str, Any]]) -> int:
        return estimate_tokens(messages)

    def price(self, model: str, input_tokens: int, output_tokens: int) -> float:
        return 0.0

    async def acomplete(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str,
        max_output_tokens: int | None,
        timeout: float,
        params: Any = None,
        on_text: Any = None,
    ) -> Completion:
        if on_text is not None:
            on_text(self.reply)
        return Completion(self.reply, Usage(1, 10, 10), model, 0.0)


def overhead_per_iteration(iterations: int, path: str = "litellm") -> list[float]:
    """Seconds the engine spends per iteration outside the model call, zero-latency model.

    `path`: "litellm" (the scripted provider; this includes litellm's own per-call work that falls
    outside the timed call, cost lookup and logging callbacks), "direct" (the default transport,
    over HTTP to an in-process server: pricing, usage, the response's parsing) or "engine" (an LM
    object that answers at once: only the engine's own work).
    """
    reply = f"Step.\n{_FENCE}repl\nx = len(context)\nprint(x)\n{_FENCE}"
    stamps: list[tuple[float, float]] = []

    def on_event(event: Event) -> None:
        if event.kind == "iteration":
            stamps.append((time.perf_counter(), event.data["seconds"]))

    with contextlib.ExitStack() as stack:
        options: dict[str, Any] = {"model": "instant", "lm": _InstantLM(reply)}
        if path == "litellm":
            options = {"model": register_policy(lambda messages: reply, "bench-zero-latency")}
        elif path == "direct":
            server = stack.enter_context(ModelServer(lambda messages: reply))
            options = {"model": "openai/policy", "api_base": server.url}
        RLM(max_iterations=iterations, on_event=on_event, **options).completion("abc" * 1000, "q")
    # Between two iteration events: run the block, build the next prompt, then the model call.
    return [(t1 - t0) - model_s for (t0, _), (t1, model_s) in itertools.pairwise(stamps)]


def figure_overhead(args: argparse.Namespace) -> dict[str, Any]:
    iterations = 100 if args.quick else 300
    print(f"1. engine overhead per iteration ({iterations} iterations, zero-latency model; target: median < 2 ms)")
    rows = {}
    for label, path in (
        ("default transport (direct, over HTTP)", "direct"),
        ("through litellm (scripted provider)", "litellm"),
        ("engine alone (an LM object, no litellm)", "engine"),
    ):
        overhead = sorted(overhead_per_iteration(iterations, path))
        median, p95 = statistics.median(overhead) * 1000, overhead[int(len(overhead) * 0.95)] * 1000
        rows[path] = {"median_ms": median, "p95_ms": p95}
        print(f"   {label:<42} median {median:.2f} ms, p95 {p95:.2f} ms")
    return {"iterations": iterations, **rows}


# --------------------------------------------------------------------------------------------
# servers


def fan_out(url: str, prompts: int, concurrency: int, **rlm_options: Any) -> float:
    """Seconds the REPL's llm_query_batched over `prompts` prompts took, as timed by the model's own code."""
    options = {"model": "openai/policy", "api_base": url, **rlm_options}
    result = RLM(concurrency=concurrency, **options).completion("fan-out", f"fan out {prompts} prompts")
    if result.status != "done":
        raise RuntimeError(f"fan-out run ended {result.status}: {result.error}")
    elapsed, ok = str(result.answer).split()
    if int(ok) != prompts:
        raise RuntimeError(f"fan-out: {ok} of {prompts} replies came back")
    return float(elapsed)


# --------------------------------------------------------------------------------------------
# 2. fan-out


# How figure 2 calls the server: the default for a local server; cloud-style (no api_base: OPENAI_BASE_URL at the
# server, as a user of OpenAI's API has it); litellm; an Anthropic model against the server's Messages API, by
# default (the direct transport in Anthropic's format) and through litellm.
FAN_OUT_PATHS: dict[str, dict[str, Any]] = {
    "auto": {"transport": "auto"},
    "cloud": {"transport": "auto", "api_base": None},
    "litellm": {"transport": "litellm"},
    "anthropic": {"transport": "auto", "model": "anthropic/claude-sonnet-4-5"},
    "anthropic-litellm": {"transport": "litellm", "model": "anthropic/claude-sonnet-4-5"},
}
FAN_OUT_TARGETS = {"auto": 1.1, "cloud": 1.15, "anthropic": 1.3, "anthropic-litellm": 1.3}


@contextlib.contextmanager
def cloud_environment(url: str) -> Iterator[None]:
    """The variables a cloud user sets, pointed at the local server (restored afterwards)."""
    values = {"OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-bench", "ANTHROPIC_API_KEY": "sk-bench"}
    with environment_kept(*values):
        os.environ.update(values)
        yield


def figure_fan_out(args: argparse.Namespace) -> dict[str, Any]:
    prompts, latency = 256, 0.2
    repeats = 1 if args.quick else 3
    paths = args.fan_out_paths.split(",") if args.fan_out_paths else list(FAN_OUT_PATHS)
    print(
        f"2. fan-out: {prompts} llm_query_batched prompts at {latency * 1000:.0f} ms latency through rlm serve-model "
        f"(median of {repeats}); {', '.join(paths)} (load average before: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())})"
    )
    rows: dict[str, dict[int, Any]] = {}
    for path in paths:
        rows[path] = {}
        for concurrency in (32,) if args.quick else (16, 32, 64):
            with serve("rlm_kernel.bench.offline:BenchPolicy", latency * 1000) as url, cloud_environment(url):
                options = dict(FAN_OUT_PATHS[path])
                if path.startswith("anthropic"):
                    options["api_base"] = url.removesuffix("/v1")  # the Messages API is at {api_base}/v1/messages
                picked = RLM(**{"model": "openai/policy", "api_base": url, **options}).transports["model"]
                walls = [fan_out(url, prompts, concurrency, **options) for _ in range(repeats)]
                in_flight = server_stats(url)["max_in_flight"]
            ideal = math.ceil(prompts / concurrency) * latency
            wall = statistics.median(walls)
            rows[path][concurrency] = {
                "wall_s": wall,
                "ideal_s": ideal,
                "ratio": wall / ideal,
                "max_in_flight": in_flight,
                "walls": walls,
                "transport": picked,
            }
            target = (
                f" (target: within {FAN_OUT_TARGETS[path]}x)" if concurrency == 32 and path in FAN_OUT_TARGETS else ""
            )
            print(
                f"   {f'{path} ({picked})':<28} concurrency {concurrency:>2}: {wall:.2f} s against ideal {ideal:.2f} s "
                f"= {wall / ideal:.2f}x{target}; server saw at most {in_flight} in flight"
            )
    return rows


# --------------------------------------------------------------------------------------------
# 3. root-prompt flatness


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

    result = RLM(model="scripted/demo", on_event=on_event).completion(sample_document(n_chars), DEMO_QUESTION)
    if result.status != "done":
        raise RuntimeError(f"demo run ended {result.status}: {result.error}")
    return root_tokens, root_calls


def figure_flatness(args: argparse.Namespace) -> dict[int, dict[str, int]]:
    sizes = (10_000, 1_000_000) if args.quick else (10_000, 1_000_000, 10_000_000)
    print("3. root-prompt flatness: root-model input tokens over the demo task, and the context as one prompt")
    rows = {}
    for n_chars in sizes:
        tokens, calls = root_input_tokens(n_chars)
        rows[n_chars] = {
            "root_input_tokens": tokens,
            "root_calls": calls,
            "direct_prompt_tokens": count_tokens(sample_document(n_chars)),
        }
    base = rows[sizes[0]]["root_input_tokens"]
    for n_chars, row in rows.items():
        print(
            f"   {n_chars:>12,} chars: root {row['root_input_tokens']:,} tokens in {row['root_calls']} calls "
            f"(x{row['root_input_tokens'] / base:.3f}); direct prompt {row['direct_prompt_tokens']:,} tokens"
        )
    print("   target: root tokens at 10M within 1.05x of 10K")
    return rows


# --------------------------------------------------------------------------------------------
# 4. memory


def _memory_policy(messages: list[dict[str, Any]]) -> str:
    """Ten replies that look at a huge context the ways a model does, without asking for chunks of it."""
    steps = (
        "print(len(context))\nprint(peek(0, 300))",
        "import re\nhits = grep(r'NEEDLE-[0-9]+')\nprint(hits)",
        "print(context.count(chr(10)), 'lines')",
        "print(peek(-300, 300))",
        "print(grep(r'coolant', flags=re.IGNORECASE, max_matches=5))",
        "first = context.find('NEEDLE-')\nprint(first)",
        "print(SHOW_VARS())",
        "print(llm_query('Say what this is: ' + peek(first - 100, 200)))",
        "print(grep(r'NEEDLE-[0-9]+', window=100))",
        "FINAL(hits)",
    )
    turn = sum(1 for m in messages if m["role"] == "assistant")
    if messages[0]["role"] != "system":
        return "a line of the station log"
    return f"Step {turn + 1}.\n{_FENCE}repl\n{steps[min(turn, len(steps) - 1)]}\n{_FENCE}"


def memory_child(megabytes: int) -> None:
    """In a fresh process: 10 iterations over a `megabytes` MiB str; prints peak RSS figures as JSON."""
    model = register_policy(_memory_policy, "bench-memory")
    RLM(model=model, max_iterations=10).completion(sample_document(100_000), "warm up")
    baseline = peak_rss_mb()
    chunk = sample_document(1 << 20)[: 1 << 20]
    needle = "\nNEEDLE-4242\n"
    middle = chunk[: -len(needle)] + needle
    # One allocation of the final size: join() only holds references to the two chunks.
    context = "".join(
        itertools.chain(
            itertools.repeat(chunk, megabytes // 2), [middle], itertools.repeat(chunk, megabytes - megabytes // 2 - 1)
        )
    )
    built = peak_rss_mb()
    started = time.perf_counter()
    result = RLM(model=model, max_iterations=10).completion(context, "Where is the needle?")
    print(
        json.dumps(
            {
                "context_mb": len(context) / 2**20,
                "baseline_mb": baseline,
                "after_build_mb": built,
                "peak_mb": peak_rss_mb(),
                "status": result.status,
                "answer": str(result.answer),
                "iterations": len(result.trace.root.iterations) if result.trace.root else 0,
                "seconds": time.perf_counter() - started,
            }
        )
    )


def figure_memory(args: argparse.Namespace) -> dict[str, Any]:
    megabytes = 64 if args.quick else 256
    print(f"4. memory: peak RSS of a process running 10 iterations over a {megabytes} MB context (str)")
    code = f"from rlm_kernel.bench.figures.perf import memory_child; memory_child({megabytes})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    over = row["peak_mb"] - row["baseline_mb"]
    print(
        f"   context {row['context_mb']:.0f} MB; process before the context {row['baseline_mb']:.0f} MB (Python, litellm, a warm-up run); "
        f"after building it {row['after_build_mb']:.0f} MB; peak {row['peak_mb']:.0f} MB"
    )
    added = over - row["context_mb"]
    print(
        f"   the run added {added:.0f} MB beyond the context itself (peak - before - context); "
        f"status {row['status']}, {row['iterations']} iterations, {row['seconds']:.1f} s"
    )
    print(
        f"   target: the run stays under context + 100 MB (no copies of the context): peak - before = {over:.0f} MB "
        f"against {row['context_mb'] + 100:.0f} MB, {'met' if added < 100 else 'missed'}. The absolute peak also holds "
        f"the {row['baseline_mb']:.0f} MB the process had before any context."
    )
    return row


# --------------------------------------------------------------------------------------------
# 5. side by side with the reference package


def figure_scale_out(args: argparse.Namespace) -> dict[str, Any]:
    prompts, concurrency = 256, 32
    print(
        f"6. scale-out: {prompts} prompts at 200 ms, concurrency {concurrency}, through a litellm Router over two "
        "rlm serve-model deployments of one model name"
    )
    policy = "rlm_kernel.bench.offline:BenchPolicy"
    with serve(policy, 200) as first, serve(policy, 200) as second:
        router = [
            {
                "model_name": "local-model",
                "litellm_params": {"model": "openai/policy", "api_base": url, "api_key": "sk-no-key-required"},
            }
            for url in (first, second)
        ]
        wall = fan_out(first, prompts, concurrency, model="local-model", router=router)
        served = [server_stats(url)["served"] for url in (first, second)]
    ideal = math.ceil(prompts / concurrency) * 0.2
    print(
        f"   requests served (the root call included): {served[0]} and {served[1]}; fan-out wall {wall:.2f} s "
        f"against ideal {ideal:.2f} s = {wall / ideal:.2f}x"
    )
    return {"served": served, "wall_s": wall, "ideal_s": ideal}
