"""Faults on a real local Ray cluster: a worker process killed mid-question, a node removed, a driver interrupt."""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rlm_kernel import RLM
from rlm_kernel.core.errors import BatchInterrupted
from rlm_kernel.distributed import RayExecutor
from rlm_kernel.distributed.local import node_args
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block

pytestmark = pytest.mark.usefixtures("cluster")

# A question whose context is a file path: its code notes its pid there, then works 4 s (60 s with 'long' in the
# path); others answer at once.
SLOW = block(
    "import os, time\n"
    "if context.endswith('.pids'):\n"
    "    open(context, 'a').write(f'{os.getpid()}\\n')\n"
    "    for _ in range(600 if 'long' in context else 40):\n"
    "        open(context + '.ticks', 'a').write('.')\n"
    "        time.sleep(0.1)\n"
    "FINAL(llm_query('q:' + context))"
)


def _policy() -> Recorder:
    return Recorder(lambda messages: SLOW)


def _wait_for_pid(path: Path, count: int = 1, timeout: float = 60.0) -> list[int]:
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        if path.exists():
            pids = [int(line) for line in path.read_text().split()]
            if len(pids) >= count:
                return pids
        time.sleep(0.05)
    raise AssertionError(f"no question wrote its pid to {path}")


COPIES = pytest.mark.parametrize("copies", ["per_question", "per_node"])  # a Ray task each; a node host's threads


@COPIES
def test_a_killed_worker_process_has_its_question_retried_and_its_calls_stay_counted(tmp_path, copies):
    pids = tmp_path / "q.pids"
    executor = RayExecutor(num_cpus=0.25, max_retries=1, context_copies=copies)
    with ModelServer(_policy()) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        killer = threading.Thread(target=lambda: os.kill(_wait_for_pid(pids)[0], signal.SIGKILL))
        killer.start()
        questions = [(str(pids), "slow"), ("a", "fast"), ("b", "fast")]
        results = rlm.batch(questions, executor=executor, max_llm_calls=50)
        killer.join()
        requests = server.stats()["requests"]
    assert [r.status for r in results] == ["done"] * 3
    assert len(pids.read_text().split()) == 2  # killed once, answered on the second try
    # the killed attempt's root call stays counted in the batch's budget, as the server saw it
    assert executor._budget is not None and executor._budget.snapshot().llm_calls == requests
    if copies == "per_question":
        assert executor.progress.retried == 1 and requests == 2 * 3 + 1
    else:  # the host's other questions running then died with it, and were asked again too
        assert executor.progress.retried >= 1 and requests >= 2 * 3 + 1


def test_a_killed_worker_without_retries_fails_its_question_alone(tmp_path):
    pids = tmp_path / "q.pids"
    with ModelServer(_policy()) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        killer = threading.Thread(target=lambda: os.kill(_wait_for_pid(pids)[0], signal.SIGKILL))
        killer.start()
        results = rlm.batch([("a", "fast"), (str(pids), "slow")], executor=RayExecutor(num_cpus=0.25, max_retries=0))
        killer.join()
    assert results[0].status == "done"
    assert results[1].status == "error" and "worker running it died" in (results[1].error or "")


def test_a_removed_node_has_its_question_retried_on_another(cluster, tmp_path):
    node = cluster.add_node(**node_args(num_cpus=1))
    cluster.wait_for_nodes()
    pids = tmp_path / "q.pids"
    strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=True)  # there first, elsewhere once it is gone
    # until Ray marks the node dead, a retry may be placed on it again and fail the same way
    executor = RayExecutor(num_cpus=0.25, max_retries=3, task_options={"scheduling_strategy": strategy})
    with ModelServer(_policy()) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)

        def remove() -> None:
            _wait_for_pid(pids)
            cluster.remove_node(node)

        remover = threading.Thread(target=remove)
        remover.start()
        results = rlm.batch([(str(pids), "slow")], executor=executor)
        remover.join()
    assert results[0].status == "done", results[0].error
    assert executor.progress.retried >= 1


@COPIES
def test_a_driver_interrupt_cancels_every_cluster_task_and_returns_the_finished_results(tmp_path, copies):
    pids = tmp_path / "long.pids"
    ticks = Path(str(pids) + ".ticks")
    with ModelServer(_policy()) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        rlm.batch([("warm", "up")], executor="ray")
        executor = RayExecutor(num_cpus=0.25, context_copies=copies)
        finished = []
        interrupted_at: list[float] = []
        executor.on_event = lambda index, event: finished.append(index) if event.kind == "call_end" else None

        def interrupt() -> None:
            _wait_for_pid(pids)
            while len(finished) < 2:
                time.sleep(0.05)
            interrupted_at.append(time.monotonic())
            _thread.interrupt_main()

        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(BatchInterrupted) as stopped:
            rlm.batch([("a", "fast"), (str(pids), "slow"), ("b", "fast")], executor=executor)
        took = time.monotonic() - interrupted_at[0]
    results = stopped.value.results
    assert [r.status for r in results] == ["done", "interrupted", "done"]
    assert results[0].answer == "sub:q:a"
    assert took < 8.0  # the cancel, then (after 2 s) the forced one, and the wait for them (the long one: 60 s)
    size = ticks.stat().st_size
    time.sleep(1.0)
    assert ticks.stat().st_size == size  # the cluster task stopped
