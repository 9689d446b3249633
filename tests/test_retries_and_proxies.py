"""Production plumbing on both transports, against local servers that count what they see: Retry-After
honoured (seconds and HTTP dates, capped), the proxy variables obeyed, certificate failures named and not
retried, provider parameters (extra_body, extra_headers) sent as the OpenAI client sends them."""

from __future__ import annotations

import email.utils
import itertools
import socket
import socketserver
import subprocess
import threading
import time

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.errors import ConfigError
from rlm_kernel.models.policies import ScriptedReplies
from rlm_kernel.models.server import ModelServer
from tests.conftest import repl

TRANSPORTS = pytest.mark.parametrize("transport", ["litellm", "direct"])
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxies_nor_keys(monkeypatch):
    for name in (*PROXY_VARIABLES, "OPENAI_API_KEY", "RLM_API_KEY", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)


def answer(text="42"):
    return ScriptedReplies([repl(f"FINAL({text!r})")])


def gaps(times):
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# -- Retry-After ---------------------------------------------------------------------------


@TRANSPORTS
def test_a_429s_retry_after_in_seconds_is_waited_out(transport):
    with ModelServer(answer(), fail_rate=1.0, faults=("429",), retry_after="2") as server:
        rlm = RLM(model="openai/policy", api_base=server.url, transport=transport, retries=1, retry_backoff=0.01)
        result = rlm.completion("c", "q")
        times = server.stats()["request_times"]
    assert result.status == "error" and "rate limited" in result.error and len(times) == 2
    assert gaps(times)[0] >= 1.95  # the server asked for 2 s; the backoff alone would wait about 0.01 s


@TRANSPORTS
def test_a_retry_after_http_date_is_waited_out(transport):
    later = email.utils.formatdate(time.time() + 3, usegmt=True)  # 2 to 3 s ahead: HTTP dates have whole seconds
    with ModelServer(answer(), fail_rate=1.0, faults=("429",), retry_after=later) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, transport=transport, retries=1, retry_backoff=0.01)
        rlm.completion("c", "q")
        times = server.stats()["request_times"]
    assert len(times) == 2 and gaps(times)[0] >= 1.5


@TRANSPORTS
@pytest.mark.parametrize("cap", ["max_retry_wait", "max_seconds"])
def test_retry_after_is_capped_by_max_retry_wait_and_the_runs_time(transport, cap):
    limits = {"max_retry_wait": 0.3} if cap == "max_retry_wait" else {"max_seconds": 1.0}
    with ModelServer(answer(), fail_rate=1.0, faults=("429",), retry_after="30") as server:
        rlm = RLM(model="openai/policy", api_base=server.url, transport=transport, retries=2, **limits)
        started = time.monotonic()
        result = rlm.completion("c", "q")
        elapsed = time.monotonic() - started
        times = server.stats()["request_times"]
    assert result.status in ("error", "budget") and elapsed < 8
    if cap == "max_retry_wait":
        assert len(times) == 3 and all(0.25 <= gap < 2.5 for gap in gaps(times))


def test_max_retry_wait_is_a_setting_with_a_default_and_a_minimum():
    with pytest.raises(ConfigError):
        RLM(model="scripted/x", max_retry_wait=-1)
    assert RLM(model="scripted/x").config.calls.max_retry_wait == 60.0


# -- proxies -------------------------------------------------------------------------------


class ForwardingProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy for plain-http targets (absolute-form requests), one request per connection; counts them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.requests: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> ForwardingProxy:
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _ProxyHandler(socketserver.StreamRequestHandler):
    server: ForwardingProxy

    def handle(self) -> None:
        request_line = self.rfile.readline().decode("latin-1")
        method, target, version = request_line.split()
        headers, length = [], 0
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name = line.split(b":", 1)[0].strip().lower()
            if name == b"content-length":
                length = int(line.split(b":", 1)[1])
            if name not in (b"connection", b"proxy-connection", b"keep-alive"):
                headers.append(line)
        body = self.rfile.read(length)
        with self.server.lock:
            self.server.requests.append(f"{method} {target}")
        rest = target.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        with socket.create_connection((host, int(port or 80))) as upstream:
            upstream.sendall(f"{method} /{path} {version}\r\n".encode() + b"".join(headers))
            upstream.sendall(b"Connection: close\r\n\r\n" + body)
            reply = b""
            while chunk := upstream.recv(65536):
                reply += chunk
        head, _, payload = reply.partition(b"\r\n\r\n")
        head_lines = [h for h in head.split(b"\r\n") if not h.lower().startswith(b"connection:")]
        self.wfile.write(b"\r\n".join([*head_lines, b"Connection: close"]) + b"\r\n\r\n" + payload)


@TRANSPORTS
def test_the_proxy_variables_route_calls_through_the_proxy(transport, monkeypatch):
    with ModelServer(answer(), streams=False) as server, ForwardingProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        result = RLM(model="openai/policy", api_base=server.url, transport=transport).completion("c", "q")
        served = server.stats()["served"]
    assert (result.status, result.answer) == ("done", "42")
    assert served == 1 and len(proxy.requests) == 1
    assert proxy.requests[0] == f"POST {server.url}/chat/completions"


@TRANSPORTS
def test_no_proxy_lets_a_host_bypass_the_proxy(transport, monkeypatch):
    with ModelServer(answer()) as server, ForwardingProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        result = RLM(model="openai/policy", api_base=server.url, transport=transport).completion("c", "q")
    assert result.status == "done" and proxy.requests == []


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        [*request, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def https_server(cert, key):
    import ssl

    server = ModelServer(answer()).start()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = server._httpd
    assert httpd is not None
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    return server, f"https://127.0.0.1:{server.port}/v1"


@TRANSPORTS
def test_a_certificate_failure_is_not_retried_and_names_the_fix(transport, self_signed):
    server, url = https_server(*self_signed)
    try:
        result = RLM(model="openai/policy", api_base=url, transport=transport, retries=3).completion("c", "q")
    finally:
        server.stop()
    assert result.status == "error"
    assert "certificate" in result.error and "ca_bundle" in result.error and "tls_verify=False" in result.error
    assert "gave up after" not in result.error  # one attempt: a certificate does not get better by retrying


@TRANSPORTS
@pytest.mark.parametrize("setting", ["ca_bundle", "tls_verify"])
def test_a_ca_bundle_or_no_verification_reaches_a_self_signed_server(transport, setting, self_signed):
    cert, key = self_signed
    server, url = https_server(cert, key)
    tls = {"ca_bundle": str(cert)} if setting == "ca_bundle" else {"tls_verify": False}
    try:
        result = RLM(model="openai/policy", api_base=url, transport=transport, **tls).completion("c", "q")
        served = server.stats()["served"]
    finally:
        server.stop()
    assert (result.status, result.answer, served) == ("done", "42", 1)


# -- provider parameters -------------------------------------------------------------------


@TRANSPORTS
def test_extra_body_is_merged_and_extra_headers_are_sent(transport):
    params = {"extra_body": {"top_k": 7, "repetition_penalty": 1.1}, "extra_headers": {"X-Rlm-Test": "yes"}}
    with ModelServer(answer()) as server:
        RLM(model="openai/policy", api_base=server.url, transport=transport, model_params=params).completion("c", "q")
        stats = server.stats()
    body, headers = stats["last_body"], stats["last_headers"]
    assert body["top_k"] == 7 and body["repetition_penalty"] == 1.1
    assert "extra_body" not in body and "extra_headers" not in body
    assert headers["x-rlm-test"] == "yes"


def test_direct_refuses_a_model_of_a_provider_with_its_own_api():
    with pytest.raises(ConfigError, match="azure/dep1 is a model of azure, whose API differs: use transport='litellm'"):
        RLM(model="azure/dep1", api_base="https://example.invalid", transport="direct")


TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


@TRANSPORTS
def test_a_tools_parameter_is_sent_and_the_call_succeeds_once(transport):
    with ModelServer(answer()) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, transport=transport, model_params={"tools": TOOLS})
        result = rlm.completion("c", "q")
        stats = server.stats()
    assert (result.status, result.answer, stats["requests"]) == ("done", "42", 1)
    assert stats["last_body"]["tools"][0]["function"]["name"] == "lookup"


def test_a_module_litellm_lacks_is_not_retried():
    from rlm_kernel.core.errors import TransientModelError
    from rlm_kernel.core.lm import classify_error, import_litellm

    litellm = import_litellm()
    try:
        try:
            raise ModuleNotFoundError("No module named 'mcp'")
        except ModuleNotFoundError as missing:
            raise litellm.APIConnectionError(
                message="No module named 'mcp'", llm_provider="openai", model="m"
            ) from missing
    except litellm.APIConnectionError as exc:
        error = classify_error(litellm, exc, None, model="openai/m")
    assert not isinstance(error, TransientModelError) and "install the missing package" in str(error)


def test_direct_calls_look_for_no_netrc_file(monkeypatch):
    # aiohttp's trust_env looked for ~/.netrc in a worker thread twice a request: 0.5 ms of the loop a call, which
    # set figure 2's fan-out back by 0.13 s at concurrency 32. Proxies are read from the environment instead.
    import aiohttp.client
    import aiohttp.helpers

    looked: list[object] = []
    monkeypatch.setattr(aiohttp.helpers, "netrc_from_env", lambda: looked.append(1))
    monkeypatch.setattr(aiohttp.client, "netrc_from_env", lambda: looked.append(1), raising=False)
    with ModelServer(answer()) as server:
        result = RLM(model="openai/policy", api_base=server.url, transport="direct").completion("c", "q")
    assert result.status == "done" and looked == []
