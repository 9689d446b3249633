"""The run specification and its seams: a RunConfig that pickles (keys from the environment travel as the
variable's name), run_question with an explicit budget and call slots, batches on other executors, and results
that load back."""

from __future__ import annotations

import ast
import concurrent.futures
import multiprocessing
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rlm_kernel
from rlm_kernel import RLM
from rlm_kernel.core.config import RunConfig, Secret
from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.ledger import Budget, JointBudget, Ledger, Limits
from rlm_kernel.core.run import run_question
from rlm_kernel.core.slots import CallSlots, Slots
from rlm_kernel.core.trace import Trace
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block

PARENT_KEY = "sk-parent-0123456789abcdef"
CHILD_KEY = "sk-child-fedcba9876543210"


def word_count(text: str) -> int:
    """Counts the words of `text`."""
    return len(text.split())


def _one_root_one_sub() -> Recorder:
    return Recorder(lambda messages: block("FINAL(llm_query('q:' + context))"))


def test_a_key_from_the_environment_pickles_as_the_variable_name_and_resolves_in_the_receiving_process(monkeypatch):
    monkeypatch.setenv("RLM_API_KEY", PARENT_KEY)
    config = RLM(model="openai/policy", api_base="http://127.0.0.1:9/v1").config
    assert config.root.api_key == Secret(PARENT_KEY, "RLM_API_KEY") and config.sub.api_key == config.root.api_key
    sent = pickle.dumps(config)
    assert PARENT_KEY.encode() not in sent and b"RLM_API_KEY" in sent
    assert PARENT_KEY not in repr(config)
    receiver = (
        "import pickle, sys; config = pickle.loads(sys.stdin.buffer.read()); "
        "print(config.root.api_key.reveal(), config.sub.api_key.reveal(), config.root.model)"
    )
    env = {"PATH": "/usr/bin:/bin", "RLM_API_KEY": CHILD_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run(
        [sys.executable, "-c", receiver], input=sent, env=env, capture_output=True, timeout=120, cwd=Path.cwd()
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == [CHILD_KEY, CHILD_KEY, "openai/policy"]
    # A receiver without the variable says so, in one line.
    env.pop("RLM_API_KEY")
    refused = subprocess.run([sys.executable, "-c", receiver], input=sent, env=env, capture_output=True, timeout=120)
    assert refused.returncode != 0 and b"comes from $RLM_API_KEY, which is not set" in refused.stderr


def test_an_explicit_key_is_redacted_in_repr_and_travels_with_the_config(monkeypatch):
    monkeypatch.delenv("RLM_API_KEY", raising=False)
    rlm = RLM(model="openai/policy", api_base="http://127.0.0.1:9/v1", api_key=PARENT_KEY, sub_api_key=CHILD_KEY)
    for shown in (repr(rlm.config), str(rlm.config), repr(rlm.config.root), repr(rlm.config.root.api_key)):
        assert PARENT_KEY not in shown and CHILD_KEY not in shown
    assert repr(rlm.config.root.api_key) == "Secret('***')"
    loaded = pickle.loads(pickle.dumps(rlm.config))
    assert loaded == rlm.config
    assert (loaded.root.api_key.reveal(), loaded.sub.api_key.reveal()) == (PARENT_KEY, CHILD_KEY)
    assert rlm.config.recorded["api_key"] is True  # the trace records only that a key was set


def test_the_config_groups_the_settings_table_into_value_objects():
    config = RunConfig.from_settings(
        {"model": "openai/root", "sub_model": "openai/sub", "temperature": 0.2, "sub_seed": 7, "retries": 5},
        environ={},
    )
    assert (config.root.model, config.sub.model) == ("openai/root", "openai/sub")
    assert config.root.params == {"temperature": 0.2} and config.sub.params == {"temperature": 0.2, "seed": 7}
    assert config.calls.retries == 5 and config.loop.child_max_iterations == 10 and config.limits == Limits()
    with pytest.raises(ConfigError, match="no model"):
        RunConfig.from_settings({}, environ={})


def test_an_importable_tool_travels_by_address_and_a_local_one_says_it_cannot_leave():
    config = RLM(model="scripted/demo", tools=[word_count]).config
    assert config.tools[0].address == f"{__name__}:word_count"
    loaded = pickle.loads(pickle.dumps(config))
    assert loaded == config and loaded.tool_functions == {"word_count": word_count}

    def local_tool(text: str) -> str:
        return text

    local = RLM(model="scripted/demo", tools={"shout": lambda text: text.upper(), "local_tool": local_tool}).config
    assert [tool.address for tool in local.tools] == [None, None]
    with pytest.raises(ConfigError, match="tool 'shout' cannot leave this process"):
        pickle.dumps(local)


class CountingSlots:
    """Slots that count how often a call took one, and the most held at once."""

    def __init__(self, size: int) -> None:
        self.inner = CallSlots(size)
        self.taken = self.held = self.most = 0

    async def __aenter__(self) -> CountingSlots:
        await self.inner.__aenter__()
        self.taken, self.held = self.taken + 1, self.held + 1
        self.most = max(self.most, self.held)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.held -= 1
        await self.inner.__aexit__(*exc_info)


def test_run_question_charges_the_budget_and_takes_the_slots_it_is_given():
    with ModelServer(_one_root_one_sub()) as server:
        config = RunConfig.from_settings({"model": "openai/policy", "api_base": server.url}, environ={})
        budget = Ledger(Limits(max_llm_calls=3))
        slots = CountingSlots(1)
        first = run_question(config, "a", "q1", budget=budget, slots=slots)
        second = run_question(config, "b", "q2", budget=budget, slots=slots)
        assert server.stats()["requests"] == 3
    assert first.answer == "sub:q:a" and first.usage.llm_calls == 2
    # One budget for both questions: the second's root call is the third and last; its sub-call is refused.
    assert "budget exhausted (max_llm_calls)" in second.answer and budget.snapshot().llm_calls == 3
    # Each call reserves inside its slot: three sent, and the refused sub-call held one while it was refused.
    assert slots.taken == 4 and slots.most == 1
    assert isinstance(budget, Budget) and isinstance(JointBudget(budget, Ledger(Limits())), Budget)
    assert isinstance(slots, Slots) and isinstance(CallSlots(2), Slots)


class PicklingExecutor(concurrent.futures.Executor):
    """Runs each job here, but only after a pickle round trip of the job and of its result: what a remote
    executor does to them."""

    def __init__(self) -> None:
        self.jobs: list[bytes] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.jobs.append(pickle.dumps((fn, args, kwargs)))
        job, args, kwargs = pickle.loads(self.jobs[-1])
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_result(pickle.loads(pickle.dumps(job(*args, **kwargs))))
        return future


def _summary(results: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.query, r.status, r.answer, r.usage.llm_calls, len(r.trace.nodes)) for r in results]


@pytest.mark.slow  # a process pool: each process imports the engine
def test_a_batch_on_another_executor_returns_what_the_default_pool_returns():
    questions = [(f"c{i}", f"question {i}") for i in range(4)]
    with ModelServer(_one_root_one_sub()) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, concurrency=2)
        default = rlm.batch(questions)
        pickling = PicklingExecutor()
        remote = rlm.batch(questions, executor=pickling)
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as processes:
            in_processes = rlm.batch(questions, executor=processes)
        with concurrent.futures.ThreadPoolExecutor(3) as threads:
            in_threads = rlm.batch(questions, executor=threads)
        assert server.stats()["requests"] == 4 * 2 * 4
    assert _summary(default) == [(q, "done", f"sub:q:{c}", 2, 1) for c, q in questions]
    assert _summary(remote) == _summary(in_processes) == _summary(in_threads) == _summary(default)
    assert len(pickling.jobs) == 4


def test_batch_limits_on_another_processs_executor_ask_for_a_budget_it_can_reach():
    rlm = RLM(model="openai/policy", api_base="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="need a budget that its processes reach"):
        rlm.batch([("a", "q")], executor=PicklingExecutor(), max_llm_calls=3)


def test_a_result_its_usage_and_its_trace_load_back(tmp_path):
    path = tmp_path / "run.jsonl"
    with ModelServer(_one_root_one_sub()) as server:
        result = RLM(model="openai/policy", api_base=server.url, trace_path=str(path)).completion("ctx", "q")
    loaded = pickle.loads(pickle.dumps(result))
    assert (loaded.answer, loaded.status, loaded.query, loaded.usage) == (
        result.answer,
        result.status,
        result.query,
        result.usage,
    )
    assert [e.to_json() for e in loaded.trace.events] == [e.to_json() for e in result.trace.events]
    assert loaded.trace.outline() == result.trace.outline()
    loaded.trace.add(result.trace.events[-1])  # a loaded trace takes events again (its lock is a new one)
    from_file = Trace.from_jsonl(path)
    assert [e.to_json() for e in from_file.events] == [e.to_json() for e in result.trace.events]
    assert from_file.outline() == result.trace.outline()


def test_core_has_no_import_cycle_even_counting_imports_made_only_for_type_checking():
    core = Path(rlm_kernel.__file__).parent / "core"
    graph: dict[str, set[str]] = {}
    for path in core.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rlm_kernel.core."):
                imported.add(node.module.rsplit(".", 1)[1])
            elif isinstance(node, ast.ImportFrom) and node.module == "rlm_kernel.core":
                imported.update(alias.name for alias in node.names)
        graph[path.stem] = imported - {path.stem}
    # Two type-only back-edges stay, each between two modules: RunInterrupted carries the partial RLMResult,
    # and the legacy upgrade takes trace Events.
    graph["errors"] -= {"result"}
    graph["legacy"] -= {"trace"}

    def reachable(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    assert not sorted(name for name in graph if name in reachable(name))


class SharedInThreads(concurrent.futures.ThreadPoolExecutor):
    """A `SharedByProcesses` executor that does not stream: a child's events all come back with its result."""

    def shared_budget(self, limits: Limits) -> Budget:
        return Ledger(limits)

    def shared_slots(self, size: int) -> Slots:
        return CallSlots(size)


def test_children_on_an_executor_that_does_not_stream_leave_the_in_process_trace_once():
    from tests.support_features import question

    fan_out = block("replies = rlm_query_batched([(str(i), f'child {i}') for i in range(3)])\nFINAL('|'.join(replies))")
    child = block("FINAL(llm_query('q' + context))")
    policy = Recorder(lambda messages: child if question(messages).startswith("child") else fan_out)
    with ModelServer(policy) as server, SharedInThreads(3) as executor:
        elsewhere = RLM(model="openai/policy", api_base=server.url, max_depth=2, executor=executor).completion("c", "q")
        in_process = RLM(model="openai/policy", api_base=server.url, max_depth=2).completion("c", "q")

    def shape(trace: Trace) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
        kinds = sorted((event.node_id, event.kind) for event in trace.events)
        return kinds, {node.id: node.children for node in trace.nodes.values()}

    assert elsewhere.answer == in_process.answer == "sub:q0|sub:q1|sub:q2"
    assert shape(elsewhere.trace) == shape(in_process.trace)
