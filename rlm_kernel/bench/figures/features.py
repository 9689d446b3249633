"""Figures of issue 15's features, against `rlm serve-model` in its own process.

batch:   64 questions, each one root call and one sub-call at 200 ms latency, `RLM.batch(concurrency=32)`:
         wall time against the ideal (2 waves of 2 sequential calls = 0.8 s); the bound is 1.25 x ideal.
session: root input tokens of question 1 and question 10 of one session, with the default memory
         (session_tokens) and with an unbounded one, to show that compaction keeps the root prompt bounded.

    rlm bench features [--figures batch,session] [--transport auto|litellm|direct]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from rlm_kernel.bench import UsageError
from rlm_kernel.bench.serving import serve, server_stats
from rlm_kernel.core import RLM
from rlm_kernel.core.settings import BY_NAME

FIGURES = ("batch", "session")
Messages = list[dict[str, Any]]


class OneRootOneSub:
    """Root: one block that makes one sub-call and submits its reply. Sub-call: echoes its prompt."""

    def __call__(self, messages: Messages) -> str:
        if messages[0]["role"] == "system":
            return "One sub-call.\n```repl\nFINAL(llm_query('q:' + context))\n```\n"
        return "sub:" + str(messages[-1]["content"])


class LongAnswers:
    """Root: submits a 2,000-character answer at once, so that a session's memory fills."""

    def __call__(self, messages: Messages) -> str:
        return "Answering.\n```repl\nFINAL('finding ' * 250)\n```\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--figures", default=",".join(FIGURES), help="comma-separated: batch,session (default: both)")
    parser.add_argument("--transport", default=BY_NAME["transport"].default, choices=BY_NAME["transport"].choices)
    parser.add_argument("--questions", type=int, default=64, help="questions of the batch figure")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrency of the batch figure")


def run(args: argparse.Namespace) -> int:
    chosen = [f.strip() for f in args.figures.split(",") if f.strip()]
    if not chosen or not set(chosen) <= set(FIGURES):
        raise UsageError(f"--figures takes {','.join(FIGURES)}, not {args.figures!r}")
    if "batch" in chosen:
        batch_figure(args.questions, args.concurrency, args.transport)
    if "session" in chosen:
        session_figure(args.transport)
    return 0


def batch_figure(questions: int, concurrency: int, transport: str, latency_ms: float = 200.0) -> float:
    """Prints the figure; returns wall time / ideal."""
    with serve("rlm_kernel.bench.figures.features:OneRootOneSub", latency_ms) as url:
        rlm = RLM(model="openai/policy", api_base=url, transport=transport, concurrency=concurrency)
        rlm.completion("warm", "up")  # imports and the first connections stay out of the figure
        before = server_stats(url)["requests"]
        started = time.perf_counter()
        results = rlm.batch([(f"c{i}", f"question {i}") for i in range(questions)])
        wall = time.perf_counter() - started
        stats = server_stats(url)
    ideal = math.ceil(questions / concurrency) * 2 * latency_ms / 1000
    done = sum(r.status == "done" and r.answer == f"sub:q:c{i}" for i, r in enumerate(results))
    print(
        f"batch: {questions} questions (1 root call + 1 sub-call each, {latency_ms:g} ms latency), "
        f"concurrency {concurrency}, transport {transport} ({rlm.transports['model']}): {wall:.2f} s, ideal {ideal:.2f} s, "
        f"{wall / ideal:.2f} x ideal (bound 1.25); {done}/{questions} answered right; "
        f"{stats['requests'] - before} requests, at most {stats['max_in_flight']} in flight"
    )
    return wall / ideal


def session_figure(transport: str, questions: int = 10) -> None:
    with serve("rlm_kernel.bench.figures.features:LongAnswers") as url:
        for label, budget in (("default memory", BY_NAME["session_tokens"].default), ("unbounded memory", 10**9)):
            rlm = RLM(model="openai/policy", api_base=url, transport=transport, session_tokens=budget)
            with rlm.session() as session:
                tokens = [
                    session.completion("ctx", f"question {i}").trace.root.iterations[0].usage.input_tokens  # type: ignore[union-attr]
                    for i in range(1, questions + 1)
                ]
            print(
                f"session ({label}, session_tokens={budget:,}): root input tokens at question 1: {tokens[0]:,}, "
                f"at question {questions}: {tokens[-1]:,} ({tokens[-1] / tokens[0]:.2f} x)"
            )
