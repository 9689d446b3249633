"""`rlm bench ray`: one batch on the thread pool and on a local Ray cluster, side by side (issue 22 item 9).

cpu:      each question's model-written code does 0.5 s of pure Python (a loop whose length is measured on this
          machine before the figure, so that it is 0.5 s here) plus one sub-call, and the root call and the
          sub-call each take 200 ms at the server: throughput (questions a second) on `concurrency` threads of this
          process against `executor=RayExecutor(num_cpus=CPUs / concurrency)`: the same number of questions at once
          on each side, some computing while others wait on the model (target: Ray >= 1.7x on 2 cores, since
          threads share one GIL). The sides take turns, twice; each timed batch follows a warm-up batch and waits
          for the machine to settle (Ray's processes go on starting for seconds); the best of each side counts.
overhead: trivial questions (no latency, no work), one at a time: the extra wall time a question costs on Ray
          (target: < 50 ms).
context:  one 100 MB string shared by 100 questions, 4 at a time, with each of `RayExecutor`'s `context_copies`:
          how many times it went to the object store (target: once), and the most private memory it added to
          the processes, in copies of the context (target: at most one per node): the peak of the batch with it
          less the peak of the same batch, on the same warm workers, with a one-line context. The object store's
          own copy is the one put; the store's memory is a pool of fixed size (freed objects' pages stay mapped
          for the next), so it is counted as puts, not in the copies.
Memory is the proportional set size (shared pages split between the processes that map them; the context figure:
the unique set size, pages no other process maps) of this process and every Ray process together, sampled every
0.1 s (every 1 s during the timed CPU figure). Each figure is printed with the load average, since the machine may
be shared; the cluster is one local node of this machine's CPUs, whose idle workers are kept for a minute so that
the context figure's two batches run on the same processes.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rlm_kernel.bench.serving import serve, server_stats
from rlm_kernel.core import RLM
from rlm_kernel.core.errors import ConfigError

Messages = list[dict[str, Any]]
CPU_SHARE = 0.5  # of a CPU, what each question of the context figure asks of a Ray node
CONTEXT_MB = 100
WORK_SECONDS = 0.5
LOOPS_VARIABLE = "RLM_BENCH_CPU_LOOPS"  # the loop's length, from the bench to the model server it starts


def cpu_work(loops: int) -> str:
    return f"n = 0\nfor i in range({loops}):\n    n += i % 7\n"


def loops_for(seconds: float) -> int:
    """How long `cpu_work`'s loop must be to take `seconds` of one core here (the best of three timings)."""
    sample = 1_000_000
    code = compile(cpu_work(sample), "<cpu-work>", "exec")
    best = min(_timed(code) for _ in range(3))
    return max(1, int(sample * seconds / best))


def _timed(code: Any) -> float:
    started = time.perf_counter()
    exec(code, {})
    return time.perf_counter() - started


class CpuWork:
    """Root: a block of CPU-bound Python, then one sub-call whose reply it submits. Sub-call: echoes."""

    def __init__(self) -> None:
        self.work = cpu_work(int(os.environ.get(LOOPS_VARIABLE, "3000000")))

    def __call__(self, messages: Messages) -> str:
        if messages[0]["role"] == "system":
            return f"Working.\n```repl\n{self.work}FINAL(llm_query('q:' + context[:20]))\n```\n"
        return "sub:" + str(messages[-1]["content"])


class Trivial:
    def __call__(self, messages: Messages) -> str:
        return "Done.\n```repl\nFINAL('ok')\n```\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--questions", type=int, default=16, help="questions of the CPU-bound batch")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--skip-context", action="store_true", help="leave out the 100 MB context figure")


def run(args: argparse.Namespace) -> int:
    try:
        import ray
    except ImportError:
        raise ConfigError("rlm bench ray needs Ray: pip install 'rlm_kernel[ray]'") from None
    from rlm_kernel.distributed.local import local_cluster

    started = time.perf_counter()
    cluster = local_cluster(
        num_cpus=os.cpu_count() or 1,
        object_store_memory=CONTEXT_MB * 3 * 1_000_000,
        _system_config={"idle_worker_killing_time_threshold_ms": 60_000},
    )
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        print(f"ray: a local cluster of {os.cpu_count()} CPUs started in {time.perf_counter() - started:.1f} s")
        cpu_figure(args.questions, args.concurrency)
        overhead_figure()
        if not args.skip_context:
            for copies in ("per_question", "per_node"):
                context_figure(copies)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return 0


def cpu_figure(questions: int, concurrency: int, rounds: int = 2) -> None:
    from rlm_kernel.distributed import RayExecutor

    loops = loops_for(WORK_SECONDS)
    print(f"cpu: {loops:,} loop steps take {WORK_SECONDS} s of one core here ({_load()})")
    with serve("rlm_kernel.bench.ray:CpuWork", 200.0, env={LOOPS_VARIABLE: str(loops)}) as url:
        rlm = RLM(model="openai/policy", api_base=url)
        batch = [(f"c{i}", f"question {i}") for i in range(questions)]
        walls: dict[str, list[float]] = {"threads": [], "ray": []}
        share = (os.cpu_count() or 1) / concurrency  # as many questions at once on Ray as on the threads
        ray_executor = RayExecutor(num_cpus=share)
        for _ in range(rounds):  # the sides take turns, so that neither gets all of a quiet (or busy) spell
            for name, executor in (("threads", None), ("ray", ray_executor)):
                rlm.batch(batch[:concurrency], executor=executor, concurrency=concurrency)  # warm: processes, imports
                print(f"cpu {name:>7}: {_settled()}", end="")
                before = server_stats(url)["requests"]
                with _peak_memory(every=1.0) as peak:
                    started = time.perf_counter()
                    results = rlm.batch(batch, concurrency=concurrency, executor=executor)
                    walls[name].append(time.perf_counter() - started)
                right = sum(r.answer == f"sub:q:c{i}" for i, r in enumerate(results))
                requests = server_stats(url)["requests"] - before
                print(
                    f"{f' (num_cpus={share:g})' if executor else ''}: {questions} questions ({WORK_SECONDS} s of "
                    f"Python + 2 calls at 200 ms each), concurrency {concurrency}: {walls[name][-1]:.2f} s, "
                    f"{questions / walls[name][-1]:.2f} questions/s; {right}/{questions} right, {requests} requests; "
                    f"peak memory {peak['mb']:.0f} MB; {_load()}"
                )
    best = {name: min(times) for name, times in walls.items()}
    print(
        f"cpu: Ray {best['threads'] / best['ray']:.2f}x the thread pool's throughput, the best of {rounds} runs each "
        f"(target >= 1.7x on 2 cores)"
    )


def _settled(most_seconds: float = 30.0) -> str:
    """Wait until this process and its descendants (the model server, Ray's processes) use under a fifth of a core
    over a second: Ray's agents and new workers go on importing for seconds after the cluster and a warm-up answer.
    Says how long that took."""
    import psutil

    started = time.monotonic()
    while time.monotonic() - started < most_seconds:
        processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
        before = sum(_cpu_seconds(p) for p in processes)
        time.sleep(1.0)
        if sum(_cpu_seconds(p) for p in processes) - before < 0.2:
            break
    return f"settled in {time.monotonic() - started:.0f} s"


def _cpu_seconds(process: Any) -> float:
    import psutil

    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def overhead_figure(questions: int = 20) -> None:
    with serve("rlm_kernel.bench.ray:Trivial") as url:
        rlm = RLM(model="openai/policy", api_base=url)
        batch = [(f"c{i}", f"q{i}") for i in range(questions)]
        walls = {}
        for executor in ("threads", "ray"):
            started = time.perf_counter()
            rlm.batch(batch, concurrency=1, executor=None if executor == "threads" else "ray")
            walls[executor] = time.perf_counter() - started
    extra = (walls["ray"] - walls["threads"]) / questions * 1000
    print(
        f"overhead: {questions} trivial questions one at a time: threads {walls['threads']:.2f} s, Ray "
        f"{walls['ray']:.2f} s: {extra:.0f} ms a question on Ray (target < 50 ms); {_load()}"
    )


def context_figure(copies: str, megabytes: int = CONTEXT_MB, questions: int = 100, concurrency: int = 4) -> None:
    from rlm_kernel.distributed import RayExecutor

    executor = RayExecutor(num_cpus=CPU_SHARE, context_copies=copies)  # type: ignore[arg-type]
    context = "x" * (megabytes * 1_000_000)
    peaks, walls = {}, {}
    with serve("rlm_kernel.bench.ray:Trivial") as url:
        rlm = RLM(model="openai/policy", api_base=url)
        for name, shared in (("small", "one line"), ("large", context)):
            with _peak_memory(unique=True) as peak:
                started = time.perf_counter()
                results = rlm.batch(
                    [(shared, f"q{i}") for i in range(questions)], executor=executor, concurrency=concurrency
                )
                walls[name] = time.perf_counter() - started
            peaks[name] = peak["mb"]
    added = (peaks["large"] - peaks["small"]) / megabytes
    puts = sum(kept is context for kept, _ in executor.contexts.values())
    print(
        f"context ({copies}): one {megabytes} MB context shared by {questions} questions, {concurrency} at a time, on "
        f"one node: put in the object store {puts} time(s); it added at most {added:.1f} "
        f"copies of itself to the processes' memory; {sum(r.answer == 'ok' for r in results)}/{questions} "
        f"answered in {walls['large']:.1f} s ({walls['small']:.1f} s with a one-line context); {_load()}"
    )


def _load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


@contextmanager
def _peak_memory(every: float = 0.1, unique: bool = False) -> Iterator[dict[str, float]]:
    """The most memory of this process and all its descendants (Ray's processes are), every `every` seconds: the sum
    of their proportional set sizes, so that the object store's shared pages count once (`unique`: of their unique
    set sizes, the pages no other process maps). Reading a process's memory map costs CPU (about a fifth of a core
    for Ray's dozen processes every 0.1 s), so a timed figure samples seldom."""
    import psutil

    peak = {"mb": 0.0}
    done = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not done.wait(every):
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    info = process.memory_full_info()
                    total += info.uss if unique else info.pss
                except psutil.Error:
                    continue
            peak["mb"] = max(peak["mb"], total / 1e6)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
