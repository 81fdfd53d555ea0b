"""Frontend metrics (Prometheus), request logs, backpressure and draining, as one plain ASGI middleware.

Plain ASGI (not BaseHTTPMiddleware) so streaming responses and client-disconnect detection pass through untouched.
Logs carry request id, method, route, status, sizes and timings; never the API key, and no prompt text.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("frontend.access")

GENERATION_ROUTES = ("/v1/completions", "/v1/chat/completions")
KNOWN_ROUTES = (
    *GENERATION_ROUTES,
    "/v1/models",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/health",
    "/health/ready",
    "/ping",
    "/metrics",
    "/tokenize",
    "/detokenize",
    "/version",
)
# Answered while draining (probes see the 503 from their own route; scrapers keep scraping).
PROBE_ROUTES = ("/health", "/health/ready", "/ping", "/metrics")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class FrontendMetrics:
    """The frontend's own metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "frontend_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.in_flight = Gauge("frontend_requests_in_flight", "HTTP requests being served.", ["route"], registry=r)
        self.latency = Histogram(
            "frontend_request_duration_seconds",
            "Time from request to the end of the response body.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "frontend_time_to_first_token_seconds",
            "Time from request to the first generated text sent to the client (streaming).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "frontend_generated_tokens", "Completion tokens returned to clients.", ["route"], registry=r
        )
        self.triton_errors = Counter(
            "frontend_triton_errors", "Failures reported by Triton or the model.", ["kind"], registry=r
        )
        self.rejected = Counter(
            "frontend_rejected_overload", "Requests refused with 429 (in-flight limit).", registry=r
        )


class Drain:
    """Shutdown state shared by the server and the middleware: once started, new work gets 503 + Retry-After."""

    def __init__(self) -> None:
        self.started_at: float | None = None
        # Requests in flight other than probes and scrapes: the drain waits for these.
        self.busy = 0

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def start(self) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()
            logger.info("draining: new requests get 503; %d in flight", self.busy)

    def wait(self, timeout: float, poll: float = 0.05) -> int:
        """Block (in a thread) until nothing is in flight or `timeout` passes; the number still in flight."""
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            time.sleep(poll)
        return self.busy


def route_label(path: str) -> str:
    if path in KNOWN_ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return "other"


def _error_body(message: str, type_: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


def _overloaded_body(limit: int) -> bytes:
    message = f"the server is at its limit of {limit} requests in flight; retry shortly"
    return _error_body(message, "rate_limit_error", "server_overloaded")


def _draining_body() -> bytes:
    return _error_body("the server is shutting down; retry on another replica", "server_error", "server_shutting_down")


class Observed:
    """Counts, times and logs every HTTP request; refuses generation requests past `max_inflight` with 429, and
    every request but probes and scrapes with 503 once `drain` has started."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: FrontendMetrics,
        max_inflight: int = 0,
        retry_after: int = 1,
        drain: Drain | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_inflight = max_inflight
        self.retry_after = retry_after
        self.drain = drain or Drain()
        self.generating = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = route_label(scope["path"])
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {}).update(started=started, request_id=request_id)
        status = 500
        sent = 0
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        async def refuse(code: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(self.retry_after).encode()),
                *extra,
            ]
            await observed_send({"type": "http.response.start", "status": code, "headers": headers})
            await observed_send({"type": "http.response.body", "body": body})
            self._finish(scope, route, request_id, status, started, received, sent)

        probe = route in PROBE_ROUTES
        if self.drain.draining and not probe:
            # Connection: close, so a client or router holding a keep-alive connection reconnects elsewhere.
            await refuse(503, _draining_body(), [(b"connection", b"close")])
            return
        generation = route in GENERATION_ROUTES
        if generation and self.max_inflight and self.generating >= self.max_inflight:
            self.metrics.rejected.inc()
            await refuse(429, _overloaded_body(self.max_inflight), [])
            return
        if generation:
            self.generating += 1
        if not probe:
            self.drain.busy += 1
        self.metrics.in_flight.labels(route).inc()
        try:
            await self.app(scope, counting_receive, observed_send)
        finally:
            if generation:
                self.generating -= 1
            if not probe:
                self.drain.busy -= 1
            self.metrics.in_flight.labels(route).dec()
            self._finish(scope, route, request_id, status, started, received, sent)

    def _finish(self, scope: Scope, route: str, request_id: str, status: int, started: float, rx: int, tx: int) -> None:
        elapsed = time.perf_counter() - started
        self.metrics.requests.labels(route, str(status)).inc()
        self.metrics.latency.labels(route).observe(elapsed)
        logger.info(
            "request_id=%s method=%s route=%s status=%s duration_ms=%.1f bytes_in=%d bytes_out=%d",
            request_id,
            scope.get("method"),
            route,
            status,
            elapsed * 1000,
            rx,
            tx,
        )
