"""The `rlm` command: `rlm run` asks a question about a file; `rlm export` writes a trace as a notebook;
`rlm trace convert` writes a trace in the reference implementation's log format; `rlm serve-model` serves
an offline policy."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rlm_kernel.core import RLM, RunInterrupted
from rlm_kernel.core.approve import ApprovalUnavailable
from rlm_kernel.core.context import ContextError, load_context
from rlm_kernel.core.trace import Trace

DEFAULT_QUERY = "Summarize the context."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2, as argparse does, minus the usage dump
        print(f"rlm: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _run_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="answer a question about a file or folder with an RLM")
    p.add_argument("--context", required=True, help="file, folder or glob to load as the context")
    p.add_argument("--query", default=DEFAULT_QUERY, help="the question (default: %(default)r)")
    p.add_argument("--model", required=True, help="litellm model name, e.g. openai/gpt-4o-mini or scripted/demo")
    p.add_argument("--sub-model", help="model for llm_query and child RLMs (default: --model)")
    p.add_argument("--api-base", help="base URL of an OpenAI-compatible server")
    p.add_argument("--max-depth", type=int, default=1, help="RLM levels: 1 = sub-model calls only (default 1)")
    p.add_argument(
        "--transport",
        choices=["litellm", "direct"],
        default="litellm",
        help="litellm (any provider, the default) or direct: post to the OpenAI-compatible --api-base itself",
    )
    p.add_argument("--max-iterations", type=int, default=20)
    p.add_argument("--max-llm-calls", type=int)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--max-cost-usd", type=float)
    p.add_argument("--max-seconds", type=float)
    p.add_argument("--cell-timeout", type=float)
    p.add_argument("--trace-out", help="append the run's events to this JSONL file")
    p.add_argument(
        "--approve",
        action="store_true",
        help="show each model-written block and run it only on a yes (needs a terminal)",
    )
    p.add_argument("--isolated", action="store_true", help="run model code in a separate resource-limited kernel")


def _rlm(args: argparse.Namespace) -> RLM:
    return RLM(
        model=args.model,
        sub_model=args.sub_model,
        api_base=args.api_base,
        max_depth=args.max_depth,
        max_iterations=args.max_iterations,
        max_llm_calls=args.max_llm_calls,
        max_tokens=args.max_tokens,
        max_cost_usd=args.max_cost_usd,
        max_seconds=args.max_seconds,
        cell_timeout=args.cell_timeout,
        trace_path=args.trace_out,
        approve=args.approve,
        isolation="kernel" if args.isolated else None,
        transport=args.transport,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        context = load_context(args.context)
        rlm = _rlm(args)
    except (ContextError, ValueError) as exc:  # ValueError: settings that do not fit together
        print(f"rlm: error: {exc}", file=sys.stderr)
        return 2
    try:
        result = rlm.completion(context, args.query)
    except (ContextError, ApprovalUnavailable) as exc:
        print(f"rlm: error: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        result = exc.result
    print("Answer:")
    print(result.text or "(no answer)")
    print("\nCall tree:")
    print(result.trace.outline())
    print(f"\nTotal: {result.summary()}")
    if result.status not in ("done", "max_iterations"):
        print(f"rlm: error: {result.error}", file=sys.stderr)
        return 1
    return 0


def _export_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("export", help="write a JSONL trace as a notebook that reads as a report and re-runs offline")
    p.add_argument("trace", help="the JSONL trace (rlm run --trace-out)")
    p.add_argument("notebook", help="the .ipynb to write")
    p.add_argument("--context", help="the run's context (file, folder or glob), embedded so the notebook re-runs")
    embed = p.add_mutually_exclusive_group()
    embed.add_argument(
        "--with-context",
        dest="with_context",
        action="store_true",
        default=None,
        help="embed the context whatever its size",
    )
    embed.add_argument("--no-context", dest="with_context", action="store_false", help="never embed the context")


def _cmd_export(args: argparse.Namespace) -> int:
    from rlm_kernel.jupyter.export import write_notebook  # Jupyter only for this command

    trace = Trace.from_jsonl(args.trace)
    context = load_context(args.context) if args.context else None
    exported = write_notebook(trace, args.notebook, context=context, with_context=args.with_context)
    print(f"wrote {exported.path} ({exported.cells} cells); context: {exported.context}")
    return 0


def _trace_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("trace", help="work with JSONL traces")
    trace_sub = p.add_subparsers(dest="trace_command", required=True, parser_class=_Parser)
    convert = trace_sub.add_parser("convert", help="write a trace in another log format")
    convert.add_argument("trace", help="the JSONL trace")
    convert.add_argument(
        "--to",
        required=True,
        choices=["reference"],
        help="reference: the log format of alexzhang13/rlm, for its viewer",
    )
    convert.add_argument("out", help="the file to write")


def _cmd_trace(args: argparse.Namespace) -> int:
    from rlm_kernel.core.reference_format import write_reference

    lines = write_reference(Trace.from_jsonl(args.trace), args.out)
    print(f"wrote {args.out}: a metadata line and {lines - 1} iteration lines of the root call")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "export": _cmd_export,
    "trace": _cmd_trace,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="rlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _run_parser(sub)
    _export_parser(sub)
    _trace_parser(sub)
    sub.add_parser("serve-model", help="serve an offline policy as an OpenAI-compatible server", add_help=False)
    sub.add_parser("bench", help="long-context benchmarks, their report, and performance figures", add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve-model"]:
        from rlm_kernel.models.server import main as serve_main

        return serve_main(argv[1:])
    if argv[:1] == ["bench"]:
        from rlm_kernel.bench import main as bench_main

        return bench_main(argv[1:])
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (OSError, ValueError) as exc:  # a missing file, a file that is not a trace (ContextError is a ValueError)
        print(f"rlm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
