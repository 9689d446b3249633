"""A local OpenAI-compatible chat-completions server that answers with a policy.

Tests and benchmarks point litellm at it (`api_base=server.url`) to exercise the
real HTTP path: connection reuse, concurrency, retries and error mapping. It can
add latency and inject faults (429, 500, a hung reply, a malformed body), and act
as the providers a first run meets: one that requires a bearer key (and quotes a
wrong one in its 401, as real ones do), refuses every request (401/403), has a
context window (400 context_length_exceeded), omits `usage`, or trickles its
reply a byte at a time. It streams (SSE) when a request asks to, a policy's reply in pieces as it yields them.
Also Anthropic's Messages API (anthropic_wire.py); 429s carry `retry_after`; usage with cached/reasoning tokens.

    rlm serve-model --port 8000 --policy demo --latency-ms 50 --api-key sk-local
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from rlm_kernel.core.errors import RLMError
from rlm_kernel.models import anthropic_wire
from rlm_kernel.models.http_server import TrackingHTTPServer
from rlm_kernel.models.policies import Messages, load_policy, messages_tokens
from rlm_kernel.models.wire import MALFORMED_BODY, REJECTIONS, chunked, completion_body, sse_body, sse_events, usage_of

FAULT_KINDS = ("429", "500", "timeout", "malformed")
_CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
ServedPolicy = Callable[[Messages], str | Iterable[str]]  # the reply, or its pieces in order


class ModelServer:
    """Serves `policy` as an OpenAI chat-completions endpoint on a background thread."""

    def __init__(
        self,
        policy: ServedPolicy,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        fail_rate: float = 0.0,
        faults: Sequence[str] = FAULT_KINDS,
        timeout_fault_seconds: float = 30.0,
        seed: int | None = None,
        model_name: str = "policy",
        api_key: str | None = None,
        reject_status: int | None = None,
        context_window: int | None = None,
        omit_usage: bool = False,
        trickle_seconds: float = 0.0,
        streams: bool = True,
        retry_after: str = "0",
        cached_fraction: float = 0.0,
        reasoning_tokens: int = 0,
    ) -> None:
        faults = tuple(faults)
        unknown = [f for f in faults if f not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kind(s) {', '.join(unknown)} (known: {', '.join(FAULT_KINDS)})")
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be between 0 and 1, not {fail_rate}")
        if fail_rate > 0 and not faults:
            raise ValueError("fail_rate > 0 needs at least one fault kind")
        if latency_ms < 0 or timeout_fault_seconds < 0 or trickle_seconds < 0:
            raise ValueError("latency_ms, timeout_fault_seconds and trickle_seconds must be >= 0")
        if reject_status not in (None, *REJECTIONS):
            raise ValueError(f"reject_status must be one of {', '.join(map(str, REJECTIONS))}, not {reject_status}")
        self.policy = policy
        self.host = host
        self.latency_ms = latency_ms
        # Public and read per request, so a test can turn faults off on a running server.
        self.fail_rate = fail_rate
        self.faults = faults
        self.timeout_fault_seconds = timeout_fault_seconds
        self.model_name = model_name
        self.api_key = api_key  # when set, requests must carry "Authorization: Bearer <api_key>"
        self.reject_status = reject_status
        self.context_window = context_window  # prompt tokens a request may have (the policies' count)
        self.omit_usage = omit_usage
        self.trickle_seconds = trickle_seconds  # pause before each byte of a reply's body
        self.streams = streams  # False: a request for a stream gets one JSON body, as from servers that cannot stream
        self.retry_after = retry_after  # the Retry-After header of an injected 429: seconds or an HTTP date
        # Usage reports this share of each prompt as cached, and this many reasoning tokens in each completion.
        self.cached_fraction, self.reasoning_tokens = cached_fraction, reasoning_tokens
        self._requested_port = port
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._requests = 0
        self._served = 0
        self._faults = dict.fromkeys((*FAULT_KINDS, "policy_error"), 0)
        self._keys: dict[str, int] = {}  # bearer token received -> requests that carried it
        self._rejected: dict[int, int] = {}  # HTTP status -> requests answered with it
        self._streamed = 0
        self._models: dict[str, int] = {}  # model name in the request -> requests
        self._in_flight = 0
        self._max_in_flight = 0
        self._request_times: list[float] = []  # time.monotonic() as each model request arrived
        self._last_request: tuple[dict[str, str], Any] = ({}, None)  # headers (no keys) and body of the last one
        self._stopping = threading.Event()
        self._httpd: TrackingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ModelServer:
        """Bind (port 0 picks a free port) and serve on a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("a ModelServer can only be started once")
        self._httpd = TrackingHTTPServer((self.host, self._requested_port), _Handler, self)
        # A short poll interval: shutdown() waits up to one interval, and tests start and stop many servers.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"model-server-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and join the serving thread; idempotent."""
        if self._httpd is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        assert self._thread is not None
        self._thread.join()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("ModelServer not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The api_base to give litellm."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "localhost") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "served": self._served,
                "faults": dict(self._faults),
                "max_in_flight": self._max_in_flight,
                "keys": dict(self._keys),
                "rejected": dict(self._rejected),
                "streamed": self._streamed,
                "models": dict(self._models),
                "request_times": list(self._request_times),
                "last_headers": dict(self._last_request[0]),
                "last_body": self._last_request[1],
            }

    def usage(self, messages: Messages, reply: str) -> dict[str, Any]:
        return usage_of(messages, reply, self.cached_fraction, self.reasoning_tokens)

    def _enter_request(self) -> None:
        with self._lock:
            self._requests += 1
            self._request_times.append(time.monotonic())
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave_request(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _draw_fault(self) -> str | None:
        with self._lock:
            if self.fail_rate > 0 and self._rng.random() < self.fail_rate:
                return self._rng.choice(self.faults)
            return None

    def _count_key(self, authorization: str | None) -> str | None:
        """The bearer token a request carried (None without one), counted."""
        token = authorization.removeprefix("Bearer ").strip() if authorization else None
        if token is not None:
            self._tally(self._keys, token)
        return token

    def _tally(self, counts: dict[Any, int], key: Any) -> None:
        with self._lock:
            counts[key] = counts.get(key, 0) + 1

    def _keep_request(self, headers: Iterable[tuple[str, str]], body: Any) -> None:
        kept = {name.lower(): value for name, value in headers if name.lower() not in ("authorization", "x-api-key")}
        with self._lock:
            self._last_request = (kept, body)

    def _count_stream(self) -> None:
        with self._lock:
            self._streamed += 1

    def _count(self, outcome: str) -> None:
        with self._lock:
            if outcome == "served":
                self._served += 1
            else:
                self._faults[outcome] += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A reply goes out as two writes (headers, body): with Nagle on, the body waits for the client's
    # delayed ACK of the headers, about 40 ms per request on Linux.
    disable_nagle_algorithm = True
    server: TrackingHTTPServer

    def handle(self) -> None:
        # Clients that time out or give up close their end mid-reply; that is expected.
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        model = self.server.model
        if path in ("/v1/models", "/models"):
            self._send_json(200, {"object": "list", "data": [{"id": model.model_name, "object": "model"}]})
        elif path == "/stats":
            self._send_json(200, model.stats())
        else:
            self._send_error(404, f"no route GET {self.path}", "not_found_error")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        anthropic = path.endswith(anthropic_wire.MESSAGES_PATH_SUFFIX)
        if path not in _CHAT_PATHS and not anthropic:
            self._read_body()
            self._send_error(404, f"no route POST {self.path}", "not_found_error")
            return
        model = self.server.model
        model._enter_request()
        try:
            key = model._count_key(self.headers.get("Authorization") or self.headers.get("x-api-key"))
            if self._refused(model, key):
                return
            self._chat_completion(model, anthropic)
        finally:
            model._leave_request()

    def _refused(self, model: ModelServer, key: str | None) -> bool:
        """Answer 401/403 as a provider does; a wrong key is quoted in full, so redaction is put to the test."""
        if model.api_key is not None and key != model.api_key:
            self._read_body()
            model._tally(model._rejected, 401)
            shown = f"Incorrect API key provided: {key}." if key else "Missing credentials: no Authorization header."
            self._send_error(401, shown, "invalid_request_error", code="invalid_api_key")
            return True
        if model.reject_status is not None:
            self._read_body()
            model._tally(model._rejected, model.reject_status)
            message, code = REJECTIONS[model.reject_status]
            self._send_error(model.reject_status, message.format(key=key), "invalid_request_error", code=code)
            return True
        return False

    def _chat_completion(self, model: ModelServer, anthropic: bool) -> None:
        body = self._read_body()
        if body is None:
            return
        try:
            request = json.loads(body)
            version = self.headers["anthropic-version"]  # None when absent
            messages = anthropic_wire.chat_messages(request, version) if anthropic else request["messages"]
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise TypeError("messages must be a list of objects")
        except (ValueError, KeyError, TypeError) as exc:
            self._send_error(400, f"bad request: {exc}", "invalid_request_error")
            return
        model._tally(model._models, str(request.get("model")))
        model._keep_request(self.headers.items(), request)
        if model.context_window is not None and (tokens := messages_tokens(messages)) > model.context_window:
            model._tally(model._rejected, 400)
            message = (
                f"This model's maximum context length is {model.context_window} tokens. However, your messages "
                f"resulted in {tokens} tokens. Please reduce the length of the messages."
            )
            self._send_error(400, message, "invalid_request_error", code="context_length_exceeded")
            return
        # Wait on the stop event rather than sleep, so stop() never waits out a long latency.
        if model.latency_ms and model._stopping.wait(model.latency_ms / 1000):
            return
        # Draw the fault before calling the policy so a faulted request does not consume a scripted reply.
        fault = model._draw_fault()
        if fault is not None:
            model._count(fault)
            self._send_fault(fault, model)
            return
        streams = bool(request.get("stream") and model.streams)
        try:
            reply = model.policy(messages)
            if not isinstance(reply, str | Iterable):
                raise TypeError(f"policy returned {type(reply).__name__}, not str or an iterator of str")
            reply = reply if streams or isinstance(reply, str) else "".join(reply)
        except Exception as exc:
            model._count("policy_error")
            self._send_error(500, f"policy error: {type(exc).__name__}: {exc}", "server_error")
            return
        # Count before replying so a client that has its reply also sees it in stats().
        model._count("served")
        name = request.get("model") or model.model_name
        if streams:
            model._count_stream()
            asked = anthropic or (request.get("stream_options") or {}).get("include_usage")
            usage = functools.partial(model.usage, messages) if asked and not model.omit_usage else lambda text: None
            if anthropic or not isinstance(reply, str):
                write = anthropic_wire.message_events if anthropic else sse_events
                events: bytes | Iterator[bytes] = write(name, [reply] if isinstance(reply, str) else reply, usage)
            else:
                events = sse_body(name, reply, usage(reply))
            self._send_bytes(200, events, content_type="text/event-stream", trickle=model.trickle_seconds)
        else:
            assert isinstance(reply, str)  # joined above
            reported = None if model.omit_usage else model.usage(messages, reply)
            written = (anthropic_wire.message_body if anthropic else completion_body)(name, reply, reported)
            self._send_bytes(200, json.dumps(written).encode(), trickle=model.trickle_seconds)

    def _send_fault(self, fault: str, model: ModelServer) -> None:
        if fault == "429":
            self._send_error(429, "rate limited (injected)", "rate_limit_error", {"Retry-After": model.retry_after})
        elif fault == "500":
            self._send_error(500, "internal server error (injected)", "server_error")
        elif fault == "malformed":
            self._send_bytes(200, MALFORMED_BODY)
        else:
            # Hang without answering until the client gives up (or the server stops), then drop the connection.
            model._stopping.wait(model.timeout_fault_seconds)
            self.close_connection = True

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._send_error(400, "bad Content-Length", "invalid_request_error")
            return None
        return self.rfile.read(length)

    def _send_error(
        self, status: int, message: str, kind: str, headers: dict[str, str] | None = None, code: str | None = None
    ) -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "code": code or status}}, headers)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), headers)

    def _send_bytes(
        self,
        status: int,
        body: bytes | Iterator[bytes],
        headers: dict[str, str] | None = None,
        *,
        content_type: str = "application/json",
        trickle: float = 0.0,
    ) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        # An iterator's parts go out each as it is produced, so a reply in pieces streams as the policy writes.
        length = ("Content-Length", str(len(body))) if isinstance(body, bytes) else ("Transfer-Encoding", "chunked")
        self.send_header(*length)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not isinstance(body, bytes):
            try:
                for part in chunked(body):
                    self.wfile.write(part)
                    self.wfile.flush()
            except Exception:  # the policy failed mid-reply: the headers are gone, so the stream ends short
                self.close_connection = True
            return
        if not trickle:
            self.wfile.write(body)
            self.wfile.flush()
            return
        stopping = self.server.model._stopping
        for i in range(len(body)):  # a byte at a time: every read succeeds, only a total deadline ends the wait
            if stopping.wait(trickle):
                self.close_connection = True
                return
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()


class _UsageError(RLMError):
    pass


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line instead of argparse's usage block, so scripts can show it as is.
        raise _UsageError(message)


def _parse_faults(text: str) -> tuple[str, ...]:
    faults = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in faults if f not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s) {', '.join(unknown)} (known: {','.join(FAULT_KINDS)})")
    return faults


def _build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="rlm serve-model", description="Serve an offline policy as an OpenAI-compatible API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on startup)")
    parser.add_argument("--policy", default="demo", help="registered name (demo) or package.module:attr")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument(
        "--faults", type=_parse_faults, default=FAULT_KINDS, help="comma-separated: 429,500,timeout,malformed"
    )
    parser.add_argument("--timeout-fault-seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--model-name", default="policy")
    parser.add_argument("--api-key", help="require this bearer key (401 otherwise)")
    parser.add_argument("--reject-status", type=int, choices=sorted(REJECTIONS), help="refuse every request")
    parser.add_argument("--context-window", type=int, help="prompt tokens a request may have (400 beyond)")
    parser.add_argument("--omit-usage", action="store_true", help="reply without a usage field")
    parser.add_argument("--trickle-seconds", type=float, default=0.0, help="pause before each byte of a reply")
    parser.add_argument("--retry-after", default="0", help="Retry-After of an injected 429 (seconds or HTTP date)")
    parser.add_argument("--cached-fraction", type=float, default=0.0, help="share of prompts reported cached")
    parser.add_argument("--reasoning-tokens", type=int, default=0, help="reasoning tokens reported per reply")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`rlm serve-model`: serve a policy until SIGINT or SIGTERM."""
    try:
        args = _build_parser().parse_args(argv)
        try:
            policy = load_policy(args.policy)
        except Exception as exc:  # a policy module may fail to import in any way
            raise _UsageError(f"cannot load policy {args.policy!r}: {exc}") from None
        server = ModelServer(
            policy,
            host=args.host,
            port=args.port,
            latency_ms=args.latency_ms,
            fail_rate=args.fail_rate,
            faults=args.faults,
            timeout_fault_seconds=args.timeout_fault_seconds,
            seed=args.seed,
            model_name=args.model_name,
            api_key=args.api_key,
            reject_status=args.reject_status,
            context_window=args.context_window,
            omit_usage=args.omit_usage,
            trickle_seconds=args.trickle_seconds,
            retry_after=args.retry_after,
            cached_fraction=args.cached_fraction,
            reasoning_tokens=args.reasoning_tokens,
        )
    except (_UsageError, ValueError) as exc:
        print(f"rlm serve-model: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except OSError as exc:
            print(f"rlm serve-model: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        print(f"serving policy {args.policy} on {server.url}", flush=True)
        stop.wait()
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
