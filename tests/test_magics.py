"""%rlm / %%rlm on a fresh InteractiveShell: runs, settings, subcommands and every error path."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from rlm_kernel.models.demo import sample_document
from rlm_kernel.models.policies import register_policy
from tests.conftest import SIGINT_SELF, repl, run


def test_demo_run_answers_and_leaves_the_models_variables(ip, capsys):
    ip.user_ns["log"] = sample_document(200_000)
    ip.user_ns["context"] = "my own variable called context"
    answer = run(ip, "%%rlm --context log --out found\nWhat went wrong with the coolant?")
    out = capsys.readouterr().out
    assert "demo policy" in out  # says the offline stand-in is in use
    assert isinstance(answer, str) and answer.startswith("4 passages mention coolant")
    assert answer._repr_mimebundle_() == {"text/plain": answer}  # as written: no Markdown, no LaTeX
    ns = ip.user_ns
    assert ns["found"] == answer and ns["rlm_last"].answer == answer
    for made in ("term", "chunks", "findings", "summary"):
        assert made in ns
    assert ns["context"] == "my own variable called context"  # reserved names restored
    assert "llm_query" not in ns and "FINAL" not in ns
    created = [name for cell in ns["rlm_last"].trace.root.iterations[0].cells for name in cell.created]
    assert {"counts", "found", "term"} <= set(created)


def test_questions_are_never_brace_expanded(ip):
    seen = []
    model = register_policy(lambda messages: seen.append(messages[1]["content"]) or repl("FINAL('ok')"))
    ip.user_ns.update(doc="some text", secret="EXPANDED")
    run(ip, f"%config RLMMagics.model = '{model}'")
    run(ip, "%%rlm --context doc\nWhat is {secret} and $secret?")
    assert "What is {secret} and $secret?" in seen[-1] and "EXPANDED" not in seen[-1]


def test_line_form_uses_the_default_context_from_load(ip, tmp_path):
    (tmp_path / "notes.md").write_text("# Notes\nThe code is 99.\n")
    model = register_policy([repl("FINAL(context.count('99'))")])
    run(ip, f"%rlm load {tmp_path / 'notes.md'} --as notes")
    assert ip.user_ns["notes"].startswith("# Notes")
    run(ip, f"%config RLMMagics.model = '{model}'")
    assert run(ip, "%rlm What is {the} code?") == 1
    assert ip.user_ns["rlm_last"].query == "What is {the} code?"


def test_config_shows_values_and_their_sources(ip, monkeypatch, capsys):
    monkeypatch.setenv("RLM_SUB_MODEL", "openai/from-env")
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance(config=Config(HistoryAccessor={"enabled": False}))
    shell.extension_manager.load_extension("rlm_kernel")
    run(shell, "%config RLMMagics.max_depth = 3")
    run(shell, "%rlm config")
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines() if line.strip()}
    assert rows["max_depth"].split() == ["3", "%config", "/", "profile"]
    assert rows["sub_model"].split() == ["openai/from-env", "$RLM_SUB_MODEL"]
    assert rows["model"].split() == ["scripted/demo", "(offline", "demo", "policy)", "default"]
    assert rows["concurrency"].split() == ["16", "default"]
    assert rows["sub_api_base"].split() == ["same", "as", "api_base", "default"]  # not "None"


@pytest.mark.parametrize(
    "source, message",
    [
        ("%%rlm\nquestion", "No context"),
        ("%%rlm --context nope\nquestion", "No variable named 'nope'"),
        ("%%rlm --context empty\nquestion", "empty"),
        ("%%rlm --context blob\nquestion", "binary"),
        ("%%rlm --context doc\n   ", "No question"),
        ("%rlm load /no/such/file.txt", "/no/such/file.txt"),
        ("%rlm show", "No RLM runs"),
        ("%rlm insert n0", "No RLM runs"),
        ("%%rlm --depth two --context doc\nq", "two"),
    ],
)
def test_user_errors_are_usage_errors(ip, source, message):
    ip.user_ns.update(doc="text", empty="", blob=b"\x00\x01")
    with pytest.raises(UsageError, match=message):
        run(ip, source)


def test_show_cells_insert_and_history(ip, capsys):
    model = register_policy([repl("x = 40\nprint('forty')"), repl("y = x + 2\nFINAL(y)")])
    ip.user_ns["doc"] = "text"
    run(ip, f"%%rlm --context doc --model {model}\nq")
    view = run(ip, "%rlm show")
    bundle = view._repr_mimebundle_()
    assert "<details" in bundle["text/html"] and "[done] n0" in bundle["text/plain"]
    capsys.readouterr()
    run(ip, "%rlm cells n0")
    out = capsys.readouterr().out
    assert "x = 40" in out and "forty" in out and "y = x + 2" in out
    assert "**n0:1** block 1" in out and "**n0:2** block 1" in out  # iterations from 1, as in the tree
    run(ip, "%rlm cells n0:2")
    out = capsys.readouterr().out
    assert "y = x + 2" in out and "x = 40" not in out
    run(ip, "%rlm insert n0:1")
    assert "x = 40" in ip.rl_next_input and "y = x" not in ip.rl_next_input
    run(ip, "%rlm insert n0 --run 1")
    assert "y = x + 2" in ip.rl_next_input
    with pytest.raises(UsageError, match="No node 'n9'"):
        run(ip, "%rlm cells n9")
    with pytest.raises(UsageError, match="no iteration 5"):
        run(ip, "%rlm insert n0:5")
    with pytest.raises(UsageError, match="no iteration 0"):
        run(ip, "%rlm cells n0:0")
    with pytest.raises(UsageError, match="No run 3"):
        run(ip, "%rlm show 3")
    capsys.readouterr()
    run(ip, "%rlm history")
    assert capsys.readouterr().out.splitlines()[1].split()[:5][::2] == ["1", "q", "2"]  # run, question, calls


def test_budget_stop_fails_the_cell_in_one_line_and_keeps_the_partial_trace(ip):
    model = register_policy(lambda messages: repl("print(llm_query('more'))"))
    ip.user_ns["doc"] = "text"
    run(ip, "%config RLMMagics.max_llm_calls = 3")
    with pytest.raises(UsageError) as caught:
        run(ip, f"%%rlm --context doc --model {model}\nq")
    assert "budget" in str(caught.value) and "\n" not in str(caught.value)
    last = ip.user_ns["rlm_last"]
    assert last.status == "budget" and last.usage.llm_calls == 3 and last.trace.root.iterations


def test_provider_failure_fails_the_cell(ip):
    ip.user_ns["doc"] = "text"
    run(ip, "%config RLMMagics.model = 'openai/x'")
    with pytest.raises(UsageError, match="model call failed"):
        run(ip, "%%rlm --context doc --api-base http://127.0.0.1:9/v1\nq")
    assert ip.user_ns["rlm_last"].status == "error"


def test_interrupt_keeps_the_partial_trace_and_the_next_cell_runs(ip):
    model = register_policy([repl("made = 1\nprint('step')"), repl(SIGINT_SELF)])
    ip.user_ns["doc"] = "text"
    result = ip.run_cell(f"%%rlm --context doc --model {model}\nq", store_history=False)
    assert isinstance(result.error_in_exec, UsageError)  # one line, no KeyboardInterrupt traceback
    assert re.fullmatch(r"interrupted after \d+\.\d s: partial trace in rlm_last", str(result.error_in_exec))
    last = ip.user_ns["rlm_last"]
    assert last.status == "interrupted" and last.trace.root.status == "interrupted"
    assert ip.user_ns["made"] == 1 and "llm_query" not in ip.user_ns
    assert run(ip, "1 + 1") == 2


def test_extension_unloads_and_reloads(ip):
    assert "rlm" in ip.magics_manager.magics["cell"]
    ip.extension_manager.unload_extension("rlm_kernel")
    assert "rlm" not in ip.magics_manager.magics["cell"] and "rlm" not in ip.magics_manager.magics["line"]
    ip.extension_manager.load_extension("rlm_kernel")
    assert "rlm" in ip.magics_manager.magics["line"]
    ip.extension_manager.reload_extension("rlm_kernel")
    assert "rlm" in ip.magics_manager.magics["cell"]


def test_loading_the_extension_does_not_import_litellm():
    code = (
        "import sys; from IPython.core.interactiveshell import InteractiveShell; "
        "ip = InteractiveShell.instance(); ip.extension_manager.load_extension('rlm_kernel'); "
        "print('rlm' in ip.magics_manager.magics['cell'], 'litellm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


def test_help_lists_options_and_subcommands(ip):
    doc = ip.magics_manager.magics["line"]["rlm"].__doc__
    for needle in ("--context", "--budget", "--out", "%rlm load", "%rlm insert"):
        assert needle in doc


def test_help_still_works_and_question_marks_reach_the_magic(ip, capsys):
    run(ip, "%rlm?")
    assert "--context" in capsys.readouterr().out
    with pytest.raises(UsageError, match="No context"):
        run(ip, "%rlm What is the code?")


def test_approve_without_a_frontend_that_answers_is_refused_before_any_call(ip):
    model = register_policy(["never asked"])
    ip.user_ns["doc"] = "text"
    with pytest.raises(UsageError, match="cannot answer input requests"):
        run(ip, f"%%rlm --approve --context doc --model {model}\nq")
    assert "rlm_last" not in ip.user_ns


def test_isolated_run_keeps_the_notebook_namespace_out_of_reach(ip):
    model = register_policy(
        [
            repl("print(secret)") + "```repl\nsecret = 'changed'\nleaked = 1\nprint(len(context))\n```\n",
            repl("FINAL(len(context))"),
        ]
    )
    ip.user_ns.update(doc="x" * 1234, secret="notebook-only")
    answer = run(ip, f"%%rlm --isolated --context doc --model {model} --out n\nhow long?")
    assert answer == 1234 and ip.user_ns["n"] == 1234
    assert ip.user_ns["secret"] == "notebook-only" and "leaked" not in ip.user_ns
    assert "context" not in ip.user_ns  # the context went to the kernel, not into this namespace
    first = ip.user_ns["rlm_last"].trace.root.iterations[0].cells
    assert "NameError" in first[0].error and first[1].output.strip() == "1234"


def test_settings_that_do_not_fit_together_are_usage_errors(ip):
    ip.user_ns["doc"] = "text"
    ip.run_line_magic("config", "RLMMagics.transport = 'direct'")
    with pytest.raises(UsageError, match="needs api_base"):  # openai/x would post to OpenAI's own API
        run(ip, "%%rlm --context doc --model my-model\nq")
    with pytest.raises(UsageError, match="max_depth"):
        run(ip, "%%rlm --context doc --depth -1 --model openai/x --api-base http://127.0.0.1:9/v1\nq")


def test_config_warns_when_a_cost_budget_cannot_bind(ip, capsys):
    run(ip, "%config RLMMagics.model = 'openai/no-such-priced-model'")
    run(ip, "%config RLMMagics.max_cost_usd = 0.5")
    run(ip, "%rlm config")
    out = capsys.readouterr().out
    assert "max_cost_usd=0.5 cannot bind: litellm has no price for openai/no-such-priced-model" in out
    run(ip, "%config RLMMagics.prices = {'openai/no-such-priced-model': {'input': 1.0, 'output': 2.0}}")
    run(ip, "%rlm config")
    assert "cannot bind" not in capsys.readouterr().out
