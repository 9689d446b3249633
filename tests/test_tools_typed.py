"""Custom tools, typed answers and instructions over HTTP: what the server is sent, what the user gets back."""

from __future__ import annotations

import dataclasses
import os

import pydantic
import pytest

from rlm_kernel import RLM
from rlm_kernel.core.errors import ConfigError
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block, question, turn

# Every feature works the same on both transports (the server sees the same requests).
pytestmark = pytest.mark.usefixtures("each_transport")

TABLE = {"alpha": "first letter", "beta": "second letter"}


def lookup(key: str, default: str = "?") -> str:
    """Look up `key` in the glossary; returns its definition or `default`."""
    return TABLE.get(key, default)


def broken(record_id: int) -> str:
    """Fetch a record by id."""
    raise LookupError(f"no record with id {record_id}")


def test_tools_are_in_every_nodes_repl_and_described_from_signature_and_docstring():
    def root(messages):
        if messages[0]["content"].count("child RLM") and question(messages) == "top":
            return block("FINAL([lookup('alpha'), rlm_query('ctx', 'child')])")
        return block("FINAL(lookup('beta'))")  # the child uses the tool too

    policy = Recorder(root)
    with ModelServer(policy) as server:
        result = RLM(model="openai/policy", api_base=server.url, max_depth=2, tools=[lookup]).completion("c", "top")
    assert result.answer == ["first letter", "second letter"]
    systems = [m[0]["content"] for m in policy.roots()]
    assert len(systems) == 2
    for system in systems:
        assert "`lookup(key: str, default: str = '?') -> str`: Look up `key` in the glossary" in system


def test_a_tool_that_raises_gives_the_model_its_error_text_and_the_run_goes_on():
    def root(messages):
        if turn(messages) == 0:
            return block("record = fetch(7)")
        return block("FINAL('recovered')")

    policy = Recorder(root)
    with ModelServer(policy) as server:
        result = RLM(model="openai/policy", api_base=server.url, tools={"fetch": broken}).completion("c", "q")
    assert result.answer == "recovered"
    observation = policy.roots()[1][-1]["content"]
    assert "LookupError: no record with id 7" in observation
    assert "record = fetch(7)" in observation  # the model's own line, as in any traceback


def test_a_rebound_tool_is_put_back():
    def root(messages):
        return block("lookup = None") if turn(messages) == 0 else block("FINAL(lookup('alpha'))")

    with ModelServer(Recorder(root)) as server:
        result = RLM(model="openai/policy", api_base=server.url, tools=[lookup]).completion("c", "q")
    assert result.answer == "first letter"


@pytest.mark.parametrize(
    "tools, message",
    [
        ({"llm_query": lookup}, "taken by the REPL's own llm_query"),
        ([lambda: 1], "no usable name"),
        ({"not an identifier": lookup}, "not a Python identifier"),
        ({"x": 3}, "not a function"),
        (lookup, "not one function"),
    ],
)
def test_bad_tools_are_refused_before_any_call(tools, message):
    with pytest.raises(ConfigError, match=message):
        RLM(model="openai/policy", tools=tools)


class Person(pydantic.BaseModel):
    name: str
    age: int


@dataclasses.dataclass
class Point:
    x: float
    y: float


@pytest.mark.parametrize(
    "answer_type, wrong, right, expected, reason",
    [
        (list[int], "FINAL([1, 'x'])", "FINAL([1, '2'])", [1, 2], "answer[1]: expected int, got str 'x'"),
        (int, "FINAL('many')", "FINAL(3.0)", 3, "expected int, got str 'many'"),
        (Person, "FINAL({'name': 'Ada'})", "FINAL({'name': 'Ada', 'age': '36'})", Person(name="Ada", age=36), "age"),
        (Point, "FINAL({'x': 1})", 'FINAL(\'{"x": 1, "y": 2.5}\')', Point(1.0, 2.5), "missing fields y of Point"),
    ],
)
def test_a_typed_answer_is_validated_and_a_misfit_goes_back_with_the_reason(
    answer_type, wrong, right, expected, reason
):
    policy = Recorder(lambda messages: block(wrong if turn(messages) == 0 else right))
    with ModelServer(policy) as server:
        result = RLM(model="openai/policy", api_base=server.url).completion("c", "q", answer_type=answer_type)
    assert (result.status, result.answer) == ("done", expected)
    assert type(result.answer) is type(expected)
    first, second = policy.roots()
    assert "The answer must be" in first[0]["content"]
    assert reason in second[-1]["content"] and "Your answer was not accepted" in second[-1]["content"]


def test_the_prompt_shows_a_pydantic_models_schema_and_text_final_is_converted():
    policy = Recorder(lambda messages: "Done.\nFINAL(42)")
    with ModelServer(policy) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        assert rlm.completion("c", "q", answer_type=int).answer == 42
        rlm.completion("c", "q", answer_type=Person)
    assert '"required":["name","age"]' in policy.roots()[-1][0]["content"]


def test_a_typed_answer_that_never_fits_ends_at_the_iteration_limit():
    policy = Recorder(lambda messages: block("FINAL('not a number')"))
    with ModelServer(policy) as server:
        result = RLM(model="openai/policy", api_base=server.url, max_iterations=2).completion("c", "q", answer_type=int)
    assert result.status == "max_iterations"


def test_answer_type_must_be_a_type():
    with pytest.raises(ConfigError, match="answer_type must be a type"):
        RLM(model="openai/policy").completion("c", "q", answer_type="int")


def test_instructions_reach_every_system_prompt_and_the_trace():
    policy = Recorder(lambda messages: block("FINAL(llm_query('x'))"))
    guidance = "Cite the page number of every fact."
    with ModelServer(policy) as server:
        result = RLM(model="openai/policy", api_base=server.url, instructions=guidance).completion("c", "q")
    assert policy.roots()[0][0]["content"].endswith(f"Instructions from the user:\n{guidance}")
    start = next(e for e in result.trace.events if e.kind == "call_start")
    assert guidance in start.data["system_prompt"] and start.data["settings"]["instructions"] == guidance


@pytest.mark.sandbox
@pytest.mark.skipif(os.name != "posix", reason="isolation needs rlimits and signals")
def test_in_isolated_mode_tools_cross_the_bridge_with_plain_data_and_their_errors():
    code = "r = [lookup('alpha'), lookup(key='gamma')]\ntry:\n    fetch(3)\nexcept LookupError as e:\n    r.append(str(e))\nFINAL(r)"
    with ModelServer(Recorder(lambda messages: block(code))) as server:
        rlm = RLM(
            model="openai/policy", api_base=server.url, isolation="kernel", tools={"lookup": lookup, "fetch": broken}
        )
        result = rlm.completion("c", "q")
    assert result.answer == ["first letter", "?", "no record with id 3"]


def _glossary_policy(messages):
    if question(messages) == "child":
        return block("FINAL(lookup('beta'))")
    return block("FINAL([lookup('alpha'), rlm_query('ctx', 'child')])")


@pytest.mark.kernel
@pytest.mark.timeout(300)
def test_the_export_of_a_run_with_tools_defines_them_and_re_runs_offline(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    with ModelServer(Recorder(_glossary_policy)) as server:
        result = RLM(model="openai/policy", api_base=server.url, tools=[lookup], max_depth=2).completion("ctx", "q")
    assert result.answer == ["first letter", "second letter"]
    path = result.to_notebook(tmp_path / "tools.ipynb", "ctx").path
    nb = nbformat.read(path, as_version=4)
    defining = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def lookup(")]
    assert len(defining) == 1 and "TABLE.get(key, default)" in defining[0].source
    # The tool's module-level data is the user's to give: the notebook defines TABLE first, as a user would.
    nb.cells.insert(nb.cells.index(defining[0]), nbformat.v4.new_code_cell(f"TABLE = {TABLE!r}"))
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    check = nb.cells[-1].outputs
    assert "same answer" in check[0].data["text/plain"], check


def test_replaying_a_run_with_tools_needs_them_and_says_which():
    from rlm_kernel.core.errors import ReplayError
    from rlm_kernel.formats.replay import replay_run

    with ModelServer(Recorder(_glossary_policy)) as server:
        result = RLM(model="openai/policy", api_base=server.url, tools={"lookup": lookup}, max_depth=2).completion(
            "ctx", "q"
        )
    with pytest.raises(ReplayError, match="tools that are not defined here: lookup; define them first"):
        replay_run(result.trace, "ctx")
    replayed = replay_run(result.trace, "ctx", tools={"lookup": lookup})
    assert replayed.matches and replayed.result.answer == ["first letter", "second letter"]


def test_without_sub_calls_the_model_is_not_told_of_them_and_calling_one_is_a_name_error(tmp_path, capsys):
    from rlm_kernel.cli import main
    from rlm_kernel.core.prompts import NO_SUB_CALLS_NOTE

    def root(messages):
        if turn(messages) == 0:
            return block("print(llm_query('hello'))")
        return block("FINAL(len(context))")

    policy = Recorder(root)
    doc = tmp_path / "doc.txt"
    doc.write_text("ctx", encoding="utf-8")
    with ModelServer(policy) as server:
        result = RLM(model="openai/policy", api_base=server.url, sub_calls=False).completion("ctx", "q")
        code = main(
            ["run", "--context", str(doc), "--model", "openai/policy", "--api-base", server.url, "--no-sub-calls"]
        )
        served = server.stats()["served"]
    assert result.answer == 3 and code == 0 and capsys.readouterr().out.startswith("Answer:\n3\n")
    assert served == len(policy.requests) == len(policy.roots()) == 4  # two root calls a run, no sub-call
    system = policy.roots()[0][0]["content"]
    assert system.endswith(NO_SUB_CALLS_NOTE) and "llm_query(" not in system and "rlm_query(" not in system
    seen = result.trace.root.iterations[0].cells[0].output  # what the model was shown
    assert "NameError: name 'llm_query' is not defined: this run has no sub-calls" in seen
