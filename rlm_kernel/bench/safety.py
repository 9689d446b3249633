"""Safety figures (issue 25): the sandbox's memory and task limits under attack, builtins taken away, hostile
contexts, hostile files for the loaders, hostile typed answers, secrets split across streamed pieces and a cache
folder or entry that cannot be trusted. Printed by `python -m rlm_kernel.bench.figures.reliability`, the last four a
row per attack with what happened and pass or FAIL; the same attacks are tests in tests/test_sandbox_limits.py,
tests/test_reliability.py, tests/test_loader_attacks.py, tests/test_typed_attacks.py,
tests/test_stream_redaction.py and tests/test_cache_attacks.py."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from rlm_kernel import RLM
from rlm_kernel.bench.serving import environment_kept
from rlm_kernel.core.errors import ContextError
from rlm_kernel.core.repl import NamespaceREPL

MiB = 1024 * 1024

_EVERYWHERE = """
import os
def fill(path, total, chunk=b"x" * (1 << 20)):
    try:
        with open(path, "wb") as file:
            for _ in range(total >> 20):
                file.write(chunk)
    except OSError:
        pass
for place in ("/dev/fill", "/dev/shm/fill", "/tmp/a", "/tmp/b", "/tmp/c"):
    fill(place, 96 << 20)
for i in range(4):
    try:
        fill(f"/proc/self/fd/{os.memfd_create(f'm{i}')}", 24 << 20)
    except OSError:
        break
held = []
try:
    while True:
        held.append(bytearray(16 << 20))
except MemoryError:
    pass
"""

# Model code that starts threads until the sandbox refuses; prints how many started (the attack test runs it too).
THREAD_FLOOD = """
import threading
threading.stack_size(64 * 1024)
release, started = threading.Event(), 0
try:
    for _ in range(1500):
        threading.Thread(target=release.wait, daemon=True).start()
        started += 1
except RuntimeError:
    pass
release.set()
print(started)
"""


def _shmem() -> int:
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields["Shmem"].split()[0]) * 1024


def sandbox_limits() -> str:
    if sys.platform != "linux":
        return "sandbox limits: Linux only"
    import psutil

    from rlm_kernel.isolation import KernelREPL
    from rlm_kernel.isolation.process import WorkerProcess

    memory_limit, file_size_limit = 256 * MiB, 32 * MiB
    with KernelREPL(cell_timeout=60, memory_limit=memory_limit, file_size_limit=file_size_limit) as kernel:
        before = _shmem()
        kernel.execute(textwrap.dedent(_EVERYWHERE))
        worker = kernel._worker
        assert isinstance(worker, WorkerProcess) and worker.pid is not None
        added = _shmem() - before + psutil.Process(worker.pid).memory_info().rss
    with KernelREPL(cell_timeout=60, memory_limit=memory_limit) as kernel:
        worker = kernel._worker
        assert isinstance(worker, WorkerProcess)
        cap = "pids cgroup" if worker.tasks is not None and worker.tasks.path else "RLIMIT_NPROC"
        ran = kernel.execute(textwrap.dedent(THREAD_FLOOD))
        started = ran.stdout.strip() or (ran.error or "no output").strip().splitlines()[-1]
    bound = memory_limit + file_size_limit + 64 * MiB
    return (
        f"sandbox, memory_limit 256 MiB, file_size_limit 32 MiB, /dev, /dev/shm, /tmp, memfds and anonymous memory "
        f"filled at once: host Shmem + worker RSS {added / MiB:.0f} MiB (bound {bound / MiB:.0f} MiB)\n"
        f"sandbox task cap ({cap}): {started} of 1,500 threads started"
    )


_BUILTINS_ATTACKS = (
    "__builtins__ = {}",
    "del __builtins__",
    "__builtins__ = None",
    "import builtins\nbuiltins.print = None\ndel builtins.isinstance",
)


def builtins_taken_away() -> str:
    kept = 0
    for attack in _BUILTINS_ATTACKS:
        repl = NamespaceREPL()
        repl.execute(attack)
        after = repl.execute("print(len(str(isinstance(1, int))))")
        kept += after.error is None and after.stdout == "4\n"
    return f"builtins taken away by model code: {kept}/{len(_BUILTINS_ATTACKS)} put back for the next block"


def _deep(depth: int = 100_000) -> list[object]:
    nested: list[object] = []
    for _ in range(depth):
        nested = [nested]
    return nested


class _ReprLoops:
    def __repr__(self) -> str:
        while True:
            pass


class _LenRaises(str):
    def __len__(self) -> int:
        raise ZeroDivisionError("hostile __len__")


def hostile_contexts() -> str:
    contexts = {
        "100,000-deep list in a dict": {"nested": _deep()},
        "str whose __len__ raises": _LenRaises("text"),
        "value whose __repr__ loops": [{"value": _ReprLoops()}],
    }
    rows = []
    for name, context in contexts.items():
        started = time.monotonic()
        try:
            RLM(model="scripted/demo").completion(context, "What is in it?")
            outcome = "NOT REFUSED"
        except ContextError as exc:
            outcome = "one ContextError line" if "\n" not in str(exc) else "a multi-line error"
        rows.append(f"{name}: {outcome} in {time.monotonic() - started:.1f} s")
    return "hostile contexts: " + "; ".join(rows)


def _verdict(attack: str, happened: str, held: bool) -> str:
    return f"{attack}: {happened} -- {'pass' if held else 'FAIL'}"


def _within(seconds: float, work: Callable[[], object]) -> tuple[str, object, float]:
    """("returned" | "raised" | "hung", the value or exception, seconds): a hang is left on a daemon thread."""
    outcome: list[tuple[str, object]] = []

    def run() -> None:
        try:
            outcome.append(("returned", work()))
        except Exception as exc:
            outcome.append(("raised", exc))

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    took = time.monotonic() - started
    return (*outcome[0], took) if outcome else ("hung", None, took)


_PLANTED_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"


def loaders() -> str:
    """A folder's hostile files, each loaded as `rlm run --context` loads it: one ContextError line naming the
    file, within 20 s, and no planted secret in what was read."""
    from rlm_kernel.loaders import load_context

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "id_ed25519").write_text(_PLANTED_KEY)
        attacks: list[tuple[str, Path, str]] = []
        for attack, name, make in (
            ("symlink to a private key outside the folder", "appendix.md", lambda p: p.symlink_to(root / "id_ed25519")),
            ("FIFO in the folder", "pipe.txt", os.mkfifo),
            ("symlink to /dev/zero", "page.html", lambda p: p.symlink_to("/dev/zero")),
        ):
            folder = root / name.replace(".", "_")
            folder.mkdir()
            make(folder / name)
            attacks.append((attack, folder, name))
        for attack, name, content in (
            ("58 KB HTML of '<a ' * 20000", "bomb.html", "<a " * 20_000),
            ("HTML ending in '<![' ", "broken.html", "<p>intro</p><!["),
            ("JSONL with a 100,000-deep line", "deep.jsonl", '{"a": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n"),
        ):
            (root / name).write_text(content)
            attacks.append((attack, root / name, name))
        for attack, path, name in attacks:
            kind, value, took = _within(20, lambda path=path: load_context(str(path)))  # type: ignore[misc]
            if kind == "raised":
                text = str(value)
                happened = f"{type(value).__name__} in {took:.2f} s: {text.replace(scratch, '...')[:110]}"
                held = isinstance(value, ContextError) and name in text and "\n" not in text
            elif kind == "returned":
                happened = f"loaded {len(str(value)):,} chars in {took:.2f} s"
                held = "PRIVATE KEY" not in str(value) and took < 20
            else:
                happened, held = "still loading after 20 s", False
            rows.append(_verdict(f"loader, {attack}", happened, held))
    return "\n".join(rows)


_HOSTILE_ANSWERS: dict[str, tuple[object, str, str, object]] = {
    "int answer whose __repr__ raises": (
        int,
        "class Loud:\n    def __repr__(self):\n        raise ZeroDivisionError('repr')\nFINAL(Loud())",
        "FINAL(42)",
        42,
    ),
    "Literal answer whose __eq__ loops": (
        Literal["yes", "no"],
        "class Same:\n    __hash__ = object.__hash__\n    def __eq__(self, other):\n        while True:\n            pass\n"
        "FINAL(Same())",
        "FINAL('yes')",
        "yes",
    ),
    "int subclass whose __int__ loops": (
        int,
        "class Big(int):\n    def __int__(self):\n        while True:\n            pass\nFINAL(Big(7))",
        "FINAL(7)",
        7,
    ),
    "list subclass whose __iter__ raises": (
        list[int],
        "class Bad(list):\n    def __iter__(self):\n        raise RuntimeError('iter')\nFINAL(Bad([1]))",
        "FINAL([1])",
        [1],
    ),
}


def typed_answers() -> str:
    """A typed run whose model first submits a hostile value: the run must go on to the honest answer, the
    model told why the first was not accepted, within 30 s."""
    from rlm_kernel.models.policies import register_policy

    rows = []
    for attack, (answer_type, hostile, honest, expected) in _HOSTILE_ANSWERS.items():
        told: list[bool] = []

        def policy(
            messages: list[dict[str, Any]], hostile: str = hostile, honest: str = honest, told: list[bool] = told
        ) -> str:
            turn = sum(m["role"] == "assistant" for m in messages)
            if turn:
                told.append("not accepted" in str(messages[-1]["content"]))
            return f"```repl\n{hostile if turn == 0 else honest}\n```"

        model = register_policy(policy)
        run = RLM(model=model, max_iterations=3)
        kind, value, took = _within(30, functools.partial(run.completion, "c", "q", answer_type=answer_type))
        if kind == "returned":
            answer = getattr(value, "answer", None)
            happened = f"run went on to {answer!r} in {took:.1f} s; model told: {bool(told and told[0])}"
            held = answer == expected and bool(told and told[0])
        else:
            happened, held = (
                ("still running after 30 s" if kind == "hung" else f"{type(value).__name__} out of completion()"),
                False,
            )
        rows.append(_verdict(f"typed answer, {attack}", happened, held))
    return "\n".join(rows)


def streaming_redaction() -> str:
    """A secret the model writes while streaming, split across two pieces 0.3 s apart: neither half may reach the
    model_text events (what the live views, the JSONL trace and the notebook's widget show)."""
    from rlm_kernel.models.server import ModelServer

    secret = "s3cr3t-value-0123456789"
    cut = len(secret) // 2

    def writer(messages: list[dict[str, Any]]) -> Iterator[str]:
        yield f"The key is {secret[:cut]}"
        time.sleep(0.3)
        yield secret[cut:] + " and that is all.\n```repl\nFINAL('ok')\n```"

    rows = []
    with environment_kept("MY_SERVICE_KEY", "OPENAI_API_KEY"):
        os.environ.update(MY_SERVICE_KEY=secret, OPENAI_API_KEY="sk-test")
        for transport in ("direct", "litellm"):
            events: list[Any] = []
            with ModelServer(writer) as server:
                RLM(
                    model="openai/policy", api_base=server.url, transport=transport, stream=True, on_event=events.append
                ).completion("c", "q")
            texts = [e.data["text"] for e in events if e.kind == "model_text"]
            joined = "".join(texts)
            leaked = secret[:cut] in joined or secret[cut:] in joined
            happened = (
                f"{len(texts)} model_text events; {'a half of the secret shows' if leaked else 'shown as [redacted]'}"
            )
            rows.append(_verdict(f"streaming ({transport}), a secret split across pieces", happened, not leaked))
    return "\n".join(rows)


def response_cache() -> str:
    """The response cache, whose entries are code the engine runs: a folder others can write, a damaged entry,
    two servers behind one OPENAI_API_BASE."""
    from rlm_kernel.core.errors import ConfigError
    from rlm_kernel.models.server import ModelServer

    def policy(messages: list[dict[str, Any]]) -> str:
        if messages[0]["role"] != "system":
            return "sub:" + str(messages[-1]["content"])
        turn = sum(m["role"] == "assistant" for m in messages)
        return "```repl\n" + ("x = llm_query('hello')\nprint(x)" if turn == 0 else "FINAL(x)") + "\n```"

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        shared = Path(scratch, "shared")
        shared.mkdir()
        shared.chmod(0o777)
        try:
            RLM(model="openai/policy", cache=str(shared))
            happened, held = "accepted", False
        except ConfigError as exc:
            happened, held = f"refused: {str(exc).replace(scratch, '...')}", "\n" not in str(exc)
        rows.append(_verdict("cache, a folder others can write", happened, held))

        folder = Path(scratch, "damaged")
        with ModelServer(policy) as server:
            settings: dict[str, Any] = {"model": "openai/policy", "api_base": server.url, "cache": str(folder)}
            RLM(**settings).completion("some context", "q")
            for path in folder.glob("*.json"):
                path.write_text(json.dumps({**json.loads(path.read_text()), "usage": "not a dict"}))
            try:
                again = RLM(**settings).completion("some context", "q")
                requests = server.stats()["requests"]
                happened = (
                    f"a miss: the re-run asked the server again ({requests} requests in all), answer {again.answer!r}"
                )
                held = again.status == "done" and requests == 6
            except Exception as exc:
                happened, held = f"{type(exc).__name__} out of completion()", False
        rows.append(_verdict("cache, an entry whose usage is not a dict", happened, held))

        with environment_kept("OPENAI_API_BASE", "OPENAI_API_KEY"):
            with ModelServer(policy) as one, ModelServer(policy) as two:
                for server in (one, two):
                    os.environ.update(OPENAI_API_BASE=server.url, OPENAI_API_KEY="sk-test")
                    RLM(model="openai/policy", transport="litellm", cache=str(Path(scratch, "two"))).completion(
                        "c", "q"
                    )
                counts = (one.stats()["requests"], two.stats()["requests"])
        happened = f"requests per server {counts[0]}, {counts[1]} (a shared entry would leave the second at 0)"
        rows.append(_verdict("cache, two servers named by OPENAI_API_BASE (litellm)", happened, counts == (3, 3)))
    return "\n".join(rows)
