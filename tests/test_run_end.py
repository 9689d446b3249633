"""When a run ends, its whole tree has ended (issue 13, item 8): children a timed-out block left running are
stopped and closed with a status, no model call starts after completion() returns, every call is in the usage."""

from __future__ import annotations

import threading
import time

from rlm_kernel import RLM
from rlm_kernel.core.trace import Trace
from rlm_kernel.models.server import ModelServer
from tests.conftest import question_of, repl


def abandoning_policy(messages):
    """Root: start four children in a block that times out, then submit. Children: model calls, forever."""
    if messages[0]["role"] != "system":
        return "sub-answer"
    if question_of(messages).startswith("child"):
        return repl("x = llm_query('more')\nprint(x)")
    if sum(m["role"] == "assistant" for m in messages) == 0:
        return repl("answers = rlm_query_batched([('text', f'child {i}') for i in range(4)])")
    return repl("FINAL('the root gave up waiting')")


def test_children_a_timed_out_block_left_running_stop_with_the_run(tmp_path):
    trace_path = tmp_path / "run.jsonl"
    with ModelServer(abandoning_policy, latency_ms=150) as server:
        rlm = RLM(
            model="openai/policy",
            api_base=server.url,
            max_depth=2,
            cell_timeout=1.0,
            child_max_iterations=50,
            trace_path=str(trace_path),
        )
        result = rlm.completion("text", "root question")
        at_return = server.stats()["requests"]
        time.sleep(1.5)  # an abandoned child would go on calling the model now
        after = server.stats()["requests"]
    assert result.status == "done" and result.answer == "the root gave up waiting"
    assert after == at_return, f"{after - at_return} model calls after completion() returned"
    assert result.usage.llm_calls == at_return  # every call the server saw is in the usage
    assert all(node.status != "running" for node in result.trace.walk())
    children = [n for n in result.trace.walk() if n.depth == 1]
    assert len(children) == 4 and all(n.status == "interrupted" for n in children)
    assert all(s.done for n in result.trace.walk() for s in n.subcalls)
    assert Trace.from_jsonl(trace_path).root.status == "done"  # the file was written to the end, then closed
    assert not result.extra.get("threads_left")
    children_threads = [t.name for t in threading.enumerate() if t.name.startswith("rlm-n")]
    assert not children_threads  # the children's threads are gone (the model-call loop's pool is shared)


class Records(list):
    """A context that can be watched with a weak reference (a str cannot)."""


def submitting_policy(messages):
    """Root: asks a child about part of its context, then submits. Child: submits at once."""
    if messages[0]["role"] != "system":
        return "sub-answer"
    if question_of(messages).startswith("child"):
        return repl("FINAL(len(context))")
    if sum(m["role"] == "assistant" for m in messages) == 0:
        return repl("n = rlm_query(context[:2], 'child: count')\nprint(n)")
    return repl("FINAL(n)")


def test_a_finished_run_lets_go_of_its_context_without_the_garbage_collector():
    """A run's tools and its submitted answer referred back to its own frames and node: cycles that kept the context
    alive until the collector's next full pass, so a worker that read a copy of a shared context held it long after
    the question (issue 22's copies per node). With the collector off, the context goes when the caller lets go."""
    import gc
    import weakref

    with ModelServer(submitting_policy) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, max_depth=2)
        gc.collect()
        gc.disable()
        try:
            context, shared = Records(map(str, range(10))), Records(map(str, range(3)))
            watched = [weakref.ref(context), weakref.ref(shared)]
            assert rlm.completion(context, "root").answer == 2
            assert [r.answer for r in rlm.batch([(shared, "root"), (shared, "root")], concurrency=2)] == [2, 2]
            del context, shared
            left = [ref() for ref in watched if ref() is not None]
            assert not left, [type(r).__name__ for r in gc.get_referrers(*left)]
        finally:
            gc.enable()
