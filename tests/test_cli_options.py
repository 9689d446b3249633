"""`rlm run` as the user meets it in a shell (issue 23 item 10): run as a subprocess, errors on one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rlm_kernel.core.settings import SETTINGS


def rlm(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    environ.update(LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "rlm_kernel", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def test_no_model_anywhere_is_the_engines_one_line(tmp_path):
    doc = tmp_path / "d.txt"
    doc.write_text("hello")
    proc = rlm("run", "--context", str(doc))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "rlm: error: no model: pass model=, or set RLM_MODEL\n"


@pytest.mark.parametrize(
    "option, value, reason",
    [
        ("--max-seconds", "soon", "max_seconds must be a number, not 'soon'"),
        ("--max-depth", "0", "max_depth must be at least 1"),
        ("--transport", "carrier-pigeon", "transport must be one of auto, litellm, direct"),
        ("--model-params", "{not json", "model_params must be a JSON object"),
    ],
)
def test_a_bad_option_value_keeps_the_reason_from_the_settings_table(option, value, reason):
    proc = rlm("run", "--context", "x", option, value)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("rlm: error:")
    assert reason in proc.stderr and "invalid" not in proc.stderr


def test_context_dash_reads_stdin():
    proc = rlm("run", "--context", "-", "--model", "scripted/demo", "--query", "coolant?", stdin="coolant pump ok\n")
    assert proc.returncode == 0, proc.stderr
    assert "Answer:" in proc.stdout


def test_help_is_grouped_with_defaults_once_and_choices_shown():
    proc = rlm("run", "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: rlm run --context PATH")
    text = proc.stdout.split("\noptions:", 1)[1]
    headings = [line for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert headings[-4:] == ["model:", "budgets:", "execution:", "output:"]
    assert text.index("--api-base") < text.index("budgets:") < text.index("--max-seconds") < text.index("execution:")
    assert text.index("execution:") < text.index("--isolation") < text.index("output:") < text.index("--trace-out")
    assert "{auto,litellm,direct}" in text and "{kernel,kernel-audit}" in text
    entries = text.split("\n  -")
    for setting in SETTINGS:
        if setting.cli:
            entry = next(e for e in entries if e.split()[:1] == [setting.cli[0][1:]])  # split ate one "-"
            assert " ".join(entry.split()).count("default") <= 1, entry
    flat = " ".join(text.split())
    assert "Model for llm_query and child RLMs (default: the root model). [$RLM_SUB_MODEL]" in flat
    assert "--max-iterations MAX_ITERATIONS" in flat and "(default: 20)" in flat
