"""Fan-outs on a real local Ray cluster: with `RLM(executor="ray")` the children of one run's `rlm_query_batched` run
as Ray tasks, against a local server that counts requests and calls in flight."""

from __future__ import annotations

import _thread
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.errors import ConfigError, RunInterrupted
from rlm_kernel.core.trace import Event, Trace
from rlm_kernel.distributed import RayExecutor
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block, question

pytestmark = pytest.mark.usefixtures("cluster")

FAN_OUT = block("replies = rlm_query_batched([(str(i), f'child {i}') for i in range(4)])\nFINAL('|'.join(replies))")
FORCE_STOP_S = 3.0  # a cancelled Ray task that has not stopped after 2 s has its worker killed
CHILD = block("import os\nFINAL(f'{context}:{os.getpid()}:' + llm_query('q' + context))")


def _fan_out(child: str = CHILD, parent: str = FAN_OUT) -> Recorder:
    return Recorder(lambda messages: child if question(messages).startswith("child") else parent)


def test_the_children_of_rlm_query_batched_run_as_ray_tasks_and_their_events_join_the_drivers_trace():
    with ModelServer(_fan_out(), latency_ms=20) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, max_depth=2, executor="ray")
        result = rlm.completion("ctx", "fan out")
        requests = server.stats()["requests"]
    replies = [reply.split(":", 2) for reply in str(result.answer).split("|")]
    assert [(context, answer) for context, _, answer in replies] == [(str(i), f"sub:q{i}") for i in range(4)]
    assert str(os.getpid()) not in {pid for _, pid, _ in replies}  # none ran in this process
    root = result.trace.root_id
    children = [node for node in result.trace.nodes.values() if node.parent_id == root]
    assert len(children) == 4 and all(node.status == "done" for node in children)
    assert requests == 1 + 4 * 2 == result.usage.llm_calls  # the children's calls counted in the run's usage


def test_the_runs_budget_binds_its_children_on_every_worker():
    with ModelServer(_fan_out(), latency_ms=20) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, max_depth=2, max_llm_calls=5, executor="ray")
        result = rlm.completion("ctx", "fan out")
        requests = server.stats()["requests"]
    assert requests <= 5
    assert requests == result.usage.llm_calls


def test_the_runs_concurrency_bounds_its_childrens_calls_over_all_workers():
    with ModelServer(_fan_out(), latency_ms=200) as server:
        executor = RayExecutor(num_cpus=0.25)
        rlm = RLM(model="openai/policy", api_base=server.url, max_depth=2, concurrency=2, executor=executor)
        result = rlm.completion("ctx", "fan out")
        stats = server.stats()
    assert result.status == "done"
    assert stats["requests"] == 9
    assert stats["max_in_flight"] == 2


def test_a_block_that_stops_waiting_cancels_its_children_on_the_cluster(tmp_path: Path):
    ticks = tmp_path / "ticks"
    slow_child = block(
        f"import time\nfor _ in range(600):\n    open({str(ticks)!r}, 'a').write('.')\n    time.sleep(0.1)"
    )
    with ModelServer(_fan_out(slow_child)) as server:
        executor = RayExecutor(num_cpus=0.25)
        rlm = RLM(
            model="openai/policy", api_base=server.url, max_depth=2, cell_timeout=3, max_iterations=1, executor=executor
        )
        started = time.monotonic()
        rlm.completion("ctx", "fan out")
    assert time.monotonic() - started < 30  # not the children's 60 s
    time.sleep(FORCE_STOP_S)
    size = ticks.stat().st_size
    time.sleep(1.0)
    assert ticks.stat().st_size == size  # every child's task stopped


def test_an_executor_that_cannot_share_a_budget_is_refused_for_children():
    import concurrent.futures

    with pytest.raises(ConfigError, match="cannot run child RLMs"):
        RLM(model="openai/policy", executor=concurrent.futures.ThreadPoolExecutor(2))


def test_a_thread_pool_batch_of_an_rlm_whose_children_run_on_ray_is_refused_before_anything_starts():
    with ModelServer(_fan_out()) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, max_depth=2, executor="ray")
        with pytest.raises(ConfigError, match="runs its batches there too"):
            rlm.batch([("a", "fan out")])
        assert server.stats()["requests"] == 0


# Three children, each of two model calls (its code's reply, then its llm_query) at LIVE_LATENCY_S each.
THREE = block("replies = rlm_query_batched([(str(i), f'child {i}') for i in range(3)])\nFINAL('|'.join(replies))")
LIVE_LATENCY_S = 1.0


def _shape(trace: Trace) -> tuple[Counter[tuple[str, str]], dict[str, tuple[str | None, list[str], str]]]:
    """What a trace is, read from its events alone: how many events of each kind each node has, and each node's
    parent, children (in order) and status."""
    kinds = Counter((event.node_id, event.kind) for event in trace.events)
    nodes = {node.id: (node.parent_id, list(node.children), node.status) for node in trace.nodes.values()}
    return kinds, nodes


def test_a_childs_events_reach_the_drivers_handlers_while_it_runs_and_the_trace_is_the_in_process_ones():
    arrived: list[tuple[float, Event]] = []
    with ModelServer(_fan_out(parent=THREE), latency_ms=int(LIVE_LATENCY_S * 1000)) as server:
        rlm = RLM(
            model="openai/policy",
            api_base=server.url,
            max_depth=2,
            executor=RayExecutor(num_cpus=0.25),
            on_event=lambda event: arrived.append((time.monotonic(), event)),
        )
        result = rlm.completion("ctx", "fan out")
    assert result.status == "done"
    events = [event for _, event in arrived]
    children = [e.data["child_id"] for e in events if e.kind == "subcall_start" and e.data["kind"] == "rlm"]
    subcalls = {e.data.get("child_id"): e.data["subcall_id"] for e in events if e.kind == "subcall_start"}
    assert len(children) == 3
    for child in children:
        ended = next(t for t, e in arrived if e.kind == "subcall_end" and e.data["subcall_id"] == subcalls[child])
        started = next(t for t, e in arrived if e.kind == "call_start" and e.node_id == child)
        replied = next(t for t, e in arrived if e.kind == "iteration" and e.node_id == child)
        # its llm_query lasts LIVE_LATENCY_S after its first reply: both were on the driver before its result
        assert started < replied < ended - LIVE_LATENCY_S / 2, child
    assert events == result.trace.events  # the handlers and the trace saw one stream, each event once

    with ModelServer(_fan_out(parent=THREE), latency_ms=1) as server:
        in_process = RLM(model="openai/policy", api_base=server.url, max_depth=2).completion("ctx", "fan out")
    assert _shape(result.trace) == _shape(in_process.trace)


def test_a_cancelled_child_keeps_its_partial_subtree_in_the_trace_once():
    asleep = block("import time\ntime.sleep(20)")  # until the interrupt; without one, the test fails in 20 s
    seen: set[str] = set()

    def interrupt_when_every_child_replied(event: Event) -> None:
        if event.kind == "iteration" and event.node_id != "n0":
            seen.add(event.node_id)
            if len(seen) == 3:
                _thread.interrupt_main()  # Ctrl-C, while every child runs its code on a worker

    executor = RayExecutor(num_cpus=0.25)
    with ModelServer(_fan_out(asleep, THREE)) as server:
        rlm = RLM(
            model="openai/policy",
            api_base=server.url,
            max_depth=2,
            executor=executor,
            on_event=interrupt_when_every_child_replied,
        )
        with pytest.raises(RunInterrupted) as interrupted:
            rlm.completion("ctx", "fan out")
    trace = interrupted.value.result.trace
    kinds, nodes = _shape(trace)
    children = nodes["n0"][1]
    assert sorted(children) == ["n1", "n2", "n3"]
    for child in children:  # what it did on its worker, then its end as the run closed it: each event once
        assert nodes[child][2] == "interrupted"
        assert {kind: n for (node, kind), n in kinds.items() if node == child} == {
            "call_start": 1,
            "model_wait": 1,
            "iteration": 1,
            "call_end": 1,
        }
    assert len({event.to_json() for event in trace.events}) == len(trace.events)
    ends = time.monotonic() + FORCE_STOP_S
    while executor._running and time.monotonic() < ends:  # every child's task was cancelled, and has ended
        time.sleep(0.05)
    assert not executor._running


def test_a_childs_own_children_run_as_ray_tasks_too_and_the_trace_reads_as_in_process():
    """Depth 3: the root fans out to two children, each of which fans out to two grandchildren. Each grandchild is
    a Ray task of its own (another process than its parent's), charged to the run's one budget, and its events
    reach the driver's trace through its parent's stream, each once."""
    middle = block(
        "import os\n"
        "replies = rlm_query_batched([(context + str(i), 'grandchild') for i in range(2)])\n"
        "FINAL(f'{os.getpid()}>' + ','.join(replies))"
    )
    leaf = block("import os\nFINAL(f'{os.getpid()}')")
    with ModelServer(_two_levels(middle, leaf)) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, max_depth=3, executor=RayExecutor(num_cpus=0.25))
        result = rlm.completion("ctx", "fan out twice")
        requests = server.stats()["requests"]
    assert result.status == "done", result.error
    for reply in result.answer:
        parent, grandchildren = reply.split(">")
        assert len(grandchildren.split(",")) == 2 and parent not in grandchildren.split(",")
    starts = [e.node_id for e in result.trace.events if e.kind == "call_start"]
    assert len(starts) == len(set(starts)) == 7  # root, two children, four grandchildren, each started once
    assert result.usage.llm_calls == requests == 7

    with ModelServer(_two_levels(middle, leaf)) as server:
        in_process = RLM(model="openai/policy", api_base=server.url, max_depth=3).completion("ctx", "fan out twice")
    # the same tree; only the ids differ (a worker numbers its child's descendants under the child's own id)
    assert _tree(result.trace, "n0") == _tree(in_process.trace, "n0")


def _two_levels(middle: str, leaf: str) -> Recorder:
    """Root: two children, 'child a' and 'child b'; each child's code is `middle` (its own fan-out, to children asked
    'grandchild'); each grandchild's is `leaf`."""
    root = block("FINAL(rlm_query_batched([('a', 'child a'), ('b', 'child b')]))")

    def policy(messages: list[dict[str, Any]]) -> str:
        asked = question(messages)
        return leaf if asked == "grandchild" else middle if asked.startswith("child") else root

    return Recorder(policy)


def _tree(trace: Trace, node_id: str) -> tuple[str, list[tuple[str, int]], list[object]]:
    """A node as its events say, without ids: its status, how many events of each kind, and its children's."""
    kinds = Counter(event.kind for event in trace.events if event.node_id == node_id)
    node = trace.nodes[node_id]
    return node.status, sorted(kinds.items()), [_tree(trace, child) for child in node.children]


def test_a_block_that_stops_waiting_stops_its_grandchildren_on_the_cluster_too(tmp_path: Path):
    ticks = tmp_path / "ticks"
    slow = block(f"import time\nfor _ in range(600):\n    open({str(ticks)!r}, 'a').write('.')\n    time.sleep(0.1)")
    middle = block("FINAL(rlm_query_batched([(context + str(i), 'grandchild') for i in range(2)]))")
    with ModelServer(_two_levels(middle, slow)) as server:
        rlm = RLM(
            model="openai/policy",
            api_base=server.url,
            max_depth=3,
            cell_timeout=15,  # time for two rounds of Ray workers to start on a busy machine
            max_iterations=1,
            executor=RayExecutor(num_cpus=0.25),
        )
        started = time.monotonic()
        rlm.completion("ctx", "fan out twice")
    assert time.monotonic() - started < 30  # not the grandchildren's 60 s
    assert ticks.exists()  # they did start
    time.sleep(FORCE_STOP_S)
    size = ticks.stat().st_size
    time.sleep(1.0)
    assert ticks.stat().st_size == size  # every grandchild's task stopped
