"""The `rlm` command: the main job offline, and one-line errors with non-zero exits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_kernel.cli import main
from rlm_kernel.models.demo import sample_document


def test_rlm_run_with_the_demo_policy_prints_answer_tree_and_totals(tmp_path, capsys):
    doc = tmp_path / "log.txt"
    doc.write_text(sample_document(300_000), encoding="utf-8")
    trace = tmp_path / "trace.jsonl"
    code = main(
        [
            "run",
            "--context",
            str(doc),
            "--model",
            "scripted/demo",
            "--query",
            "What happened to the coolant?",
            "--trace-out",
            str(trace),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "4 passages mention coolant" in out and "Bao replaced the worn impeller" in out
    assert "Call tree:" in out and "[done] n0" in out
    assert "Total: status done; 7 model calls" in out
    kinds = [json.loads(line)["kind"] for line in trace.read_text().splitlines()]
    assert kinds[0] == "call_start" and kinds[-1] == "call_end" and kinds.count("subcall_end") == 4


def test_missing_file_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["run", "--context", str(tmp_path / "nope.txt"), "--model", "scripted/demo"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rlm: error:") and err.count("\n") == 1 and "Traceback" not in err


def test_unreachable_model_is_one_line_and_exit_1(tmp_path, capsys):
    doc = tmp_path / "d.txt"
    doc.write_text("hello")
    code = main(["run", "--context", str(doc), "--model", "openai/x", "--api-base", "http://127.0.0.1:9/v1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "model call failed" in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_option_exits_2_without_a_traceback():
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run(
        [sys.executable, "-m", "rlm_kernel.cli", "run", "--max-depth", "two"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("rlm: error:")


def test_approve_without_a_terminal_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    doc = tmp_path / "d.txt"
    doc.write_text("hello")
    code = main(["run", "--context", str(doc), "--model", "scripted/demo", "--approve"])
    err = capsys.readouterr().err
    assert code == 2
    assert "interactive terminal" in err and err.count("\n") == 1


def test_isolated_run_answers_from_a_separate_kernel(tmp_path, capsys):
    doc = tmp_path / "log.txt"
    doc.write_text(sample_document(20_000), encoding="utf-8")
    code = main(
        [
            "run",
            "--context",
            str(doc),
            "--model",
            "scripted/demo",
            "--query",
            "What happened to the coolant?",
            "--isolated",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Bao replaced the worn impeller" in out and "[done] n0" in out


@pytest.mark.slow  # three fresh interpreters
def test_python_m_rlm_kernel_is_the_rlm_command_install_included(tmp_path):
    """`rlm` and `python -m rlm_kernel` are one command: the same help, and `install` in both."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    rlm = str(Path(sys.executable).with_name("rlm"))
    as_module = subprocess.run([sys.executable, "-m", "rlm_kernel", "--help"], capture_output=True, text=True, env=env)
    as_script = subprocess.run([rlm, "--help"], capture_output=True, text=True, env=env)
    assert as_module.returncode == as_script.returncode == 0
    assert as_module.stdout == as_script.stdout
    assert all(name in as_module.stdout for name in ("run", "export", "trace", "install", "serve-model", "bench"))
    installed = subprocess.run(
        [sys.executable, "-m", "rlm_kernel", "install", "--prefix", str(tmp_path)], capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/rlm/kernel.json").read_text(encoding="utf-8"))
    assert spec["argv"][:3] == [sys.executable, "-m", "rlm_kernel.jupyter.kernel"]


def test_an_unknown_install_option_is_one_line_and_exit_2(capsys):
    assert main_exit(["install", "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlm: error:") and err.count("\n") == 1


def main_exit(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:
        return int(exit.code or 0)


def test_format_markdown_writes_a_report_that_renders_the_answer(tmp_path):
    doc = tmp_path / "d.txt"
    doc.write_text("hello")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    command = [sys.executable, "-m", "rlm_kernel.cli", "run", "--context", str(doc), "--model", "scripted/demo"]
    text = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    report = subprocess.run([*command, "--format", "markdown"], capture_output=True, text=True, env=env, timeout=120)
    assert text.returncode == report.returncode == 0, report.stderr
    assert text.stdout.startswith("Answer:\n")  # text stays the default
    assert report.stdout.startswith("## Answer\n\n> Summarize the context.\n\n")
    assert "\n### Call tree\n\n```text\n[done] n0 d0 scripted/demo: " in report.stdout
    assert re.search(r"\n\*\*Total\*\*: status done; \d+ model calls?, ", report.stdout), report.stdout
    answer = text.stdout.split("\n\nCall tree:")[0].removeprefix("Answer:\n")
    assert f"\n\n{answer}\n\n### Call tree" in report.stdout  # the same answer, as written
