"""Frontend metrics (Prometheus), request logs, and backpressure, as one plain ASGI middleware.

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
    "/metrics",
    "/tokenize",
    "/detokenize",
    "/version",
)
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


def route_label(path: str) -> str:
    if path in KNOWN_ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return "other"


def _overloaded_body(limit: int) -> bytes:
    message = f"the server is at its limit of {limit} requests in flight; retry shortly"
    error = {"message": message, "type": "rate_limit_error", "param": None, "code": "server_overloaded"}
    return json.dumps({"error": error}).encode()


class Observed:
    """Counts, times and logs every HTTP request; refuses generation requests past `max_inflight` with 429."""

    def __init__(self, app: ASGIApp, metrics: FrontendMetrics, max_inflight: int = 0, retry_after: int = 1) -> None:
        self.app = app
        self.metrics = metrics
        self.max_inflight = max_inflight
        self.retry_after = retry_after
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

        generation = route in GENERATION_ROUTES
        if generation and self.max_inflight and self.generating >= self.max_inflight:
            self.metrics.rejected.inc()
            body = _overloaded_body(self.max_inflight)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(self.retry_after).encode()),
            ]
            await observed_send({"type": "http.response.start", "status": 429, "headers": headers})
            await observed_send({"type": "http.response.body", "body": body})
            self._finish(scope, route, request_id, status, started, received, sent)
            return
        if generation:
            self.generating += 1
        self.metrics.in_flight.labels(route).inc()
        try:
            await self.app(scope, counting_receive, observed_send)
        finally:
            if generation:
                self.generating -= 1
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
