"""Batches on a real local Ray cluster of two nodes, against a local server that counts requests and calls in flight."""

from __future__ import annotations

import gc
import time

import psutil
import pytest
import ray

from rlm_kernel import RLM
from rlm_kernel.core.errors import BudgetExhausted
from rlm_kernel.core.ledger import JointBudget, Ledger, Limits
from rlm_kernel.distributed import RayExecutor
from rlm_kernel.distributed.shared import RayBudget, driver_hub
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block

pytestmark = pytest.mark.usefixtures("cluster")

# A Ray worker that imported rlm_kernel and ran a question holds about 85 MB of its own; with a copy of the 50 MB
# context below it held over 135 MB.
MB_OF_AN_IDLE_WORKER = 115


def _one_root_one_sub() -> Recorder:
    return Recorder(lambda messages: block("FINAL(llm_query('q:' + context))"))


def test_a_batch_on_ray_returns_results_in_order_with_status_usage_and_trace():
    with ModelServer(_one_root_one_sub(), latency_ms=50) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        results = rlm.batch([(f"c{i}", f"question {i}") for i in range(6)], executor="ray", concurrency=3)
        stats = server.stats()
    assert [r.answer for r in results] == [f"sub:q:c{i}" for i in range(6)]
    assert [r.query for r in results] == [f"question {i}" for i in range(6)]
    assert all(r.status == "done" and r.usage.llm_calls == 2 for r in results)
    assert all(r.trace.root_start() is not None for r in results)
    assert stats["requests"] == 12
    assert stats["max_in_flight"] <= 3


def test_a_batch_budget_binds_across_every_worker_and_the_server_count_equals_the_results_usage():
    with ModelServer(_one_root_one_sub(), latency_ms=50) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        results = rlm.batch([(f"c{i}", f"q{i}") for i in range(8)], executor="ray", concurrency=4, max_llm_calls=7)
        stats = server.stats()
    assert stats["requests"] <= 7
    assert stats["requests"] == sum(r.usage.llm_calls for r in results)
    assert any(r.status == "budget" or "max_llm_calls" in (r.error or "") for r in results)


def test_concurrency_bounds_the_model_calls_in_flight_over_all_workers_and_the_questions_running():
    seen: list[tuple[int, str]] = []
    executor = RayExecutor(num_cpus=0.25, on_event=lambda index, event: seen.append((index, event.kind)))
    with ModelServer(_one_root_one_sub(), latency_ms=200) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        results = rlm.batch([(f"c{i}", f"q{i}") for i in range(8)], executor=executor, concurrency=2)
        stats = server.stats()
    assert all(r.status == "done" for r in results)
    assert stats["requests"] == 16
    assert stats["max_in_flight"] == 2  # 8 CPU slots on the cluster would allow 8
    assert executor._slots is not None and executor._slots.counts() == (0, 2)
    # live events, each naming its question: every question's root started and ended on the driver's side
    for index in range(8):
        kinds = [kind for i, kind in seen if i == index]
        assert kinds[0] == "call_start" and "call_end" in kinds
    assert executor.progress.done == 8 and "8 done, 0 failed, 0 queued" in executor.progress.line()


def test_a_large_context_shared_by_many_questions_goes_to_the_object_store_once():
    context = "x" * 5_000_000
    executor = RayExecutor(num_cpus=0.25)
    with ModelServer(Recorder(lambda messages: block("FINAL(str(len(context)))")), latency_ms=0) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        results = rlm.batch([(context, f"q{i}") for i in range(10)], executor=executor, concurrency=5)
    assert [r.answer for r in results] == ["5000000"] * 10
    assert len(executor.contexts) == 1


def _unique_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_full_info().uss) / 1e6


PID_AND_CONTEXT = "import os\nFINAL(f'{os.getpid()}:{id(context)}')"


def test_a_worker_process_holds_no_copy_of_a_context_once_its_question_ended():
    """A worker process reads its question's context from the object store (a full copy of a string) and lets go of
    it at the question's end: idle workers kept a copy each, so a shared context cost a copy per worker that had
    ever run one of its questions, not per question running."""
    context = "y" * 50_000_000
    with ModelServer(Recorder(lambda messages: block(PID_AND_CONTEXT)), latency_ms=0) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        results = rlm.batch([(context, f"q{i}") for i in range(6)], executor=RayExecutor(num_cpus=0.25))
    pids = {int(str(r.answer).split(":")[0]) for r in results}
    held = {pid: _unique_mb(pid) for pid in pids if psutil.pid_exists(pid)}
    assert held and all(mb < MB_OF_AN_IDLE_WORKER for mb in held.values()), held


def test_per_node_runs_a_nodes_questions_in_one_process_that_reads_a_shared_context_once():
    """context_copies="per_node": each node's questions run on threads of one host process there; questions that
    run together share the one copy it read; the batch's call bound still holds over all hosts."""
    context = "z" * 5_000_000
    code = "import os, time\ntime.sleep(0.3)\nFINAL(f'{os.getpid()}:{id(context)}:' + llm_query('q'))"
    with ModelServer(Recorder(lambda messages: block(code)), latency_ms=50) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        executor = RayExecutor(context_copies="per_node")
        results = rlm.batch([(context, f"q{i}") for i in range(8)], executor=executor, concurrency=4)
        stats = server.stats()
    assert all(r.status == "done" for r in results), [r.error for r in results]
    hosts: dict[str, set[str]] = {}
    for result in results:
        pid, copy, reply = str(result.answer).split(":", 2)
        assert reply == "sub:q"
        hosts.setdefault(pid, set()).add(copy)
    assert len(hosts) == 2  # one process on each of the cluster's two nodes
    assert all(len(copies) == 1 for copies in hosts.values())  # it read the context once for the whole batch
    assert stats["requests"] == 16 and stats["max_in_flight"] <= 4
    assert len(executor.contexts) == 1


def test_context_copies_is_checked_when_the_executor_is_made():
    from rlm_kernel.core.errors import ConfigError

    with pytest.raises(ConfigError, match="context_copies must be"):
        RayExecutor(context_copies="per_thread")  # type: ignore[arg-type]


def test_a_batch_leaves_nothing_on_the_hub_once_the_driver_lets_go_of_it():
    with ModelServer(_one_root_one_sub()) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        executor = RayExecutor()
        rlm.batch([("a", "q"), ("b", "q")], executor=executor, concurrency=2, max_llm_calls=10)
    assert executor._budget is not None and executor._slots is not None and executor._events is not None
    own = {executor._budget.key, executor._slots.key, executor._events.key}
    hub = driver_hub()
    assert own <= ray.get(hub.keys.remote())
    del executor
    ends = time.monotonic() + 10
    # The batch returns once its results are set; its watcher thread may still hold the executor for a moment (on
    # a busy machine, past a single collection), so collect again while waiting.
    gc.collect()
    while own & ray.get(hub.keys.remote()) and time.monotonic() < ends:
        time.sleep(0.05)
        gc.collect()
    assert not own & ray.get(hub.keys.remote())


def test_a_tool_that_cannot_be_sent_is_a_clear_error_before_anything_starts():
    from rlm_kernel.core.errors import ConfigError

    with ModelServer(_one_root_one_sub()) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, tools={"double": lambda x: 2 * x})
        with pytest.raises(ConfigError, match="cannot be sent to a Ray worker"):
            rlm.batch([("a", "q"), ("b", "q")], executor="ray")
        assert server.stats()["requests"] == 0


def test_a_rerun_with_results_path_asks_only_the_questions_not_done(tmp_path):
    path = tmp_path / "done.pickles"
    questions = [(f"c{i}", f"q{i}") for i in range(4)]
    with ModelServer(_one_root_one_sub()) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        rlm.batch(questions[:2], executor="ray", results_path=path)
        assert server.stats()["requests"] == 4
        results = rlm.batch(questions, executor="ray", results_path=path)
        assert server.stats()["requests"] == 8  # only q2 and q3 were asked again
    assert [r.answer for r in results] == [f"sub:q:c{i}" for i in range(4)]


def test_isolated_runs_work_on_the_workers():
    # model code in the Ray worker's own process would see ray imported; in the isolated kernel it does not
    policy = Recorder(
        lambda messages: block("import sys\nFINAL(f'{\"ray\" in sys.modules}:' + llm_query('q:' + context))")
    )
    with ModelServer(policy) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, isolation="kernel")
        results = rlm.batch([("a", "q"), ("b", "q")], executor=RayExecutor(num_cpus=0.25), concurrency=2)
    assert [r.answer for r in results] == ["False:sub:q:a", "False:sub:q:b"], [r.error for r in results]


def test_the_cluster_budget_stops_a_run_whose_time_ran_out_as_a_budget_stop():
    """check_time is part of the Budget protocol: a joint (question and cluster) budget asks both."""
    shared = RayBudget.create(Limits(max_seconds=0.05))
    assert shared.seconds_left() is not None  # the actor's ledger exists, and its clock runs
    joint = JointBudget(Ledger(Limits()), shared)
    time.sleep(0.2)
    with pytest.raises(BudgetExhausted) as stop:
        joint.check_time()
    assert stop.value.limit == "max_seconds"
    RayBudget.create(Limits(max_seconds=60)).check_time()  # time left: no refusal
