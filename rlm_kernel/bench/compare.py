"""`rlm bench compare`: the same tasks, model and settings through rlm_kernel and through the reference `rlms`.

    rlm bench compare sniah --ref-python .venv-bench-ref/bin/python --sizes 8k,131k --n 3
    rlm bench compare oolong --model openai/gpt-4o-mini --api-base https://api.openai.com/v1 --ref-python PATH

`make bench-ref` installs `rlms` into .venv-bench-ref. Both sides call the same OpenAI-compatible
endpoint with the same model and iteration limit; with the offline stand-in (the default model) that
endpoint is `rlm serve-model` serving its portable policy, which writes only code both sides run,
and which knows S-NIAH only. rlms reports calls and tokens for its root handler only (children are
not merged); costs on both sides come from litellm's price map for the model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlm_kernel.bench import UsageError, offline
from rlm_kernel.bench.families import FAMILIES, GENERATORS
from rlm_kernel.bench.serving import serve
from rlm_kernel.bench.tasks import Task, parse_size
from rlm_kernel.core import RLM
from rlm_kernel.core.lm import LiteLLM, import_litellm

REF_DRIVER = Path(__file__).with_name("ref_driver.py")  # run by the reference venv's interpreter
DEFAULT_REF_PYTHON = ".venv-bench-ref/bin/python"
PORTABLE_FAMILIES = ("sniah",)  # what the stand-in's portable policy can do in both engines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=FAMILIES, help="task family")
    parser.add_argument("--ref-python", default=DEFAULT_REF_PYTHON, help="the interpreter with rlms (make bench-ref)")
    parser.add_argument("--model", default=offline.MODEL, help="an OpenAI-compatible model (default: the stand-in)")
    parser.add_argument("--api-base", help="the endpoint both sides call (needed unless the model is the stand-in)")
    parser.add_argument("--sizes", default="8k")
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-iterations", type=int, default=10)


def run(args: argparse.Namespace) -> int:
    ref_python = Path(args.ref_python)
    if not ref_python.exists():
        raise UsageError(f"no {ref_python}: `make bench-ref` installs the reference package rlms there")
    stand_in = args.model == offline.MODEL
    if stand_in and args.task not in PORTABLE_FAMILIES:
        raise UsageError(
            f"the stand-in's portable policy knows {', '.join(PORTABLE_FAMILIES)} only; give a real --model"
        )
    if not stand_in and not args.api_base:
        raise UsageError("--api-base is needed: rlms reaches models through an OpenAI-compatible endpoint")
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    tasks = [GENERATORS[args.task](size, args.seed, index) for size in sizes for index in range(args.n)]
    import_litellm()  # its seconds of import stay out of the first task's time; rlms imports its client untimed too
    with _endpoint(stand_in, args) as (url, model):
        rows = [row for task in tasks for row in _both(task, url, model, args, ref_python)]
    print(_table(rows))
    if stand_in:
        print(f"NOTE: {offline.OFFLINE_MARK} the scores are a plumbing check, not a model's")
    print(
        "rlms counts calls and tokens of its root handler only; cost: litellm's price map for the model on both sides"
    )
    return 0


@contextlib.contextmanager
def _endpoint(stand_in: bool, args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(base URL, litellm model name) both sides use."""
    if stand_in:
        with serve("rlm_kernel.bench.offline:SideBySidePolicy") as url:
            yield url, "openai/policy"
    else:
        yield args.api_base, args.model if args.model.startswith("openai/") else f"openai/{args.model}"


def _both(task: Task, url: str, model: str, args: argparse.Namespace, ref_python: Path) -> list[dict[str, Any]]:
    lm = LiteLLM(api_base=url)
    started = time.perf_counter()
    result = RLM(model=model, api_base=url, lm=lm, max_iterations=args.max_iterations).completion(
        task.context, task.question
    )
    usage = result.usage.to_dict()
    ours = {
        "side": "rlm_kernel",
        "task": task.id,
        "score": task.score(result.answer),
        "calls": usage["llm_calls"],
        "input_tokens": usage["input_tokens"],
        "output_tokens": usage["output_tokens"],
        "cost_usd": usage["cost_usd"] if usage.get("cost_known", True) else None,
        "seconds": time.perf_counter() - started,
    }
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "context.txt"
        path.write_text(task.context, encoding="utf-8")
        command = [str(ref_python), "-I", str(REF_DRIVER), url, task.question, str(path)]
        command += [model.removeprefix("openai/"), str(args.max_iterations)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=os.environ.copy())
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"rlms exited {done.returncode} on {task.id}: {last}")
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    per_model = reply.get("usage", {}).get("model_usage_summaries", {}).values()
    tokens_in = sum(u.get("total_input_tokens", 0) for u in per_model)
    tokens_out = sum(u.get("total_output_tokens", 0) for u in per_model)
    price = lm.price(model, tokens_in, tokens_out)
    theirs = {
        "side": "rlms",
        "task": task.id,
        "score": task.score(reply["answer"]),
        "calls": sum(u.get("total_calls", 0) for u in per_model),
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": price,
        "seconds": reply["seconds"],
        "process_seconds": time.perf_counter() - started,
    }
    return [ours, theirs]


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("task", "side", "score", "calls", "in tok", "out tok", "cost $", "seconds")
    lines = [header]
    for r in rows:
        cost = "?" if r["cost_usd"] is None else f"{r['cost_usd']:.4f}"
        cells = (r["task"], r["side"], f"{100 * r['score']:.1f}%", str(r["calls"]))
        lines.append((*cells, f"{r['input_tokens']:,}", f"{r['output_tokens']:,}", cost, f"{r['seconds']:.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
