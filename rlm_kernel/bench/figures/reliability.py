"""Reliability figures: faults, interrupts, runaway code and budgets, measured.

    python -m rlm_kernel.bench.figures.reliability
    rlm bench reliability [--figures loaders,typed,streaming,cache]

Each figure comes from a real run against `rlm serve-model` on 127.0.0.1 or an
offline scripted policy; the same behaviours are asserted in tests/test_reliability.py,
tests/test_budgets.py and tests/test_notebooks.py.
"""

from __future__ import annotations

import _thread
import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rlm_kernel import RLM
from rlm_kernel.bench import UsageError, safety
from rlm_kernel.core import RunInterrupted
from rlm_kernel.models.policies import ScriptedReplies, register_policy
from rlm_kernel.models.server import ModelServer

FENCE = "`" * 3


def _block(code: str) -> str:
    return f"{FENCE}repl\n{code}\n{FENCE}"


def faults() -> str:
    root = ScriptedReplies(
        [_block("replies = llm_query_batched([f'p{i}' for i in range(1000)])"), _block("FINAL(replies)")]
    )

    def policy(messages):
        return root(messages) if messages[0]["role"] == "system" else "ok"

    kinds = ("429", "500", "timeout", "malformed")
    with ModelServer(policy, fail_rate=0.4, faults=kinds, timeout_fault_seconds=5, seed=11) as server:
        started = time.perf_counter()
        result = RLM(
            model="openai/policy", api_base=server.url, concurrency=64, call_timeout=1.0, retries=3, retry_backoff=0.05
        ).completion("ctx", "q")
        seconds = time.perf_counter() - started
        stats = server.stats()
    ok = sum(1 for r in result.answer if r == "ok")
    injected = ", ".join(f"{stats['faults'][k]} {k}" for k in kinds)
    return (
        f"1,000 sub-calls at 40% injected faults ({injected}): {ok} answered, {1000 - ok} hold their error text, "
        f"0 crashed; {stats['requests']:,} requests served = {result.usage.llm_calls:,} calls on the ledger; {seconds:.1f} s"
    )


def interrupt() -> str:
    release = threading.Event()

    def policy(messages):
        if messages[0]["role"] == "system":
            return _block("out = llm_query_batched(['slow'] * 64)")
        release.wait(30)
        return "late"

    with ModelServer(policy) as server:
        stamps: list[float] = []

        def fire() -> None:
            while server.stats()["max_in_flight"] < 64:
                time.sleep(0.01)
            stamps.append(time.monotonic())
            _thread.interrupt_main()

        threading.Thread(target=fire, daemon=True).start()
        try:
            RLM(model="openai/policy", api_base=server.url, concurrency=64).completion("ctx", "q")
            raise AssertionError("the run was not interrupted")
        except RunInterrupted as stop:
            stopped = time.monotonic() - stamps[0]
            root = stop.result.trace.root
            assert root is not None  # a finished run has its root call
            cancelled = sum(1 for s in root.subcalls if s.error == "cancelled")
        release.set()
    return f"interrupt with 64 sub-calls in flight: run stopped {stopped * 1000:.0f} ms after the interrupt; {cancelled}/64 calls cancelled and recorded"


def runaway_code() -> str:
    lines = []
    for label, code in (
        ("busy loop", "while True:\n    pass"),
        ("time.sleep(10**6)", "import time\ntime.sleep(10**6)"),
    ):
        model = register_policy([_block(code), _block("FINAL('went on')")])
        started = time.perf_counter()
        result = RLM(model=model, cell_timeout=1.0).completion("ctx", "q")
        lines.append(
            f"{label} stopped and the run went on ({result.answer!r}) in {time.perf_counter() - started:.2f} s"
        )
    return "cell_timeout=1 s on the main thread: " + "; ".join(lines)


def budgets() -> str:
    def greedy(messages):
        if messages[0]["role"] != "system":
            return "reply " * 10
        return _block("print(llm_query_batched(['x ' * 40] * 8))")

    model = register_policy(greedy)
    rows = []
    for limits in ({"max_llm_calls": 25}, {"max_tokens": 8_000}, {"max_seconds": 0.5}):
        result = RLM(model=model, max_iterations=50, concurrency=8, **limits).completion("ctx", "q")
        ((name, limit),) = limits.items()
        used = {
            "max_llm_calls": result.usage.llm_calls,
            "max_tokens": result.usage.tokens,
            "max_seconds": round(result.seconds, 2),
        }[name]
        rows.append(f"{name}={limit}: used {used}, stopped by {result.limit}")
    return "budgets (8 concurrent sub-calls per step): " + "; ".join(rows)


def isolation() -> str:
    escapes = {
        "memory bomb": "x = bytearray(8 * 1024**3)",
        "fork": "import os\nos.fork()",
        "write outside its directory": f"open({tempfile.mkdtemp() + '/escape.txt'!r}, 'w')",
        "read a notebook variable": "print(secret)",
    }
    reply = "\n".join(_block(code) for code in escapes.values())
    model = register_policy([reply, _block("FINAL('went on')")])
    notebook = sys.modules["__main__"]  # where a notebook's variables live
    notebook.secret = "notebook-only"  # type: ignore[attr-defined]
    started = time.perf_counter()
    result = RLM(model=model, isolation="kernel", isolation_limits={"memory_limit": 1024**3}).completion("ctx", "q")
    del notebook.secret
    seconds = time.perf_counter() - started
    assert result.trace.root is not None  # a finished run has its root call
    cells = result.trace.root.iterations[0].cells
    stopped = "; ".join(f"{what}: {_error_name(cell.error)}" for what, cell in zip(escapes, cells))
    return f"isolation='kernel' (1 GiB memory limit): {stopped}; the run went on ({result.answer!r}); {seconds:.2f} s with the kernel's start"


def isolation_escapes() -> str:
    from rlm_kernel.bench.figures.escapes import ATTEMPTS, escapes
    from rlm_kernel.isolation import AuditKernelREPL, KernelREPL

    rows = []
    for mode, repl in (("kernel", KernelREPL), ("kernel-audit", AuditKernelREPL)):
        through = [name for name, escaped in escapes(repl).items() if escaped]
        made = len(ATTEMPTS)
        rows.append(
            f"isolation='{mode}': {made} escape attempts made, {made - len(through)} stopped"
            + (f" (got through: {'; '.join(through)})" if through else "")
        )
    return "\n".join(rows)


def timeout_dodges() -> str:
    from rlm_kernel.core.repl import NamespaceREPL

    dodges = {
        "bare except around time.sleep": "import time\nwhile True:\n try: time.sleep(0.2)\n except: pass",
        "except BaseException: continue": "while True:\n    try:\n        sum(range(10**6))\n    except BaseException:\n"
        "        continue",
        "the handler switches tracing off": "import sys, time\nwhile True:\n try: time.sleep(0.2)\n except: sys.settrace(None)",
        "a nested block that ends first": "print(child())\nwhile True:\n    pass",
    }
    inner = NamespaceREPL(cell_timeout=30)
    worst, stopped = 0.0, 0
    for code in dodges.values():
        repl = NamespaceREPL(cell_timeout=1.0)
        repl.set("child", lambda: inner.execute("x = 1").error)
        result = repl.execute(code)
        stopped += bool(result.error and "TimeoutError" in result.error)
        worst = max(worst, result.seconds)
    child = register_policy(
        lambda m: (
            _block("FINAL('child')")
            if "child" in str(m[1]["content"])[:30]
            else _block("r = rlm_query('text', 'child')\nwhile True:\n    pass")
        )
    )
    started = time.perf_counter()
    run = RLM(model=child, max_depth=2, cell_timeout=1.0, max_iterations=1).completion("ctx", "q")
    seconds = time.perf_counter() - started
    return (
        f"timeout dodges at cell_timeout=1 s in process: {stopped}/{len(dodges)} stopped (the slowest in {worst:.2f} s); "
        f"an rlm_query at depth 0 followed by a busy loop: stopped, run over in {seconds:.2f} s ({run.status})"
    )


def redaction_forms() -> str:
    import json
    from urllib.parse import quote, quote_plus

    from rlm_kernel.core.redact import Redactor

    secret = "p\\a\"ss/w'ord wörd+&="
    forms = {
        "plain": secret,
        "repr": repr(secret),
        "print(os.environ)": repr({"AWS_SECRET_ACCESS_KEY": secret}),
        "JSON": json.dumps(secret),
        "JSON of repr": json.dumps(repr(secret)),
        "URL-encoded": quote(secret, safe=""),
        "form-encoded": quote_plus(secret),
    }
    saved = dict(os.environ)
    os.environ.update(
        AWS_SECRET_ACCESS_KEY=secret, DATABASE_URL="postgres://u:db-passw0rd@h/db", MY_SERVICE_KEY="svc-0123456789"
    )
    try:
        redactor = Redactor()
        cases = {f"AWS_SECRET_ACCESS_KEY, {name}": (text, "ss/w") for name, text in forms.items()}
        cases.update(
            {
                "a password in DATABASE_URL": ("postgres://u:db-passw0rd@h/db", "db-passw0rd"),
                "MY_SERVICE_KEY": ("svc-0123456789", "svc-0123456789"),
                "sk-... shape": ("sk-proj-abcdefghijklmnop1234", "abcdefghijklmnop"),
                "ghp_... shape": ("ghp_" + "a1" * 18, "a1a1a1"),
                "AKIA... shape": ("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7"),
            }
        )
        missed = [name for name, (text, part) in cases.items() if part in redactor.text(text)]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return f"redaction: {len(cases) - len(missed)}/{len(cases)} forms redacted" + (
        f" (missed: {', '.join(missed)})" if missed else ""
    )


def abandoned_children() -> str:
    """A depth-0 block times out while its four children call a model: what happens after completion() returns."""

    def policy(messages: list[dict[str, object]]) -> str:
        if messages[0]["role"] != "system":
            return "sub-answer"
        if str(messages[1]["content"]).startswith("Question: child"):
            return _block("x = llm_query('more')\nprint(x)")
        if sum(m["role"] == "assistant" for m in messages) == 0:
            return _block("answers = rlm_query_batched([('text', f'child {i}') for i in range(4)])")
        return _block("FINAL('gave up waiting')")

    with ModelServer(policy, latency_ms=150) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, max_depth=2, cell_timeout=1.0, child_max_iterations=50)
        result = rlm.completion("text", "root")
        at_return = server.stats()["requests"]
        time.sleep(1.5)
        after = server.stats()["requests"] - at_return
    running = sum(node.status == "running" for node in result.trace.walk())
    return (
        f"abandoned children (cell_timeout=1 s over 4 children): model calls after return {after}, nodes left "
        f"running {running}, usage {result.usage.llm_calls} calls = server {at_return}"
    )


def _error_name(error: str | None) -> str:
    if not error:
        return "NOT STOPPED"
    last = error.strip().splitlines()[-1]
    return last.split(":", 1)[0]


FIGURES: dict[str, Callable[[], str]] = {
    "faults": faults,
    "interrupt": interrupt,
    "runaway": runaway_code,
    "budgets": budgets,
    "isolation": isolation,
    "escapes": isolation_escapes,
    "dodges": timeout_dodges,
    "children": abandoned_children,
    "redaction": redaction_forms,
    "sandbox": safety.sandbox_limits,
    "builtins": safety.builtins_taken_away,
    "contexts": safety.hostile_contexts,
    "loaders": safety.loaders,
    "typed": safety.typed_answers,
    "streaming": safety.streaming_redaction,
    "cache": safety.response_cache,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--figures", default=",".join(FIGURES), help=f"comma-separated: {','.join(FIGURES)} (default: all)"
    )


def run(args: argparse.Namespace) -> int:
    chosen = [f.strip() for f in args.figures.split(",") if f.strip()]
    if not chosen or not set(chosen) <= set(FIGURES):
        raise UsageError(f"--figures takes {','.join(FIGURES)}, not {args.figures!r}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    RLM(model="scripted/demo").completion("warm up litellm", "warm up")
    for name in chosen:
        print(FIGURES[name]())
    return 0


def main() -> int:
    return run(argparse.Namespace(figures=",".join(FIGURES)))


if __name__ == "__main__":
    raise SystemExit(main())
