"""`rlm serve-model` in its own process, for the figures and the comparison: start, stats, request counters."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def serve(policy: str, latency_ms: float = 0.0, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """`rlm serve-model` in its own process (with `env` added to this one's environment); yields its api_base."""
    command = [
        sys.executable,
        "-m",
        "rlm_kernel.cli",
        "serve-model",
        "--policy",
        policy,
        "--latency-ms",
        str(latency_ms),
    ]
    # As a context manager, Popen closes its stdout pipe on the way out (left open, it was a ResourceWarning).
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # "serving policy P on URL"
            if not line.startswith("serving policy"):
                raise RuntimeError(f"rlm serve-model did not start (exit {process.wait()})")
            yield line.split()[-1]
        finally:
            process.terminate()
            process.wait(timeout=10)


def server_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=10) as response:
        return json.loads(response.read())


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: on Linux a child's starts at its parent's RSS at fork."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


@contextlib.contextmanager
def environment_kept(*names: str) -> Iterator[None]:
    """The environment variables `names` as they were, put back afterwards (a figure sets them for its runs)."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
