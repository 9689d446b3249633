"""Safety figures (issue 25): the sandbox's memory and task limits under attack, builtins taken away, hostile
contexts. Printed by `python -m rlm_kernel.bench.reliability`; the same attacks are tests in
tests/test_sandbox_limits.py and tests/test_reliability.py."""

from __future__ import annotations

import sys
import textwrap
import time

from rlm_kernel import RLM
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
