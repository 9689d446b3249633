"""The `rlm` command (also `python -m rlm_kernel`): `rlm run` asks a question about a file; `rlm export` writes a
trace as a notebook; `rlm trace convert` writes a trace in the reference implementation's log format; `rlm install`
installs the Jupyter kernelspec; `rlm serve-model` serves an offline policy; `rlm bench` runs the benchmarks."""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from rlm_kernel.cli.settings import add_setting_options, given_settings
from rlm_kernel.cli.status import StatusLine
from rlm_kernel.core import RLM, RLMResult, RunInterrupted
from rlm_kernel.core.errors import ConfigError, RLMError, RunFailed
from rlm_kernel.core.redact import Redactor
from rlm_kernel.core.session import Session
from rlm_kernel.core.trace import Trace
from rlm_kernel.loaders import Loaded, describe_skipped, load_context, load_files

DEFAULT_QUERY = "Summarize the context."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit status 2, as argparse does, minus the usage dump
        print(f"rlm: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="answer a question about a file or folder with an RLM",
        usage="rlm run --context PATH [--query QUESTION ...] [--model MODEL] [options]",
    )
    question = p.add_argument_group("question")
    question.add_argument("--context", required=True, help="file, folder or glob to load as the context; - reads stdin")
    question.add_argument(
        "--query",
        action="append",
        help=f"the question (default: {DEFAULT_QUERY!r}); given again, a follow-up in the same session",
    )
    question.add_argument(
        "--skip-unreadable", action="store_true", help="leave out the files of a folder that cannot be read"
    )
    question.add_argument("--tools", help="the user's functions for the model, as package.module:function,...")
    question.add_argument(
        "--answer-type", help="the type the answer must fit: int, float, str, bool, list, dict or module:Type"
    )
    question.add_argument(
        "--format",
        choices=("text", "markdown"),
        default="text",
        help="text (the default), or markdown: answer, call tree and totals as a Markdown report (rlm run ... > r.md)",
    )
    add_setting_options(p)  # every run setting, from core's table, in groups


def _cmd_run(args: argparse.Namespace) -> int:
    if args.context == "-":  # a pipe: `grep ERROR app.log | rlm run --context - ...`
        loaded = Loaded(sys.stdin.read())
    else:
        loaded = load_files(args.context, skip_unreadable=args.skip_unreadable)
    if loaded.skipped:
        print(describe_skipped(loaded.skipped), file=sys.stderr)
    tools = [_imported(spec, "--tools") for spec in args.tools.split(",") if spec.strip()] if args.tools else None
    answer_type = _answer_type(args.answer_type)
    queries = args.query or [DEFAULT_QUERY]
    settings = given_settings(args)
    rlm = RLM(settings.pop("model", None), **settings, tools=tools)  # no model anywhere: the engine's own error
    with rlm.session() as session:
        for number, query in enumerate(queries, 1):
            result = _complete(rlm, session, loaded.context, query, answer_type)
            title = f"Answer {number}" if len(queries) > 1 else "Answer"
            print(_report(title, result) if args.format == "markdown" else _plain(title, result))
            if result.status not in ("done", "max_iterations"):
                raise RunFailed(f"run {result.status}: {result.error}", result)
    return 0


def _plain(title: str, result: RLMResult) -> str:
    tree = result.trace.outline()
    return f"{title}:\n{result.text or '(no answer)'}\n\nCall tree:\n{tree}\n\nTotal: {result.summary()}"


def _report(title: str, result: RLMResult) -> str:
    """The same as Markdown: the answer as the model wrote it (rendered), the tree as a fenced block."""
    fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`+", result.trace.outline()))])
    tree = f"{fence}text\n{result.trace.outline()}\n{fence}"
    question = " ".join(result.query.split())
    return (
        f"## {title}\n\n> {question}\n\n{result.text or '*(no answer)*'}\n\n### Call tree\n\n{tree}\n\n"
        f"**Total**: {result.summary()}\n"
    )


_BUILTIN_TYPES: dict[str, type] = {t.__name__: t for t in (int, float, str, bool, list, dict)}


def _answer_type(spec: str | None) -> Any:
    if spec is None:
        return None
    return _BUILTIN_TYPES.get(spec) or _imported(spec, "--answer-type")


def _imported(spec: str, option: str) -> Any:
    module, _, name = spec.strip().partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{option}: cannot import {spec.strip()!r} (package.module:name): {exc}") from None


def _complete(rlm: RLM, session: Session, context: object, query: str, answer_type: Any) -> RLMResult:
    # On a terminal, a live status line while the run goes; nothing of it when stderr is a file or a pipe.
    status = StatusLine(sys.stderr) if sys.stderr.isatty() else None
    if status is not None:
        rlm.on_event.append(status)
    try:
        return session.completion(context, query, answer_type=answer_type)
    except RunInterrupted as stop:
        print(f"interrupted after {stop.result.seconds:.1f} s", file=sys.stderr)
        raise
    finally:
        if status is not None:
            rlm.on_event.remove(status)
            status.close()


def _export_parser(sub: argparse._SubParsersAction) -> None:
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
    from rlm_kernel.formats.notebook import write_notebook  # nbformat-shaped output only for this command

    trace = Trace.from_jsonl(args.trace)
    context = load_context(args.context) if args.context else None
    exported = write_notebook(trace, args.notebook, context=context, with_context=args.with_context)
    print(f"wrote {exported.path} ({exported.cells} cells); context: {exported.context}")
    return 0


def _trace_parser(sub: argparse._SubParsersAction) -> None:
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
    convert.add_argument("out", help="the file to write (one per run, OUT-run1.jsonl..., when a file holds several)")
    convert.add_argument("--run", type=int, help="convert only run N (1 = the first appended) into OUT")


def _cmd_trace(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlm_kernel.formats.reference import write_reference

    runs = Trace.runs_from_jsonl(args.trace)
    if args.run is not None:
        if not 1 <= args.run <= len(runs):
            raise ConfigError(f"--run {args.run}: {args.trace} holds {len(runs)} run(s), numbered from 1")
        chosen = {args.run: Path(args.out)}
    elif len(runs) == 1:
        chosen = {1: Path(args.out)}
    else:
        out = Path(args.out)
        chosen = {n: out.with_name(f"{out.stem}-run{n}{out.suffix}") for n in range(1, len(runs) + 1)}
        print(f"{args.trace} holds {len(runs)} runs: one reference log each (--run N for one)")
    for number, path in chosen.items():
        lines = write_reference(runs[number - 1], path)
        print(f"wrote {path}: run {number} of {len(runs)}, a metadata line and {lines - 1} iteration lines")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "export": _cmd_export,
    "trace": _cmd_trace,
}


def _install(argv: list[str]) -> int:
    from rlm_kernel.jupyter import install  # jupyter_client only for this command

    parser = _Parser(prog="rlm install", description="install the rlm Jupyter kernelspec for this interpreter")
    install.add_arguments(parser)
    return install.run(parser.parse_args(argv))


def _serve_model(argv: list[str]) -> int:
    from rlm_kernel.models.server import main as serve_main

    return serve_main(argv)


def _bench(argv: list[str]) -> int:
    from rlm_kernel.bench import main as bench_main

    return bench_main(argv)


# Commands that parse their own options (each imported only when run), with their help line here.
_OWN_PARSERS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "install": (_install, "install the rlm Jupyter kernelspec (--user, --sys-prefix, --prefix, --name)"),
    "serve-model": (_serve_model, "serve an offline policy as an OpenAI-compatible server"),
    "bench": (_bench, "long-context benchmarks, their report, and performance figures"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="rlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _run_parser(sub)
    _export_parser(sub)
    _trace_parser(sub)
    for name, (_, help_line) in _OWN_PARSERS.items():
        sub.add_parser(name, help=help_line, add_help=False)
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in _OWN_PARSERS:
        return _OWN_PARSERS[argv[0]][0](argv[1:])
    args = parser.parse_args(argv)
    code = _command(args)
    if from_command_line:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Exit once the answer is printed: a non-daemon thread that model code left running must not hold the
    process (Python would wait for it). Exit handlers still run; only the wait for such threads is skipped."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()
        os._exit(code)


def _command(args: argparse.Namespace) -> int:
    try:
        return _COMMANDS[args.command](args)
    except RLMError as exc:  # the one translation of errors: one line, and the error's exit status
        print(f"rlm: error: {Redactor().text(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a missing or unreadable file
        print(f"rlm: error: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
