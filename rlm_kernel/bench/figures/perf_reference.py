"""Figure 5: rlm_kernel and the reference package `rlms` side by side, on one server, one policy, the same tasks."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from rlm_kernel.bench.compare import REF_DRIVER
from rlm_kernel.bench.offline import COUNTERS_REQUEST
from rlm_kernel.bench.serving import serve
from rlm_kernel.bench.tasks import size_label, sniah

# rlm_kernel's side, one task a process (argv: URL QUESTION CONTEXT_FILE), as `rlm run` would run it.
OWN_SIDE = [sys.executable, "-m", "rlm_kernel.bench.figures.side_child"]


def _side(command: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_seconds": time.perf_counter() - started}


def _counters(url: str) -> dict[str, int]:
    body = json.dumps({"model": "policy", "messages": [{"role": "user", "content": COUNTERS_REQUEST}]}).encode()
    request = urllib.request.Request(url + "/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(json.loads(response.read())["choices"][0]["message"]["content"])


def figure_side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    ref_python = Path(args.ref_python)
    print(
        "5. side by side with the reference package rlms 0.1.3: one rlm serve-model (200 ms latency), one portable "
        "scripted policy, same tasks; each side a fresh process"
    )
    if not ref_python.exists():
        print(f"   skipped: {ref_python} not found (make bench-ref creates it)")
        return {"skipped": f"{ref_python} not found"}
    repeats = 1 if args.quick else 3
    ours = OWN_SIDE
    theirs = [str(ref_python), "-I", str(REF_DRIVER)]  # -I: nothing of rlm_kernel on its path
    sizes = (131_000,) if args.quick else (131_000, 1_000_000, 10_000_000)
    tasks = [(f"S-NIAH {size_label(size)} tokens", sniah(size, seed=0)) for size in sizes]
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder, serve("rlm_kernel.bench.offline:SideBySidePolicy", 200) as url:
        jobs = [(name, task.context, task.question, task.gold) for name, task in tasks]
        jobs.append(("fan-out 256 prompts", "fan-out", "fan out 256 prompts", "256"))
        for name, context, question, gold in jobs:
            path = Path(folder) / "context.txt"
            path.write_text(context, encoding="utf-8")
            runs: dict[str, list[dict[str, Any]]] = {"rlm_kernel": [], "rlms": []}
            for repeat in range(repeats):
                # Alternate which side goes first, so neither always meets a cold server.
                order = [("rlm_kernel", ours), ("rlms", theirs)][:: 1 if repeat % 2 == 0 else -1]
                for side, command in order:
                    before = _counters(url)
                    run_row = _side([*command, url, question, str(path)])
                    after = _counters(url)
                    run_row.update({k: after[k] - before[k] for k in after})
                    run_row["correct"] = gold in run_row["answer"]
                    runs[side].append(run_row)
            rows[name] = {side: _summary(side_runs) for side, side_runs in runs.items()}
            _print_side_by_side(name, rows[name])
    print(
        "   ratio = rlm_kernel / rlms (below 1: rlm_kernel lower). Each side runs at its default concurrency of 16 "
        "(rlms 0.1.3 fixes its batch concurrency at 16)."
    )
    return rows


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "process_seconds": statistics.median(r["process_seconds"] for r in runs),
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "root_input_tokens": statistics.median(r["root_input_tokens"] for r in runs),
        "root_requests": statistics.median(r["root_requests"] for r in runs),
        "sub_requests": statistics.median(r["sub_requests"] for r in runs),
        "correct": all(r["correct"] for r in runs),
        "runs": runs,
    }


def _print_side_by_side(name: str, row: dict[str, Any]) -> None:
    ours, theirs = row["rlm_kernel"], row["rlms"]
    print(
        f"   {name}: answers correct: rlm_kernel {ours['correct']}, rlms {theirs['correct']}; "
        f"root calls {ours['root_requests']:.0f} vs {theirs['root_requests']:.0f}; sub-calls {ours['sub_requests']:.0f} vs {theirs['sub_requests']:.0f}"
    )
    for label, key, unit in (
        ("wall time of the completion call", "seconds", "s"),
        ("wall time of the process (imports included)", "process_seconds", "s"),
        ("peak RSS", "peak_rss_mb", "MB"),
        ("root-model input tokens", "root_input_tokens", ""),
    ):
        a, b = ours[key], theirs[key]
        print(f"     {label:<45} rlm_kernel {a:>10,.2f} {unit:<2} rlms {b:>10,.2f} {unit:<2} ratio {a / b:.2f}")


# --------------------------------------------------------------------------------------------
# 6. scale-out over deployments
