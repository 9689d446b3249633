"""Runs sent to a real Arize Phoenix server, as a user sets it up: OTEL_EXPORTER_OTLP_ENDPOINT in the environment.

Phoenix runs from its own hash-locked venv (.venv-phoenix: `make phoenix-venv`, which `make test` builds), offline,
with its data in a temporary directory. A depth-2 `%%rlm` with a fan-out runs in a real rlm kernel and an
`rlm run` in a shell; the test then reads Phoenix's REST API and checks each trace's tree, its token counts against
what the local model server reported, the cost, the failed child's status, and that the planted key is stored
nowhere (neither in the API's answers nor in Phoenix's database file).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from rlm_kernel.models.server import ModelServer
from tests.telemetry_support import PRICES, SECRET, CountingPolicy

ROOT = Path(__file__).resolve().parents[1]
PHOENIX = ROOT / ".venv-phoenix" / "bin" / "phoenix"
PROJECT = "rlm-e2e"

pytestmark = [
    pytest.mark.skipif(
        not PHOENIX.exists(), reason="Arize Phoenix's venv is absent: `make phoenix-venv` builds it (make test does)"
    ),
    pytest.mark.slow,  # a Phoenix server process per module
    pytest.mark.timeout(600),  # Phoenix's first start creates its database: about 2 minutes on 2 busy cores
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A Phoenix server on free ports, offline, storing into a fresh directory: (its URL, that directory)."""
    work = tmp_path_factory.mktemp("phoenix")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))},
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        # Offline: no usage reports, no downloads (its WASM sandbox), no docs MCP server it would connect to.
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    }
    log = (work / "phoenix.log").open("w")
    server = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # its first start creates the database: about 2 minutes here
        while True:
            try:
                get(f"{url}/v1/projects")
                break
            except OSError:
                assert server.poll() is None, (work / "phoenix.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "Phoenix did not start in 300 s"
                time.sleep(0.5)
        yield url, work
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def otel_env(url: str) -> dict[str, str]:
    """The documented set-up: the endpoint, Phoenix's project, and a short export delay (so the test need not wait)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RLM_"))},
        "OTEL_EXPORTER_OTLP_ENDPOINT": url,
        "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={PROJECT}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "RLM_API_KEY": SECRET,  # the redactor's to remove: it must reach no span
        "PYTHONPATH": str(ROOT),
    }


def spans_of(url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = get(f"{url}/v1/projects/{PROJECT}/spans?limit=1000{f'&cursor={cursor}' if cursor else ''}")
        found += page["data"]
        cursor = page.get("next_cursor")
        if not cursor:
            return found


def trace_of(url: str, question: str, expected: int) -> list[dict[str, Any]]:
    """The spans of the trace whose root was asked `question`, once all `expected` have arrived."""
    deadline = time.monotonic() + 60
    while True:
        found = spans_of(url) if _project_exists(url) else []
        roots = [s for s in found if s["parent_id"] is None and s["attributes"].get("input.value") == question]
        if roots:
            trace_id = roots[0]["context"]["trace_id"]
            spans = [s for s in found if s["context"]["trace_id"] == trace_id]
            if len(spans) >= expected:
                return spans
        assert time.monotonic() < deadline, f"{question!r}: {len(found)} spans, not all {expected} reached Phoenix"
        time.sleep(0.5)


def _project_exists(url: str) -> bool:
    return any(p["name"] == PROJECT for p in get(f"{url}/v1/projects")["data"])


def check_trace(spans: list[dict[str, Any]], policy: CountingPolicy) -> None:
    """The tree, the tokens and cost against the model server's counts, the failed child, as Phoenix stored them."""

    def children(span: dict[str, Any]) -> list[dict[str, Any]]:
        mine = [s for s in spans if s["parent_id"] == span["context"]["span_id"]]
        return sorted(mine, key=lambda s: s["start_time"])

    (root,) = [s for s in spans if s["parent_id"] is None]
    assert root["span_kind"] == "AGENT" and root["status_code"] == "OK", root
    assert root["attributes"]["rlm.status"] == "done" and root["attributes"]["output.value"] == "root answer"
    steps = children(root)
    assert [s["name"] for s in steps] == ["chat openai/policy", "code 0.0", "chat openai/policy", "code 1.0"]
    assert [s["span_kind"] for s in steps] == ["LLM", "TOOL", "LLM", "TOOL"]
    under_block = children(steps[1])
    assert sorted(s["span_kind"] for s in under_block) == ["CHAIN", "CHAIN", "LLM"]
    agents = [child for s in under_block for child in children(s)]
    assert sorted(a["attributes"]["input.value"] for a in agents) == ["child fails", "child ok"]
    assert all(a["span_kind"] == "AGENT" and a["attributes"]["rlm.depth"] == 1 for a in agents)
    failed = next(a for a in agents if a["attributes"]["input.value"] == "child fails")
    assert failed["status_code"] == "ERROR" and failed["status_message"].startswith("error: model call failed")
    ok = next(a for a in agents if a["attributes"]["input.value"] == "child ok")
    assert ok["status_code"] == "OK" and ok["attributes"]["output.value"].startswith("child answer: ")
    calls = [s for s in spans if s["span_kind"] == "LLM"]
    assert len(calls) == policy.requests + policy.failures
    assert sum(s["attributes"].get("llm.token_count.prompt", 0) for s in calls) == policy.input_tokens
    assert sum(s["attributes"].get("llm.token_count.completion", 0) for s in calls) == policy.output_tokens
    price = PRICES["openai/policy"]
    cost = (policy.input_tokens * price["input"] + policy.output_tokens * price["output"]) / 1e6
    assert sum(s["attributes"].get("llm.cost.total", 0) for s in calls) == pytest.approx(cost)
    assert policy.input_tokens > 0 and cost > 0


def assert_no_secret(url: str, work: Path) -> None:
    """The planted key: in no span Phoenix returns, and nowhere in what it stored; its redaction is."""
    assert SECRET not in json.dumps(spans_of(url))
    stored = b"".join(p.read_bytes() for p in work.rglob("*") if p.is_file() and p.name != "phoenix.log")
    assert SECRET.encode() not in stored and b"key [redacted]" in stored


@pytest.mark.kernel
def test_a_depth_2_notebook_run_arrives_in_phoenix_whole(phoenix):
    url, work = phoenix
    policy = CountingPolicy()
    with ModelServer(policy) as model:
        manager = KernelManager(kernel_name="rlm")
        manager.start_kernel(env=otel_env(url))
        kc = manager.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            setup = f"doc = 'x' * 50\n%config RLMMagics.prices = {PRICES!r}\n%config RLMMagics.retries = 0\n"
            assert kc.execute_interactive(setup, timeout=60)["content"]["status"] == "ok"
            cell = f"%%rlm --context doc --model openai/policy --api-base {model.url} --depth 2\nnotebook root"
            assert kc.execute_interactive(cell, timeout=120)["content"]["status"] == "ok"
        finally:
            kc.stop_channels()
            manager.shutdown_kernel()  # a clean exit, as a closed notebook's: the last spans are flushed
    spans = trace_of(url, "notebook root", policy.requests + policy.failures + 6)
    check_trace(spans, policy)
    assert_no_secret(url, work)
    if os.environ.get("RLM_DOCS_PHOENIX_SCREENSHOT"):  # make screenshot: the README's picture of this trace
        screenshot(url, spans, Path(os.environ["RLM_DOCS_PHOENIX_SCREENSHOT"]))


def screenshot(url: str, spans: list[dict[str, Any]], path: Path) -> None:
    """Phoenix's page of the trace, as its UI shows it, with the failed child's sub-call selected."""
    from tests.browser_support import chromium, new_page

    failed = next(s for s in spans if s["attributes"].get("input.value") == "child fails")
    project = next(p["id"] for p in get(f"{url}/v1/projects")["data"] if p["name"] == PROJECT)
    page_url = f"{url}/projects/{project}/traces/{failed['context']['trace_id']}?selectedSpanNodeId={failed['id']}"
    with chromium() as browser, new_page(browser, {"width": 1600, "height": 1000}) as page:
        page.set_default_timeout(120_000)  # Phoenix's UI is a large page for two busy cores
        page.goto(page_url)
        page.get_by_text("child fails").first.wait_for()
        page.screenshot(path=str(path))


def test_an_rlm_run_from_the_shell_arrives_in_phoenix_whole(phoenix, tmp_path):
    url, work = phoenix
    policy = CountingPolicy()
    doc = tmp_path / "doc.txt"
    doc.write_text("x" * 50)
    with ModelServer(policy) as model:
        command = [
            "run",
            "--context",
            str(doc),
            "--model",
            "openai/policy",
            "--api-base",
            model.url,
            "--max-depth",
            "2",
        ]
        command += ["--retries", "0", "--prices", json.dumps(PRICES), "--query", "shell root"]
        run = subprocess.run(
            [sys.executable, "-m", "rlm_kernel.cli", *command],
            capture_output=True,
            text=True,
            env=otel_env(url),
            timeout=120,
        )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "cannot send spans" not in run.stderr
    check_trace(trace_of(url, "shell root", policy.requests + policy.failures + 6), policy)
    assert_no_secret(url, work)
