"""`make serve`'s launcher, run as users run it: it serves, Triton's own endpoints work, and SIGTERM stops
everything it started (tritonserver, the Python stub, vLLM's EngineCore and workers, the frontend)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

from launcher.model_code import procs
from launcher.triton import kill_group
from tests.conftest import ENGINE_ARGS, MODEL_NAME, REPO, TINY_MODEL, ensure_models, free_port, log_tail, wait_until


def test_make_serve_launcher_serves_and_stops_cleanly(tmp_path):
    ensure_models()
    ports = {name: free_port() for name in ("PORT", "TRITON_HTTP_PORT", "TRITON_GRPC_PORT", "TRITON_METRICS_PORT")}
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "MODEL": str(TINY_MODEL),
        "ENGINE_ARGS": json.dumps({k: v for k, v in ENGINE_ARGS.items() if "lora" not in k}),
    }
    env.pop("API_KEY", None)
    shm_before = set(os.listdir("/dev/shm"))
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    launcher = subprocess.Popen(
        [sys.executable, "-m", "launcher.serve"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    frontend = f"http://127.0.0.1:{ports['PORT']}"
    triton_http = f"http://127.0.0.1:{ports['TRITON_HTTP_PORT']}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert launcher.poll() is None, log_tail(tmp_path / "serve.log", 3000)
            try:
                if httpx.get(f"{frontend}/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert httpx.get(f"{triton_http}/v2/health/ready").status_code == 200
        body = {"text_input": "def hello", "stream": True, "sampling_parameters": json.dumps({"max_tokens": 8})}
        with httpx.stream("POST", f"{triton_http}/v2/models/vllm_model/generate_stream", json=body, timeout=60) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
        assert len(events) > 1 and all("text_output" in e for e in events)
        completion = httpx.post(
            f"{frontend}/v1/completions", json={"model": MODEL_NAME, "prompt": "hi", "max_tokens": 3}, timeout=60
        )
        assert completion.status_code == 200

        tree = set(procs.descendants(launcher.pid))
        assert len(tree) >= 4, "tritonserver, stub, EngineCore and frontend at least"
        assert httpx.get(f"{frontend}/health").status_code == 200
        # Drain: requests in flight when SIGTERM arrives finish, complete, while probes and new requests get 503.
        # Two are in flight: a long stream, and a request whose body is still arriving (it holds the drain open
        # for as long as the test needs, whatever this machine's speed).
        events: list[str] = []
        first = threading.Event()

        def stream() -> None:
            body = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 300, "ignore_eos": True, "stream": True}
            with httpx.stream("POST", f"{frontend}/v1/completions", json=body, timeout=120) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
                        first.set()

        held_body = json.dumps({"model": MODEL_NAME, "prompt": "hi", "max_tokens": 4}).encode()
        held = socket.create_connection(("127.0.0.1", ports["PORT"]), timeout=120)
        held.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(held_body)}\r\n\r\n".encode()
            + held_body[:8]
        )
        in_flight = r'frontend_requests_in_flight\{route="/v1/completions"\} 1.0'
        assert wait_until(lambda: re.search(in_flight, httpx.get(f"{frontend}/metrics").text), 30)
        reader = threading.Thread(target=stream)
        reader.start()
        assert first.wait(60)
        launcher.send_signal(signal.SIGTERM)
        with httpx.Client(base_url=frontend, timeout=30) as client:
            # 503 as soon as the launcher has passed SIGTERM on to the frontend.
            assert wait_until(lambda: client.get("/health").status_code == 503, 30)
            assert client.get("/ping").status_code == 503
            assert client.get("/health/ready").status_code == 503
            refused = client.post("/v1/completions", json={"model": MODEL_NAME, "prompt": "hi", "max_tokens": 3})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "server_shutting_down"
            assert client.get("/metrics").status_code == 200
        held.sendall(held_body[8:])
        answer = held.makefile("rb").read().decode()
        held.close()
        assert answer.startswith("HTTP/1.1 200"), answer[:300]
        assert json.loads(answer.split("\r\n\r\n", 1)[1])["usage"]["completion_tokens"] == 4
        reader.join(timeout=120)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert all("error" not in c for c in chunks)
        assert launcher.wait(timeout=120) == 0
        time.sleep(1)
        assert [pid for pid in tree if procs.alive(pid)] == []
        # The launcher names its Triton's shared-memory regions after its own pid.
        prefix = f"tvo{launcher.pid}x"
        leaked = {name for name in set(os.listdir("/dev/shm")) - shm_before if name.startswith(prefix)}
        assert leaked == set()
    finally:
        if launcher.poll() is None:
            kill_group(launcher.pid)
        log.close()
