"""`rlm bench TASK`: run long-context tasks in the paper's modes: rlm, rlm-no-subcalls, direct (one prompt).

    rlm bench sniah --model openai/gpt-4o-mini --sizes 8k,32k,131k --n 5 --mode rlm --out results.jsonl
    rlm bench sniah --variant niah_single_3 ...          # RULER's variants (rlm_kernel/bench/ruler.py)
    rlm bench hotpotqa-distractor --model ... --sizes 32k   # real multi-hop questions (bench/hotpotqa.py)
    rlm bench oolong --model openai/policy --api-base http://127.0.0.1:8000/v1 --mode direct --out results.jsonl
    rlm bench oolong --baseline --sizes 8k,32k,131k      # no model: distinct lines and the keyword labeller's accuracy
    rlm bench codeqa --data ~/rlm-data --model openai/gpt-4o --mode rlm-no-subcalls   # the real dataset's files

Each task's line in the results file holds its score, tokens, cost, seconds and status, and
for the direct baseline whether the context was cut to fit the model's window.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from rlm_kernel.bench import UsageError, baseline, datasets, hotpotqa, offline, report, ruler
from rlm_kernel.bench.families import FAMILIES, GENERATORS
from rlm_kernel.bench.modes import MODES
from rlm_kernel.bench.tasks import Task, direct_prompt, parse_size
from rlm_kernel.cli.settings import add_setting_options, given_settings
from rlm_kernel.core import RLM, RunInterrupted
from rlm_kernel.core.errors import BatchInterrupted, ModelError, TransientModelError
from rlm_kernel.core.lm import OFFLINE_PROVIDERS, LiteLLM, import_litellm
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.settings import BY_NAME
from rlm_kernel.models.policies import count_tokens

DEFAULT_WINDOW = 128_000
OUTPUT_RESERVE = 4_096  # tokens kept free in the window for the reply
ANSWER_CHARS = 2_000  # answers and gold answers are cut to this in the results file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=FAMILIES + datasets.REAL_ONLY, help="task family")
    parser.add_argument("--sizes", default="8k", help="context sizes in tokens, comma-separated: 8k,32k,131k,1m,2^20")
    parser.add_argument("--n", type=int, default=1, help="tasks per size (default 1)")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="rlm",
        help="rlm; rlm-no-subcalls: the REPL without llm_query (the paper's ablation); direct: the context in one prompt",
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help=f"read the real dataset's files from DIR instead of generating ({datasets.LAYOUT_HINT})",
    )
    parser.add_argument(
        "--variant",
        choices=ruler.VARIANTS,
        help="sniah: RULER's needle task (default niah_single_2, Paul Graham's essays, when RULER's data is "
        "installed or under --data DIR/ruler; else niah_single_1, the generated noise sentence)",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="oolong, oolong-pairs: print distinct lines and the keyword labeller's accuracy per size; no model is called",
    )
    parser.add_argument("--out", help="append one JSON line per task to this file")
    parser.add_argument(
        "--executor",
        choices=("ray",),
        help="ray: every task at once as one batch on the Ray cluster RAY_ADDRESS names (else a local one), with a "
        "progress line; rlm modes only",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--window",
        type=int,
        help=f"direct mode: the model's input window in tokens (default: litellm's model info, else {DEFAULT_WINDOW:,})",
    )
    # The run settings as `rlm run` has them (`--seed` is the task generator's here); a benchmark's calls
    # get more time by default, and a budget is per task.
    add_setting_options(parser, skip=("seed", "sub_calls"))  # --seed is the generator's; --mode sets sub-calls
    parser.set_defaults(call_timeout=300.0)


def run(args: argparse.Namespace) -> int:
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not sizes or args.n < 1:
        raise UsageError("give at least one size and --n >= 1")
    if args.baseline:
        return baseline.run(args.task, sizes, args.n, args.seed)
    if not args.model:
        raise UsageError("the following arguments are required: --model")
    if args.executor and args.mode == "direct":
        raise UsageError("--executor runs the rlm modes; direct mode asks the model itself")
    tasks = _tasks(args, sizes)
    offline.register()
    import_litellm()  # seconds of import, kept out of the first task's time
    window, window_source = _window(args.model, args.window) if args.mode == "direct" else (None, None)
    out = _open_out(args.out)
    if args.mode == "direct":
        assert window is not None  # _window always gives a number
        solve = _direct_solver(args, window)
    elif args.executor:
        solve = _on_cluster(args, tasks)
    else:
        solve = _rlm_solver(args)
    records: list[dict[str, Any]] = []
    total = len(tasks)
    progress = _Progress(total)
    try:
        for task in tasks:
            progress.show(len(records), task.id)
            record = _record(args, task, solve, window, window_source)
            records.append(record)
            if out:
                out.write(json.dumps(record) + "\n")
                out.flush()
            progress.show(len(records), task.id, record["score"])
    except KeyboardInterrupt:
        progress.done()
        print(f"rlm bench: interrupted after {len(records)} of {total} tasks", file=sys.stderr)
        return 130
    finally:
        if out:
            out.close()
    progress.done()
    print(report.summary_table(records))
    if args.out:
        print(f"results: {args.out}")
    return 0


def _tasks(args: argparse.Namespace, sizes: list[int]) -> list[Task]:
    """Generated tasks, RULER's, or with --data the real dataset's (at the sizes it has nearest to those asked)."""
    if args.variant and args.task != "sniah":
        raise UsageError("--variant is sniah's (RULER's needle variants)")
    try:
        if args.task == "sniah":
            variant = args.variant or _default_variant(args.data)
            return [ruler.niah(variant, size, args.seed, i, args.data) for size in sizes for i in range(args.n)]
        if args.task == hotpotqa.FAMILY:
            return [hotpotqa.task(size, args.seed, i, args.data) for size in sizes for i in range(args.n)]
        if args.data:
            return datasets.load(args.task, args.data, sizes, args.n, args.seed)
    except datasets.DataError as exc:
        raise UsageError(str(exc)) from None
    if args.task not in GENERATORS:
        raise UsageError(f"{args.task} is read from the real dataset: give --data DIR ({datasets.LAYOUT_HINT})")
    return [GENERATORS[args.task](size, args.seed, index) for size in sizes for index in range(args.n)]


def _default_variant(data: str | None) -> str:
    """RULER's essay haystack when its data is there, else the generated noise (said on stderr)."""
    if ruler.available(data):
        return "niah_single_2"
    if data:  # asked for real data that is not there: the one-line error naming where it goes
        ruler.data_file(ruler.ESSAYS, data)
    print(
        f"rlm bench: sniah on generated noise (niah_single_1): RULER's essays are not installed ({ruler.PACKAGE})",
        file=sys.stderr,
    )
    return "niah_single_1"


def _open_out(path: str | None) -> IO[str] | None:
    if not path:
        return None
    try:
        return open(path, "a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


Solver = Callable[[Task], dict[str, Any]]


def _record(
    args: argparse.Namespace, task: Task, solve: Solver, window: int | None, window_source: str | None
) -> dict[str, Any]:
    started = time.perf_counter()
    outcome = solve(task)
    answer = outcome.pop("answer")
    marked = outcome.pop("offline_mark", False)
    text = "" if answer is None else str(answer)
    return {
        "task": task.family,
        "id": task.id,
        "kind": task.kind,
        "mode": args.mode,
        "source": task.source,
        "model": args.model,
        "sub_model": (args.sub_model or args.model) if args.mode == "rlm" else None,
        "seed": args.seed,
        "size_tokens": task.size_tokens,
        "context_tokens": count_tokens(task.context),
        "context_chars": len(task.context),
        "score": task.score(answer),
        **task.other_scores(answer),
        "answer": text[:ANSWER_CHARS],
        "answer_chars": len(text),
        "gold": task.gold_text[:ANSWER_CHARS],
        "offline": args.model.startswith("scripted/") or marked,
        "window": window,
        "window_source": window_source,
        "seconds": round(time.perf_counter() - started, 3),
        "meta": task.meta,
        **outcome,
    }


def _rlm(args: argparse.Namespace) -> RLM:
    ablation = args.mode == "rlm-no-subcalls"
    return RLM(**{**given_settings(args), **({"max_depth": 1, "sub_calls": False} if ablation else {})})


def _rlm_solver(args: argparse.Namespace) -> Solver:
    def solve(task: Task) -> dict[str, Any]:
        try:
            return _outcome(_rlm(args).completion(task.context, task.question))
        except RunInterrupted:
            raise KeyboardInterrupt from None

    return solve


def _on_cluster(args: argparse.Namespace, tasks: list[Task]) -> Solver:
    """Every task at once, as one batch on Ray (its progress line on stderr while it runs); each task's outcome is
    then read from the batch's results, in order."""
    try:
        from rlm_kernel.distributed import Progress, RayExecutor
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'rlm_kernel[ray]'") from None
    executor = RayExecutor(progress=Progress.print_line)
    try:
        results = _rlm(args).batch([(task.context, task.question) for task in tasks], executor=executor)
    except BatchInterrupted:
        raise KeyboardInterrupt from None
    finally:
        executor.progress.print_line()  # how the batch ended (the watcher shows the line only while it runs)
        print(file=sys.stderr)
    by_task = {id(task): result for task, result in zip(tasks, results)}
    return lambda task: {**_outcome(by_task[id(task)]), "seconds": by_task[id(task)].seconds}  # its own run's


def _outcome(result: RLMResult) -> dict[str, Any]:
    iterations = [it for node in result.trace.walk() for it in node.iterations]
    cells = [cell for it in iterations for cell in it.cells]
    return {
        "answer": result.answer,
        "status": result.status,
        "error": result.error,
        "truncated": False,
        "offline_mark": any(offline.OFFLINE_MARK in it.reply for it in iterations),
        # what the model did: iterations over every node, the code blocks run and how many failed
        "iterations": len(iterations),
        "code_blocks": len(cells),
        "code_errors": sum(1 for cell in cells if cell.error),
        **_usage(result.usage.to_dict()),
    }


def _direct_solver(args: argparse.Namespace, window: int) -> Solver:
    lm = LiteLLM(api_base=args.api_base, api_key=args.api_key)

    def solve(task: Task) -> dict[str, Any]:
        budget = window - count_tokens(direct_prompt("", task.question)) - OUTPUT_RESERVE
        context, cut = fit_context(task.context, budget, _chars_per_token(args.model, task.context))
        messages = [{"role": "user", "content": direct_prompt(context, task.question)}]
        attempts = 1 + (args.retries if args.retries is not None else BY_NAME["retries"].default)
        for attempt in range(attempts):
            try:
                completion = lm.complete(messages, model=args.model, timeout=args.call_timeout)
                break
            except TransientModelError as exc:
                if attempt == attempts - 1:  # --retries, as in the RLM modes
                    return _failed(f"{exc} (gave up after {attempts} attempts)", cut)
                time.sleep(0.5 * 2**attempt)
            except ModelError as exc:
                return _failed(str(exc), cut)
        return {
            "answer": completion.text,
            "status": "done",
            "error": None,
            "truncated": cut > 0,
            "cut_chars": cut,
            "offline_mark": offline.OFFLINE_MARK in completion.text,
            **_usage(completion.usage.to_dict()),
        }

    return solve


def _failed(error: str, cut: int) -> dict[str, Any]:
    return {"answer": None, "status": "error", "error": error, "truncated": cut > 0, "cut_chars": cut, **_usage({})}


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "input_tokens": usage.get("input_tokens", 0),
        "output_tokens": usage.get("output_tokens", 0),
        "llm_calls": usage.get("llm_calls", 0),
        "cost_usd": usage.get("cost_usd", 0.0),
        "cost_known": usage.get("cost_known", True),
    }


def fit_context(context: str, budget_tokens: int, chars_per_token: float) -> tuple[str, int]:
    """The context cut in the middle to fit `budget_tokens`, and how many characters were cut (0: it fits)."""
    keep = max(0, int(budget_tokens * chars_per_token))
    if len(context) <= keep:
        return context, 0
    cut = len(context) - keep
    head = keep // 2
    marker = f"\n[... {cut:,} characters cut here to fit the model's window ...]\n"
    return context[:head] + marker + context[len(context) - (keep - head) :], cut


def _window(model: str, given: int | None) -> tuple[int, str]:
    """The model's input window in tokens, and where that number came from."""
    if given is not None:
        return given, "--window"
    if not model.startswith(OFFLINE_PROVIDERS):
        try:
            known = import_litellm().get_model_info(model).get("max_input_tokens")
        except Exception:  # litellm raises for models it does not know
            known = None
        if known:
            return int(known), "litellm model info"
    return DEFAULT_WINDOW, "default"


def _chars_per_token(model: str, context: str) -> float:
    """Characters per token for this model on this text (from a sample), with a 5% margin."""
    if model.startswith(OFFLINE_PROVIDERS):
        return 4.0  # the offline backends count 4 characters a token
    middle = len(context) // 2
    sample = context[max(0, middle - 20_000) : middle + 20_000]
    tokens = import_litellm().token_counter(model=model, text=sample)
    return 0.95 * len(sample) / max(1, tokens)


class _Progress:
    """A one-line progress bar on stderr (a line per task when stderr is not a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.scores: list[float] = []
        self.tty = sys.stderr.isatty()

    def show(self, done: int, label: str, score: float | None = None) -> None:
        if score is not None:
            self.scores.append(score)
        if not self.tty and score is None:
            return
        filled = round(20 * done / self.total)
        mean = f"  mean score {sum(self.scores) / len(self.scores):.2f}" if self.scores else ""
        line = f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{self.total} {label}{mean}"
        print(f"\r{line:<100}" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)
