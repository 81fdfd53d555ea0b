"""Faults with a stack of its own: Triton killed under load and started again, and vLLM's engine dying."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import pytest

from launcher.model_code import procs
from launcher.stack import Stack, StackConfig
from launcher.triton import TritonPorts
from tests.conftest import ENGINE_ARGS, MODEL_NAME, TINY_MODEL, ensure_models, free_port
from tests.integration.test_completions import assert_openai_error

BODY = {"model": MODEL_NAME, "prompt": "def hello", "max_tokens": 400, "ignore_eos": True, "temperature": 0}
SHORT = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2}


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    ensure_models()
    config = StackConfig(
        model=str(TINY_MODEL),
        port=free_port(),
        triton_ports=TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port()),
        engine_args={k: v for k, v in ENGINE_ARGS.items() if "lora" not in k},
        run_dir=tmp_path_factory.mktemp("own-run"),
        log_dir=tmp_path_factory.mktemp("own-logs"),
        ready_timeout=600,
    )
    stack = Stack(config)
    stack.start()
    yield stack
    stack.stop()


async def read_stream(client: httpx.AsyncClient, url: str, started: asyncio.Event) -> list[str]:
    events = []
    async with client.stream("POST", url, json={**BODY, "stream": True}) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                started.set()
    return events


def test_triton_killed_under_load_then_back(own_stack):
    url = f"{own_stack.base_url}/v1/completions"

    async def scenario() -> list[list[str]]:
        async with httpx.AsyncClient(timeout=60) as client:
            started = [asyncio.Event() for _ in range(4)]
            streams = [asyncio.create_task(read_stream(client, url, event)) for event in started]
            await asyncio.wait_for(asyncio.gather(*[e.wait() for e in started]), timeout=60)
            os.killpg(own_stack.triton.process.pid, signal.SIGKILL)
            return await asyncio.wait_for(asyncio.gather(*streams), timeout=30)

    began = time.monotonic()
    results = asyncio.run(scenario())
    assert time.monotonic() - began < 60, "in-flight streams must end, not hang"
    for events in results:
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        assert last["error"]["type"] == "server_error" and "not available" in last["error"]["message"]
    own_stack.triton.stop()  # reap what is left of the killed server
    # While Triton is down: fast, clean 503s.
    began = time.monotonic()
    assert_openai_error(httpx.post(url, json=SHORT, timeout=30), 503)
    assert_openai_error(httpx.get(f"{own_stack.base_url}/health/ready", timeout=30), 503)
    assert time.monotonic() - began < 15
    # Triton comes back on the same ports: the same frontend serves again.
    frontend_pid = own_stack.frontend.process.pid
    own_stack.start_triton()
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline and status != 200:
        status = httpx.post(url, json=SHORT, timeout=30).status_code
        time.sleep(0.3)
    assert status == 200
    assert own_stack.frontend.process.pid == frontend_pid and own_stack.frontend.poll() is None


def test_engine_death_fails_fast_and_turns_readiness_false(own_stack):
    url = f"{own_stack.base_url}/v1/completions"
    assert httpx.post(url, json=SHORT, timeout=60).status_code == 200
    engine_cores = [
        pid for pid in procs.descendants(own_stack.triton.process.pid) if "EngineCore" in procs.read(pid, "cmdline")
    ]
    assert engine_cores, "no VLLM::EngineCore process found"
    for pid in engine_cores:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        began = time.monotonic()
        response = httpx.post(url, json=SHORT, timeout=30)
        status = response.status_code
        if status == 503:
            assert time.monotonic() - began < 10, "requests to a dead engine fail fast"
            assert_openai_error(response, 503)
            break
        time.sleep(0.5)
    assert status == 503
    assert_openai_error(httpx.get(f"{own_stack.base_url}/health/ready", timeout=30), 503)
    # vLLM's /health semantics: a dead engine is a 503 (what llm-d/KServe liveness probes read).
    assert_openai_error(httpx.get(f"{own_stack.base_url}/health", timeout=30), 503)
