"""`rlm bench TASK --executor ray`: benchmark tasks as one batch on the cluster, with a progress line."""

from __future__ import annotations

import json

import pytest

from rlm_kernel.bench import main as bench_main

pytestmark = pytest.mark.usefixtures("cluster")


def test_bench_tasks_run_as_one_batch_on_ray_with_a_progress_line(tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    argv = ["sniah", "--model", "scripted/bench", "--sizes", "4k", "--n", "3", "--executor", "ray", "--out", str(out)]
    assert bench_main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["score"] for r in records] == [1.0] * 3, [r["error"] for r in records]
    assert all(r["status"] == "done" and r["llm_calls"] >= 2 and r["seconds"] > 0 for r in records)
    assert "3 done, 0 failed, 0 queued" in capsys.readouterr().err
