"""What the spans cost the run's own thread, per iteration: `python -m rlm_kernel.telemetry.overhead`.

`rlm bench perf --figures 1` with OTEL_EXPORTER_OTLP_ENDPOINT set gives the engine's whole overhead per
iteration with spans on; on a loaded machine its wall-clock medians move by more than the spans cost. This
measures the part the spans add, in CPU time of the thread that emits the events (robust to load): the events of
a real run (a zero-latency model server, one code block per reply) replayed through the span handler, with the
SDK's BatchSpanProcessor exporting over OTLP/HTTP (to OTEL_EXPORTER_OTLP_ENDPOINT, or to a receiver started here
that accepts everything) in its own thread, as in a run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from rlm_kernel.core.engine import RLM
from rlm_kernel.core.trace import Event
from rlm_kernel.models.server import ModelServer
from rlm_kernel.telemetry.otel import OTelTelemetry, otlp_exporter

_FENCE = "`" * 3
REPLY = f"Step.\n{_FENCE}repl\nx = len(context)\nprint(x)\n{_FENCE}"


class _Accept(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def recorded_run(iterations: int) -> list[Event]:
    events: list[Event] = []
    with ModelServer(lambda messages: REPLY) as server:
        RLM("openai/policy", api_base=server.url, max_iterations=iterations, on_event=events.append).completion(
            "abc" * 1000, "q"
        )
    return events


def span_cpu_per_iteration(events: list[Event]) -> list[float]:
    """CPU seconds of the emitting thread the span handler took, for each iteration's events."""
    provider = TracerProvider()
    exporter, _ = otlp_exporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    handler = OTelTelemetry(provider).run()
    per_iteration: list[float] = []
    spent = 0.0
    for event in events:
        started = time.thread_time()
        handler(event)
        spent += time.thread_time() - started
        if event.kind == "code_result":  # an iteration's last event: its reply, then its block
            per_iteration.append(spent)
            spent = 0.0
    provider.shutdown()  # exports what is left, as a process's exit does
    return per_iteration


def main() -> None:
    parser = argparse.ArgumentParser(description="What the spans cost the run's own thread, per iteration.")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    server = None
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{server.server_address[1]}"
    events = recorded_run(args.iterations)
    medians = []
    for _ in range(args.repeats):
        medians.append(statistics.median(span_cpu_per_iteration(events)) * 1e6)
    if server is not None:
        server.shutdown()
    print(
        f"spans of one iteration (a model call and a code block), CPU of the run's thread: median "
        f"{statistics.median(medians):.0f} us ({args.repeats} replays of a {args.iterations}-iteration run; "
        f"each {', '.join(f'{m:.0f}' for m in medians)} us)"
    )


if __name__ == "__main__":
    main()
