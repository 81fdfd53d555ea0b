"""Auth, client disconnects, and Triton going away and coming back, against the real stack."""

from __future__ import annotations

import socket
import time

import httpx
import openai
import pytest

from launcher.stack import FrontendProcess
from tests.conftest import MODEL_NAME, free_port, wait_for_idle
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_completions import assert_openai_error

API_KEY = "sk-test-0123456789"
SLOW = {"model": MODEL_NAME, "prompt": "def hello", "max_tokens": 900, "ignore_eos": True, "temperature": 0}


@pytest.fixture(scope="module")
def secured(triton_grpc_url, tmp_path_factory):
    frontend = FrontendProcess(
        port=free_port(),
        triton_grpc=triton_grpc_url,
        api_key=API_KEY,
        log_path=tmp_path_factory.mktemp("secured") / "frontend.log",
    )
    frontend.start()
    yield frontend
    frontend.stop()


def test_no_key_is_401(secured):
    body = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2}
    error = assert_openai_error(httpx.post(f"{secured.base_url}/v1/completions", json=body), 401)
    assert error["code"] == "invalid_api_key"
    assert_openai_error(httpx.get(f"{secured.base_url}/v1/models"), 401)


def test_wrong_key_is_401(secured):
    for header in ("Bearer sk-wrong", "Basic " + API_KEY, "Bearer", API_KEY):
        response = httpx.get(f"{secured.base_url}/v1/models", headers={"Authorization": header})
        assert_openai_error(response, 401)
    client = openai.OpenAI(base_url=f"{secured.base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_right_key_is_served(secured):
    client = openai.OpenAI(base_url=f"{secured.base_url}/v1", api_key=API_KEY, max_retries=0)
    assert client.models.list().data[0].id == MODEL_NAME
    result = client.completions.create(model=MODEL_NAME, prompt="hi", max_tokens=2, extra_body={"ignore_eos": True})
    assert result.usage.completion_tokens == 2


def test_health_is_open_by_default_and_can_be_closed(secured, triton_grpc_url, tmp_path):
    assert httpx.get(f"{secured.base_url}/health").status_code == 200
    closed = FrontendProcess(
        port=free_port(),
        triton_grpc=triton_grpc_url,
        api_key=API_KEY,
        env={"OPEN_HEALTH": "false"},
        log_path=tmp_path / "frontend.log",
    )
    closed.start()
    try:
        assert_openai_error(httpx.get(f"{closed.base_url}/health"), 401)
        ok = httpx.get(f"{closed.base_url}/health/ready", headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200
    finally:
        closed.stop()


def test_the_key_is_not_logged(secured):
    httpx.get(f"{secured.base_url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
    httpx.get(f"{secured.base_url}/v1/models", headers={"Authorization": "Bearer sk-wrong-guess"})
    text = secured.log_path.read_text()
    assert API_KEY not in text and "sk-wrong-guess" not in text


def test_disconnect_mid_stream_aborts_the_engine_request(base_url, triton):
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{base_url}/v1/completions", json={**SLOW, "stream": True}) as response:
            assert response.status_code == 200
            events = 0
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    events += 1
                if events >= 3:
                    break
        # Leaving both blocks closes the connection mid-stream.
    assert triton.control("stats")["engine_unfinished_requests"] <= 1
    assert wait_for_idle(triton, timeout=10) == {"active_requests": 0, "engine_unfinished_requests": 0}


def test_disconnect_while_waiting_for_a_non_streamed_answer_aborts_it(base_url, triton, stack):
    import json

    body = json.dumps(SLOW).encode()
    request = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", stack.config.port)) as sock:
        sock.sendall(request)
        deadline = time.monotonic() + 10
        while triton.control("stats")["engine_unfinished_requests"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert triton.control("stats")["engine_unfinished_requests"] == 1
    assert wait_for_idle(triton, timeout=10) == {"active_requests": 0, "engine_unfinished_requests": 0}


def test_triton_unreachable_is_503_and_service_recovers_without_restart(triton_grpc_url, tmp_path):
    proxy_port = free_port()
    proxy = TcpProxy(proxy_port, int(triton_grpc_url.rsplit(":", 1)[1]))
    proxy.start()
    frontend = FrontendProcess(
        port=free_port(), triton_grpc=f"127.0.0.1:{proxy_port}", log_path=tmp_path / "frontend.log"
    )
    frontend.start()
    body = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2}
    url = f"{frontend.base_url}/v1/completions"
    try:
        assert httpx.post(url, json=body, timeout=30).status_code == 200
        proxy.stop()
        error = assert_openai_error(httpx.post(url, json=body, timeout=30), 503)
        assert error["type"] == "server_error"
        assert_openai_error(httpx.get(f"{frontend.base_url}/health/ready", timeout=30), 503)
        # /health and /ping follow vLLM's /health: 503 while the engine cannot be reached (the frontend answers).
        assert_openai_error(httpx.get(f"{frontend.base_url}/health", timeout=30), 503)
        assert_openai_error(httpx.get(f"{frontend.base_url}/ping", timeout=30), 503)
        proxy.start()
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            status = httpx.post(url, json=body, timeout=30).status_code
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200
        assert frontend.poll() is None, "the same frontend process serves again"
    finally:
        frontend.stop()
        proxy.stop()


def test_lora_management_routes_need_the_key(secured):
    for route, body in (
        ("load_lora_adapter", {"lora_name": "x", "lora_path": "/tmp"}),
        ("unload_lora_adapter", {"lora_name": "adapter-a"}),
    ):
        assert_openai_error(httpx.post(f"{secured.base_url}/v1/{route}", json=body), 401)
