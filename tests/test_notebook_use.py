"""The notebook as a user lives in it: typos, reloads, their own variables, inserted cells, text as written."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from rlm_kernel.jupyter.magics import RLMMagics
from rlm_kernel.models.policies import register_policy
from tests.conftest import repl, run


def test_a_one_word_typo_of_a_subcommand_is_refused_with_a_suggestion_not_asked(ip):
    asked = []
    model = register_policy(lambda messages: asked.append(messages) or repl("FINAL('paid')"))
    ip.user_ns["doc"] = "text"
    run(ip, f"%config RLMMagics.model = '{model}'")
    magics = ip.magics_manager.registry["RLMMagics"]
    magics.default_context = "doc"
    with pytest.raises(UsageError, match="unknown subcommand hsitory: did you mean history\\?"):
        run(ip, "%rlm hsitory")
    with pytest.raises(UsageError, match="did you mean config"):
        run(ip, "%rlm Config")
    assert asked == []
    assert run(ip, "%rlm how long is it?") == "paid"  # a question that starts like `show` is still a question


def test_reloading_the_extension_keeps_the_history_and_the_default_context(ip, tmp_path):
    (tmp_path / "notes.txt").write_text("abc")
    model = register_policy(lambda messages: repl("FINAL(len(context))"))
    run(ip, f"%rlm load {tmp_path / 'notes.txt'} --as notes")
    run(ip, f"%%rlm --model {model}\nq")
    for _ in range(3):
        ip.run_line_magic("reload_ext", "rlm_kernel")
    ip.extension_manager.unload_extension("rlm_kernel")
    ip.extension_manager.load_extension("rlm_kernel")
    magics = ip.magics_manager.registry["RLMMagics"]
    assert len(magics.runs) == 1 and magics.default_context == "notes"
    assert sum(isinstance(c, RLMMagics) for c in ip.configurables) == 1
    assert run(ip, f"%%rlm --model {model}\nagain") == 3  # the default context still answers


def test_rebinding_the_users_variables_is_named_and_the_old_values_kept(ip, capsys):
    model = register_policy([repl("summary = 'the model'\nlines = []\nmine = 1\nprint(SHOW_VARS())"), repl("FINAL(1)")])
    ip.user_ns.update(doc="text", summary="my summary", lines=["a", "b"], kept="untouched")
    run(ip, f"%%rlm --context doc --model {model}\nq")
    out = capsys.readouterr().out
    assert "The model rebound your variables `summary`, `lines`; the previous values are in `rlm_last.replaced`." in out
    last = ip.user_ns["rlm_last"]
    assert last.replaced == {"summary": "my summary", "lines": ["a", "b"]}
    shown = last.trace.root.iterations[0].cells[0].stdout
    assert shown.split("\n")[0].startswith("lines: ") and "mine: " in shown and "summary: " in shown
    assert "kept" not in shown and "doc" not in shown  # SHOW_VARS lists what the model made, not the user's namespace


def test_an_inserted_cell_runs_as_it_stands(ip, capsys):
    code = "parts = partition(n=2)\nfirst = peek(0, 4)\nFINAL_VAR('first')"
    model = register_policy([repl(code), repl("FINAL(1)")])
    ip.user_ns["doc"] = "abcdefgh"
    run(ip, f"%%rlm --context doc --model {model}\nq")
    run(ip, "%rlm insert n0:1")
    source = ip.rl_next_input
    assert "context = doc" in source and source.endswith(code)
    capsys.readouterr()
    ip.user_ns.pop("first", None)
    run(ip, source)
    assert ip.user_ns["first"] == "abcd" and len(ip.user_ns["parts"]) == 2
    assert "abcd" in capsys.readouterr().out  # FINAL_VAR displays the value instead of submitting it


def test_answers_and_tables_keep_dollars_line_breaks_pipes_and_underscores(ip, capsys):
    written = "Revenue grew from $5M in 2023\nto $7M in 2024 | net_income up"
    model = register_policy(lambda messages: repl(f"FINAL({written!r})"))
    ip.user_ns["doc"] = "text"
    answer = run(ip, f"%%rlm --context doc --model {model}\nHow did $revenue | net_income go?")
    assert answer._repr_mimebundle_() == {"text/plain": written}
    run(ip, f"%%rlm --context doc --model {model}\nAgain, in $?")
    magics = ip.magics_manager.registry["RLMMagics"]
    from rlm_kernel.jupyter import subcommands

    shown = []
    subcommands.display = shown.append  # what the subcommand hands to the frontend
    try:
        subcommands.history(magics, [])
    finally:
        from IPython.display import display

        subcommands.display = display
    bundle = shown[0]._repr_mimebundle_()
    assert 'class="mathjax_ignore tex2jax_ignore"' in bundle["text/html"]
    assert bundle["text/html"].count("<tr>") == 3  # the header and both runs: no row lost to LaTeX
    assert "How did $revenue | net_income go?" in bundle["text/html"]
    assert "$0.0000" in bundle["text/plain"]


def test_the_exports_final_answer_reads_as_written_in_nbconvert_html(tmp_path):
    import nbconvert
    import nbformat

    from rlm_kernel import RLM

    written = "Revenue grew from $5M in 2023\nto $7M in 2024 | net_income ```up```"
    result = RLM(model=register_policy([repl(f"FINAL({written!r})")])).completion("text", "q")
    result.to_notebook(tmp_path / "run.ipynb", "text")
    page, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(tmp_path / "run.ipynb", as_version=4))
    final = page[page.index("Final answer") :]
    block = final[final.index("<pre") : final.index("</pre>")]
    assert "$5M in 2023\nto $7M in 2024 | net_income ```up```" in __import__("html").unescape(block)


def test_a_childs_inserted_cell_gets_its_context_and_earlier_variables_in_this_process(ip, capsys):
    """As the kernel test does, but here, where a thread or socket the stopped replay left would fail the test."""
    from tests.test_kernel_frontend import inserting_policy

    ip.user_ns["doc"] = "banana bandana"
    run(ip, f"%%rlm --context doc --model {register_policy(inserting_policy)} --depth 2\nq")
    run(ip, "%rlm insert n2:3")
    source = ip.rl_next_input
    assert "context, n, note, total = names_before(1, 'n2', 3, 'context', 'n', 'note', 'total')" in source
    capsys.readouterr()
    run(ip, source)
    assert ip.user_ns["context"] == "na bandana" and ip.user_ns["total"] == 40
    assert capsys.readouterr().out == "40\n"  # FINAL(total) shows the value
    ip.user_ns["doc"] = "another text"  # the run's context changed since: the replay cannot reach n2 as it was
    with pytest.raises(UsageError, match="n2 as it was in run 1: that context is not the one the recorded run used"):
        run(ip, source)
