"""The serving port's re-export of the engine's vllm:* families, the model's info-gauge labels, and draining."""

from __future__ import annotations

import asyncio
import http.server
import sys
import threading
import types

import pytest
from prometheus_client import generate_latest

from frontend.engine_metrics import EngineMetricsProxy, engine_families
from frontend.observability import Drain, FrontendMetrics, Observed

# Shaped as Triton 2.51 prints a model's custom metrics next to its own.
TRITON_TEXT = """\
# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="vllm_model",version="1"} 12
# HELP vllm:num_requests_waiting Requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model="vllm_model",version="1"} 3
# HELP vllm:prompt_tokens_total Prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model="vllm_model",version="1"} 42
# HELP vllm:time_to_first_token_seconds Time to first token.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_count{model="vllm_model",version="1"} 2
vllm:time_to_first_token_seconds_sum{model="vllm_model",version="1"} 0.5
vllm:time_to_first_token_seconds_bucket{model="vllm_model",version="1",le="0.1"} 1
vllm:time_to_first_token_seconds_bucket{model="vllm_model",version="1",le="+Inf"} 2
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="128",engine="0",num_gpu_blocks="512"} 1
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="3",running_lora_adapters="adapter-a,adapter-b",waiting_lora_adapters=""} 1764680000.5
"""


def exported(text: str, model_name: str | None = "tiny") -> str:
    class Collector:
        def collect(self):
            return engine_families(text, model_name)

    return generate_latest(Collector()).decode()


def test_only_vllm_families_with_vllm_labels():
    out = exported(TRITON_TEXT)
    assert "nv_inference_count" not in out
    assert 'vllm:num_requests_waiting{engine="0",model_name="tiny"} 3.0' in out
    assert 'vllm:prompt_tokens_total{engine="0",model_name="tiny"} 42.0' in out
    assert 'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="tiny"} 1.0' in out
    assert 'vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 2.0' in out
    assert 'model="vllm_model"' not in out and "version=" not in out


def test_info_gauges_keep_their_own_labels():
    out = exported(TRITON_TEXT)
    assert 'vllm:cache_config_info{block_size="128",engine="0",num_gpu_blocks="512"} 1.0' in out
    assert (
        'vllm:lora_requests_info{max_lora="3",running_lora_adapters="adapter-a,adapter-b",waiting_lora_adapters=""}'
        in out
    )


def test_triton_model_name_when_served_name_unknown():
    assert 'vllm:num_requests_waiting{engine="0",model_name="vllm_model"} 3.0' in exported(TRITON_TEXT, None)


class _Page(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).hits += 1
        body = TRITON_TEXT.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def triton_page():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Page.hits = 0
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


async def test_proxy_fetches_at_most_once_per_max_age(triton_page):
    proxy = EngineMetricsProxy(triton_page, max_age=60)
    results = await asyncio.gather(*(proxy.collector("tiny") for _ in range(5)))
    assert _Page.hits == 1
    assert all(r.families and r.families[0].name.startswith("vllm:") for r in results)
    fresh = EngineMetricsProxy(triton_page, max_age=0)
    await fresh.collector()
    await fresh.collector()
    assert _Page.hits == 3


async def test_proxy_exports_nothing_while_triton_is_down():
    proxy = EngineMetricsProxy("http://127.0.0.1:9/metrics", max_age=0, timeout=1)
    assert (await proxy.collector()).families == []
    assert proxy.errors == 1


# ---- the model's info-gauge labels (engine_metrics.py beside model.py imports Triton's utils at load) ----


@pytest.fixture
def model_metrics(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    monkeypatch.delitem(sys.modules, "engine_metrics", raising=False)
    import engine_metrics

    return engine_metrics


def test_cache_config_labels_are_vllms(model_metrics):
    from vllm.config import CacheConfig

    config = CacheConfig(block_size=128)
    config.num_gpu_blocks = 512
    labels = model_metrics.cache_config_labels(config)
    assert labels["block_size"] == "128"
    assert labels["num_gpu_blocks"] == "512"
    assert all(isinstance(v, str) for v in labels.values())


def test_lora_labels_and_snapshot(model_metrics):
    from vllm.v1.metrics.stats import SchedulerStats

    stats = SchedulerStats(num_running_reqs=2, num_waiting_reqs=1, kv_cache_usage=0.25)
    stats.running_lora_adapters = {"adapter-a": 1, "adapter-b": 1}
    stats.waiting_lora_adapters = {"adapter-a": 1}
    snap = model_metrics._snapshot(stats, None, "3")
    assert snap["gauges"] == (2, 1, 0.25)
    assert snap["lora"] == {
        "max_lora": "3",
        "running_lora_adapters": "adapter-a,adapter-b",
        "waiting_lora_adapters": "adapter-a",
    }
    assert model_metrics._snapshot(stats, None, None)["lora"] is None  # LoRA off: no lora_requests_info


# ---- draining in the middleware ----


async def _call(app, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


async def test_drain_refuses_new_work_but_not_probes():
    release = asyncio.Event()

    async def inner(scope, receive, send):
        if scope["path"] == "/v1/completions":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    drain = Drain()
    app = Observed(inner, FrontendMetrics(), drain=drain)
    in_flight = asyncio.create_task(_call(app, "/v1/completions"))
    await asyncio.sleep(0.05)
    assert drain.busy == 1
    drain.start()
    status, headers, body = await _call(app, "/v1/chat/completions")
    assert status == 503
    assert headers[b"retry-after"] == b"1" and headers[b"connection"] == b"close"
    assert b'"code": "server_shutting_down"' in body
    assert (await _call(app, "/metrics"))[0] == 200  # scrapes and probes reach their routes
    assert drain.wait(0.05) == 1  # still in flight
    release.set()
    assert (await in_flight)[0] == 200  # the request in flight finishes
    assert drain.busy == 0 and drain.wait(1) == 0
