"""API keys never reach a prompt, a trace, a view or an error message."""

from __future__ import annotations

import json
import os
from urllib.parse import quote, quote_plus

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.redact import REDACTED, Redactor
from rlm_kernel.formats.html import render_html
from tests.conftest import repl

FAKE_ENV_KEY = "sk-fake-env-0123456789abcdef"
FAKE_TOKEN = "hf_faketoken_9876543210"
FAKE_ARG_KEY = "sk-fake-arg-key-55555555"


def test_planted_keys_appear_nowhere(scripted, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_ENV_KEY)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    sent: list[str] = []

    def policy(messages):
        sent.append(json.dumps(messages))
        if messages[0]["role"] != "system":
            return "sub saw: " + messages[-1]["content"]
        if len(messages) == 2:
            return repl(
                "import os\n"
                "print(os.environ['OPENAI_API_KEY'], os.environ['HF_TOKEN'])\n"
                f"echo = llm_query('my key is ' + os.environ['OPENAI_API_KEY'] + ' and {FAKE_ARG_KEY}')\n"
                "print(echo)\n"
                "raise ValueError(os.environ['HF_TOKEN'])"
            )
        return repl("FINAL(echo + ' ' + os.environ['OPENAI_API_KEY'])")

    trace_file = tmp_path / "trace.jsonl"
    context = f"notes with a leaked key {FAKE_ENV_KEY} inside"
    result = RLM(model=scripted(policy), api_key=FAKE_ARG_KEY, trace_path=str(trace_file)).completion(context, "q")
    assert result.status == "done"
    written = [trace_file.read_text(), render_html(result.trace), result.trace.outline(), *sent]
    written += [json.dumps(e.data) for e in result.trace.events]
    for text in written:
        for secret in (FAKE_ENV_KEY, FAKE_TOKEN, FAKE_ARG_KEY):
            assert secret not in text
    assert "[redacted]" in trace_file.read_text()
    # The Python value the user gets back is theirs, unredacted: only what is written or sent is cleaned.
    assert FAKE_ENV_KEY in result.answer


# -- the redactor: names, URLs, .netrc, key shapes, and the forms a secret takes on the way out ------------

ESCAPY = "p\\a\"ss/w'ord wörd+&=%"  # backslash, quotes, slash, space, non-ASCII, URL-special characters


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """An environment with no secrets of its own and a HOME without a .netrc, so each test plants its own."""
    for name in list(os.environ):
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    return monkeypatch


@pytest.mark.parametrize(
    "name",
    [
        "AWS_SECRET_ACCESS_KEY",
        "MY_SERVICE_KEY",
        "GITHUB_TOKEN",
        "APP_SECRET",
        "SMTP_PASSWORD",
        "DB_PASS",
        "MYSQL_PWD",
        "GOOGLE_CREDENTIALS",
        "openai_api_key",
    ],
)
def test_environment_names_ending_in_a_secret_word_are_redacted(clean_env, name):
    clean_env.setenv(name, "value-of-the-secret-42")
    assert Redactor().text("it is value-of-the-secret-42!") == f"it is {REDACTED}!"


def test_pwd_is_a_directory_not_a_secret(clean_env):
    clean_env.setenv("PWD", "/home/someone/project")
    clean_env.setenv("OLDPWD", "/home/someone/elsewhere")
    text = "cwd /home/someone/project, before /home/someone/elsewhere"
    assert Redactor().text(text) == text


def test_a_password_inside_a_url_is_redacted_wherever_the_url_comes_from(clean_env):
    clean_env.setenv("DATABASE_URL", "postgres://app:hunter2hunter2@db.internal/prod")
    redactor = Redactor()
    assert redactor.text("DATABASE_URL=postgres://app:hunter2hunter2@db.internal/prod") == (
        f"DATABASE_URL=postgres://app:{REDACTED}@db.internal/prod"
    )
    assert redactor.text("said hunter2hunter2 alone") == f"said {REDACTED} alone"  # the env's password, anywhere
    # A URL the environment never held, with a password too short to be matched on its own.
    assert redactor.text("see https://u:pw@example.com/x") == f"see https://u:{REDACTED}@example.com/x"
    assert redactor.text("http://example.com:8080/path and user@example.com") == (
        "http://example.com:8080/path and user@example.com"
    )


def test_netrc_passwords_are_redacted(clean_env, tmp_path):
    (tmp_path / ".netrc").write_text("machine api.example.com login me password n3trc-passw0rd\n")
    (tmp_path / ".netrc").chmod(0o600)
    redactor = Redactor()
    assert redactor.text("token n3trc-passw0rd") == f"token {REDACTED}"
    assert redactor.text("machine other.host login you password another-one") == (
        f"machine other.host login you password {REDACTED}"
    )


@pytest.mark.parametrize(
    "key",
    [
        "sk-proj-abcdefghijklmnopqrstuvwx1234",
        "sk-ant-api03-abcdefghijklmnopqrstuv",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "AKIAIOSFODNN7EXAMPLE",
        "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH",
        # every prefix the redactor checks before its patterns run (redact._KEY_PREFIXES)
        *(f"{p}_abcdefghijklmnopqrstuvwxyz0123456789" for p in ("gho", "ghu", "ghs", "ghr")),
        "ASIAIOSFODNN7EXAMPLE",
        "xoxb-1234567890-abcdefghij",
        "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    ],
)
def test_common_key_shapes_are_redacted_without_being_in_the_environment(clean_env, key):
    assert Redactor().text(f"key={key}\n") == f"key={REDACTED}\n"


def test_ordinary_words_are_not_mistaken_for_keys(clean_env):
    text = "the task-management-system-overview and desk-organisation-guidelines-v2"
    assert Redactor().text(text) == text


@pytest.mark.parametrize(
    "form",
    [
        lambda s: s,
        lambda s: repr(s),
        lambda s: repr({"SERVICE_API_KEY": s}),  # print(os.environ) and friends
        lambda s: json.dumps(s),
        lambda s: json.dumps(s, ensure_ascii=False),
        lambda s: json.dumps(repr(s)),  # an observation holding a repr, written as a trace line
        lambda s: quote(s, safe=""),
        lambda s: quote_plus(s),
        lambda s: json.dumps({"url": "https://x/?k=" + quote(s, safe="")}),
    ],
    ids=["plain", "repr", "repr-in-dict", "json", "json-unicode", "json-of-repr", "url", "url-plus", "json-of-url"],
)
def test_every_form_of_a_secret_is_redacted(clean_env, form):
    clean_env.setenv("SERVICE_API_KEY", ESCAPY)  # a name even the old rule knew: what is tested here is the form
    redacted = Redactor().text(f"before {form(ESCAPY)} after")
    assert REDACTED in redacted
    for leak in ("p\\a", "w\\'ord", "w'ord wörd", "ord%20w", "w%C3%B6rd", "ord+w"):
        assert leak not in redacted, (leak, redacted)


def test_an_escaped_key_printed_by_model_code_reaches_no_artifact(scripted, tmp_path, clean_env):
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", ESCAPY)
    clean_env.setenv("DATABASE_URL", "postgres://u:db-passw0rd-77@host/db")
    sent: list[str] = []

    def policy(messages):
        sent.append(json.dumps(messages))
        if len(messages) == 2:
            return repl("import os\nprint(os.environ)\nprint(repr(os.environ['DATABASE_URL']))")
        return repl("FINAL('done')")

    trace_file = tmp_path / "trace.jsonl"
    result = RLM(model=scripted(policy), trace_path=str(trace_file)).completion("ctx", "q")
    assert result.status == "done"
    written = [
        trace_file.read_text(),
        render_html(result.trace),
        *sent,
        *(json.dumps(e.data) for e in result.trace.events),
    ]
    for text in written:
        for leak in ("p\\\\a", "p\\a", "w\\'ord", "wörd", "w\\u00f6rd", "db-passw0rd-77"):
            assert leak not in text, leak
    assert REDACTED in trace_file.read_text()
