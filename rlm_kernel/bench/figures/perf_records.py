"""Figure 8: a context of records (a list of dicts), what it costs to the first model request and in memory.

Each measurement runs in a fresh process (records_probe.py): the time from `completion()` to the root
model's first request, and the peak RSS above the process before the context was built, against the
context's own size. `--before-python` measures another environment's rlm_kernel the same way (the same
probe, run by path), so that before and after print side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

PROBE = Path(__file__).with_name("records_probe.py")
TARGET_FIRST_REQUEST_S = 1.0
TARGET_OVER_CONTEXT = {0: 0.30, 4: 0.40}  # children -> peak above the context, as a fraction of it


def probe(python: str, records: int, children: int) -> dict[str, Any]:
    """One measurement in a fresh `python` process."""
    done = subprocess.run(
        [python, str(PROBE), str(records), str(children)], capture_output=True, text=True, cwd=PROBE.parent
    )
    if done.returncode != 0:
        raise RuntimeError(f"{python} {PROBE.name} failed: {done.stderr.strip()[-500:]}")
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def _print(label: str, row: dict[str, Any]) -> None:
    context, peak = row["context_mb"], row["peak_over_baseline_mb"]
    over = peak / context - 1
    target = TARGET_OVER_CONTEXT[row["children"]]
    who = f"to {row['children']} children sharing it" if row["children"] else "to the root"
    print(f"   {label}: {row['records']:,} records ({context:.0f} MB) {who}, status {row['status']}")
    if not row["children"]:
        first = row["first_request_s"]
        print(
            f"      first model request after {first:.2f} s "
            f"(target < {TARGET_FIRST_REQUEST_S:.0f} s, {_verdict(first < TARGET_FIRST_REQUEST_S)})"
        )
    print(
        f"      peak RSS above the process before the context {peak:.0f} MB = context {over:+.0%} "
        f"(target < +{target:.0%}, {_verdict(over < target)}); the whole run {row['run_s']:.2f} s"
    )


def figure_records(args: argparse.Namespace) -> dict[str, Any]:
    sizes = {0: 200_000, 4: 60_000} if args.quick else {0: 1_000_000, 4: 300_000}
    print(
        "8. contexts of records (list[dict]): time to the first model request and peak memory, "
        "each in a fresh process, scripted model"
    )
    environments = {"after (this environment)": sys.executable}
    if args.before_python:
        environments = {f"before ({args.before_python})": args.before_python, **environments}
    rows: dict[str, list[dict[str, Any]]] = {}
    for label, python in environments.items():
        rows[label] = [probe(python, records, children) for children, records in sizes.items()]
        for row in rows[label]:
            _print(label, row)
    return rows
