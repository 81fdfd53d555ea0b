"""The serving port speaks the routers' model-server protocol: vLLM-named engine series on /metrics (Gateway API
Inference Extension, proposal 003), and vLLM's /health semantics."""

from __future__ import annotations

import re
import threading
import time

import httpx

from launcher.stack import FrontendProcess
from tests.conftest import MODEL_NAME, free_port, wait_until
from tests.integration.test_observability import scrape, value

SERIES = {"model_name": MODEL_NAME, "engine": "0"}


def series(text: str, name: str) -> list[dict[str, str]]:
    """Label sets of every sample of `name`."""
    return [
        dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        for m in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? \S+$", text, re.MULTILINE)
    ]


def latest_lora_info(text: str) -> dict[str, str]:
    """The lora_requests_info series with the newest timestamp (how the endpoint picker reads it)."""
    samples = re.findall(r"^vllm:lora_requests_info\{([^}]*)\} (\S+)$", text, re.MULTILINE)
    labels, _ = max(samples, key=lambda s: float(s[1]))
    return dict(re.findall(r'(\w+)="([^"]*)"', labels))


def test_gauges_one_series_each_with_vllm_labels(base_url, openai_client):
    openai_client.completions.create(model=MODEL_NAME, prompt="hi", max_tokens=2)
    time.sleep(1.0)
    text = scrape(f"{base_url}/metrics")
    for gauge in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"):
        assert series(text, gauge) == [SERIES], gauge
        assert value(text, gauge, SERIES) >= 0
    assert "frontend_requests_total" in text  # the frontend's own metrics are still there
    assert 'model="vllm_model"' not in text  # Triton's labels are replaced, not added to


def test_cache_config_and_lora_info(base_url):
    text = scrape(f"{base_url}/metrics")
    (cache,) = series(text, "vllm:cache_config_info")
    assert int(cache["block_size"]) > 0 and int(cache["num_gpu_blocks"]) > 0
    assert value(text, "vllm:cache_config_info") == 1
    # The engine's max_loras, as vLLM reports it: 2 declared adapters + room for 2 more + the model's spare slot.
    assert latest_lora_info(text)["max_lora"] == "5"


def test_counters_and_histograms_fresh_within_a_second(base_url, stack, openai_client):
    time.sleep(1.0)  # earlier requests published
    before = scrape(f"{base_url}/metrics")
    openai_client.completions.create(model=MODEL_NAME, prompt="hi there", max_tokens=7, extra_body={"ignore_eos": True})
    time.sleep(1.0)  # the contract: at most 1 s old
    after = scrape(f"{base_url}/metrics")
    generated = "vllm:generation_tokens_total"
    assert value(after, generated, SERIES) - value(before, generated, SERIES) >= 7
    assert value(after, "vllm:prompt_tokens_total", SERIES) > value(before, "vllm:prompt_tokens_total", SERIES)
    for histogram in ("vllm:time_to_first_token_seconds", "vllm:request_time_per_output_token_seconds"):
        assert value(after, f"{histogram}_count", SERIES) == value(before, f"{histogram}_count", SERIES) + 1
    # The same numbers as on Triton's metrics port.
    triton = scrape(f"http://127.0.0.1:{stack.config.triton_ports.metrics}/metrics")
    assert value(triton, "vllm:generation_tokens_total") == value(after, "vllm:generation_tokens_total", SERIES)


def test_lora_requests_info_names_the_running_adapter(base_url):
    """While an adapter's request runs, lora_requests_info names it; once the request is gone (here: its client
    disconnected, so the engine request was aborted), the running list is empty again."""
    seen: list[dict[str, str]] = []
    stop = threading.Event()
    outcome: dict = {}

    def stream() -> None:
        body = {"model": "adapter-a", "prompt": "hi", "max_tokens": 900, "ignore_eos": True, "stream": True}
        started = time.monotonic()
        try:
            with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=180) as response:
                outcome["status"] = response.status_code
                outcome["events"] = 0
                for line in response.iter_lines():
                    outcome["events"] += line.startswith("data: ")
                    outcome["last"] = line[-300:]
                    if stop.is_set():
                        break  # closes the connection: the frontend cancels the request
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            outcome["error"] = repr(exc)
        outcome["seconds"] = round(time.monotonic() - started, 2)

    reader = threading.Thread(target=stream)
    reader.start()
    try:
        while reader.is_alive():
            seen.append(latest_lora_info(scrape(f"{base_url}/metrics")))
            if "adapter-a" in seen[-1]["running_lora_adapters"].split(","):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        reader.join(timeout=180)
    assert seen and "adapter-a" in seen[-1]["running_lora_adapters"].split(","), (outcome, seen[-3:])
    assert outcome.get("status") == 200 and "error" not in outcome, outcome

    def nothing_running() -> bool:
        return latest_lora_info(scrape(f"{base_url}/metrics"))["running_lora_adapters"] == ""

    assert wait_until(nothing_running, 10, poll=0.2), "adapter-a still running 10 s after its client left"


def test_health_ping_ready(base_url):
    for path in ("/health", "/ping", "/health/ready"):
        assert httpx.get(f"{base_url}{path}", timeout=10).status_code == 200, path


def test_health_is_503_without_triton(tmp_path):
    """vLLM's /health contract: 503 while the engine cannot serve; no stale engine numbers on /metrics."""
    dead = free_port()
    frontend = FrontendProcess(
        port=free_port(),
        triton_grpc=f"127.0.0.1:{dead}",
        env={"TRITON_METRICS_URL": f"http://127.0.0.1:{dead}/metrics"},
        log_path=tmp_path / "f.log",
    )
    frontend.start()
    try:
        for path in ("/health", "/ping", "/health/ready"):
            response = httpx.get(f"{frontend.base_url}{path}", timeout=30)
            assert response.status_code == 503, path
            assert response.json()["error"]["code"] == "service_unavailable"
        metrics = httpx.get(f"{frontend.base_url}/metrics", timeout=30)
        assert metrics.status_code == 200 and "vllm:" not in metrics.text
    finally:
        frontend.stop()
