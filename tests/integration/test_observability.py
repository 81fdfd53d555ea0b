"""Engine metrics on Triton's metrics port, the frontend's /metrics, backpressure, and a disconnect storm."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from launcher.stack import FrontendProcess
from tests.conftest import MODEL_NAME, free_port
from tests.integration.test_completions import assert_openai_error

LABELS = {"model": "vllm_model", "version": "1"}


def scrape(url: str) -> str:
    return httpx.get(url, timeout=10).text


def value(text: str, name: str, labels: dict[str, str] | None = None, required: bool = True) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    total, found = 0.0, False
    for match in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? ([0-9.e+-]+|NaN)$", text, re.MULTILINE):
        sample = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(sample.get(k) == v for k, v in (labels or {}).items()):
            total += float(match.group(2))
            found = True
    assert found or not required, f"{name}{labels} not in metrics"
    return total


@pytest.fixture(scope="module")
def triton_metrics(stack) -> str:
    return f"http://127.0.0.1:{stack.config.triton_ports.metrics}/metrics"


def test_engine_metrics_with_vllm_names(triton_metrics, openai_client):
    time.sleep(1.0)  # let earlier tests' requests be published first (the model flushes every 0.2 s)
    before = scrape(triton_metrics)
    openai_client.completions.create(model=MODEL_NAME, prompt="hi there", max_tokens=7, extra_body={"ignore_eos": True})
    time.sleep(1.0)  # the model flushes metrics every 0.2 s
    after = scrape(triton_metrics)
    for gauge in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert value(after, gauge, LABELS) >= 0
    assert (
        value(after, "vllm:generation_tokens_total", LABELS)
        - value(before, "vllm:generation_tokens_total", LABELS, required=False)
        >= 7
    )
    assert value(after, "vllm:prompt_tokens_total", LABELS) > value(
        before, "vllm:prompt_tokens_total", LABELS, required=False
    )
    length = {**LABELS, "finished_reason": "length"}
    assert (
        value(after, "vllm:request_success_total", length)
        == value(before, "vllm:request_success_total", length, required=False) + 1
    )
    for histogram in (
        "vllm:time_to_first_token_seconds",
        "vllm:request_time_per_output_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
    ):
        assert value(after, f"{histogram}_count", LABELS) > value(
            before, f"{histogram}_count", LABELS, required=False
        ), histogram
    # The per-token histogram costs an IPC per token and is off by default (REPORT_INTER_TOKEN_LATENCY).
    assert "vllm:inter_token_latency_seconds" not in after


def test_frontend_metrics(base_url, openai_client):
    before = scrape(f"{base_url}/metrics")
    list(
        openai_client.completions.create(
            model=MODEL_NAME, prompt="hi", max_tokens=5, stream=True, extra_body={"ignore_eos": True}
        )
    )
    httpx.post(f"{base_url}/v1/completions", json={"model": MODEL_NAME, "prompt": "hi", "temperature": 7})
    after = scrape(f"{base_url}/metrics")
    route = {"route": "/v1/completions"}
    ok = {**route, "status": "200"}
    assert (
        value(after, "frontend_requests_total", ok) == value(before, "frontend_requests_total", ok, required=False) + 1
    )
    bad = {**route, "status": "400"}
    assert value(after, "frontend_requests_total", bad) >= 1
    assert (
        value(after, "frontend_generated_tokens_total", route)
        - value(before, "frontend_generated_tokens_total", route, required=False)
        == 5
    )
    assert value(after, "frontend_time_to_first_token_seconds_count", route) > value(
        before, "frontend_time_to_first_token_seconds_count", route, required=False
    )
    assert value(after, "frontend_request_duration_seconds_count", route) >= 2
    assert "frontend_requests_in_flight" in after


def test_overload_gets_429_with_retry_after_and_accepted_requests_complete(triton_grpc_url, tmp_path):
    frontend = FrontendProcess(
        port=free_port(), triton_grpc=triton_grpc_url, env={"MAX_INFLIGHT": "3"}, log_path=tmp_path / "f.log"
    )
    frontend.start()
    body = {"model": MODEL_NAME, "prompt": "def hello", "max_tokens": 48, "ignore_eos": True, "temperature": 0}

    async def one(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(f"{frontend.base_url}/v1/completions", json=body, timeout=120)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient() as client:
            return await asyncio.gather(*[one(client) for _ in range(16)])

    try:
        responses = asyncio.run(burst())
        accepted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert len(accepted) + len(refused) == 16
        assert 1 <= len(accepted) and len(refused) >= 8
        for response in refused:
            assert response.headers["retry-after"] == "1"
            assert_openai_error(response, 429)
        texts = {r.json()["choices"][0]["text"] for r in accepted}
        assert len(texts) == 1 and all(r.json()["usage"]["completion_tokens"] == 48 for r in accepted)
        assert httpx.post(f"{frontend.base_url}/v1/completions", json=body, timeout=120).status_code == 200
        assert "frontend_rejected_overload_total" in scrape(f"{frontend.base_url}/metrics")
    finally:
        frontend.stop()


def test_disconnect_storm(base_url, triton_metrics, openai_client):
    """40 streams, half dropped mid-stream: the engine's running count falls to the live ones, and those finish
    with complete, correct output."""
    body = {"model": MODEL_NAME, "prompt": "def hello", "max_tokens": 200, "ignore_eos": True, "temperature": 0}
    expected = (
        openai_client.completions.create(
            model=MODEL_NAME, prompt="def hello", max_tokens=200, temperature=0, extra_body={"ignore_eos": True}
        )
        .choices[0]
        .text
    )
    running = []

    async def stream(client: httpx.AsyncClient, index: int, drop: bool, dropped: asyncio.Event) -> str | None:
        text = ""
        async with client.stream("POST", f"{base_url}/v1/completions", json={**body, "stream": True}) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    import json

                    text += json.loads(line[6:])["choices"][0]["text"]
                    if drop and len(text) > 0:
                        return None
        return text

    async def storm() -> list[str | None]:
        dropped = asyncio.Event()
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=100)) as client:
            tasks = [asyncio.create_task(stream(client, i, i % 2 == 0, dropped)) for i in range(40)]
            await asyncio.sleep(0)
            done = 0
            while done < 20:
                done = sum(t.done() for t in tasks)
                await asyncio.sleep(0.05)
            # Half are gone: within a few seconds the engine runs only the live streams (at most 20).
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                running.append(value(scrape(triton_metrics), "vllm:num_requests_running", LABELS))
                if running[-1] <= 20:
                    break
                await asyncio.sleep(0.2)
            return await asyncio.gather(*tasks)

    results = asyncio.run(storm())
    assert running and running[-1] <= 20, running
    survivors = [r for r in results if r is not None]
    assert len(survivors) == 20
    assert all(text == expected for text in survivors)
