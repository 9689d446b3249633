"""Figure 7: what the first `%%rlm` of a fresh kernel adds before its first model request.

A real kernel (started through jupyter_client, as a notebook starts one) loads the extension and runs
`%%rlm` against an OpenAI-compatible server that runs in this process, so that one clock times both
ends: from the cell's execute_request to the server receiving the cell's first request, minus the
round trip of a trivial cell (what any cell costs). The second `%%rlm` shows the warm cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from rlm_kernel.models.server import ModelServer

_FENCE = "`" * 3
TARGET_SECONDS = 0.5


class _FirstRequestClock:
    """A policy that answers at once and remembers when each root request reached the server."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        self.arrivals.append(time.perf_counter())
        return f"Done.\n{_FENCE}repl\nFINAL(len(context))\n{_FENCE}\n"


def _execute(client: Any, code: str, timeout: float = 120.0) -> tuple[float, float]:
    """Runs `code`; returns when its execute_request was sent and when its reply came back."""
    sent = time.perf_counter()
    reply = client.execute_interactive(code, timeout=timeout, output_hook=lambda message: None)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")
    return sent, time.perf_counter()


def first_cell_seconds(repeats: int, cloud: bool = False) -> dict[str, Any]:
    """Fresh kernels, one after another: load time, and the first and second %%rlm's delay before a request.

    `cloud`: the cell names no api_base; the kernel's OPENAI_BASE_URL points at the server, as a cloud user's
    OPENAI_API_KEY points at OpenAI."""
    from jupyter_client.manager import start_new_kernel

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    rows = []
    clock = _FirstRequestClock()
    with ModelServer(clock) as server:
        where = "" if cloud else f" --api-base {server.url}"
        cell = f"%%rlm --context doc --model openai/policy{where}\nHow long is it?"
        if cloud:
            env.update(OPENAI_BASE_URL=server.url, OPENAI_API_KEY="sk-bench")
        for _ in range(repeats):
            manager, client = start_new_kernel(kernel_name="python3", env=env, stderr=subprocess.DEVNULL)
            try:
                _execute(client, "doc = 'some text ' * 100")
                sent, done = _execute(client, "1")
                trivial = done - sent
                load_sent, load_done = _execute(client, "%load_ext rlm_kernel")
                firsts = []
                for _ in range(2):
                    count = len(clock.arrivals)
                    sent, _ = _execute(client, cell)
                    firsts.append(clock.arrivals[count] - sent - trivial)
            finally:
                client.stop_channels()
                manager.shutdown_kernel(now=True)
            rows.append(
                {"trivial_s": trivial, "load_ext_s": load_done - load_sent, "first_s": firsts[0], "second_s": firsts[1]}
            )
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]} | {"runs": rows}


def figure_first_cell(args: argparse.Namespace) -> dict[str, Any]:
    repeats = 1 if args.quick else 3
    print(
        f"7. the first %%rlm in a fresh kernel: from execute_request to the server receiving its first request, "
        f"minus a trivial cell's round trip (median of {repeats} fresh kernels; target: under {TARGET_SECONDS} s)"
    )
    rows = {}
    for label, cloud in (("local (--api-base)", False), ("cloud (OPENAI_BASE_URL)", True)):
        row = rows["cloud" if cloud else "local"] = first_cell_seconds(repeats, cloud)
        met = "met" if row["first_s"] < TARGET_SECONDS else "missed"
        print(
            f"   {label}: %load_ext rlm_kernel {row['load_ext_s']:.2f} s; first %%rlm {row['first_s']:.3f} s before its "
            f"first request ({met}); second %%rlm {row['second_s']:.3f} s; a trivial cell's round trip "
            f"{row['trivial_s'] * 1000:.1f} ms"
        )
    return rows
