"""vllm_backend's tests that need a model repository of their own (ci/L0_backend_vllm/vllm_backend/test.sh and
vllm_backend_test.py, metrics_test's REPORT_CUSTOM_METRICS=false case): a tritonserver in explicit model-control mode
on a copy of our model, with their ensemble, a plain Python model (add_sub) and two broken copies."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from launcher.stack import engine_environment
from launcher.triton import TritonPorts, TritonProcess
from tests.conftest import ENGINE_ARGS, REPO, TINY_MODEL, ensure_models, free_port, log_tail
from tests.integration.test_vllm_backend_clients import PROMPTS, SAMPLING_PARAMETERS, send_vllm_request

# Three engine starts on a server of their own: 9-15 min on a 2-core box. `make test-vllm-backend` runs them.
pytestmark = pytest.mark.skipif(
    not os.environ.get("VLLM_BACKEND_REPOSITORY_TESTS"),
    reason="slow (own tritonserver, three engine starts): run with `make test-vllm-backend`",
)

ENSEMBLE = """name: "ensemble_model"
platform: "ensemble"
max_batch_size: 1
input [ { name: "text_input", data_type: TYPE_STRING, dims: [ -1 ] } ]
output [ { name: "text_output", data_type: TYPE_STRING, dims: [ -1 ] } ]
ensemble_scheduling {
  step [ { model_name: "vllm_load_test", model_version: -1,
           input_map { key: "text_input", value: "text_input" },
           output_map { key: "text_output", value: "text_output" } } ]
}
"""
ADD_SUB_CONFIG = """name: "add_sub"
backend: "python"
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 4 ] }, { name: "INPUT1", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 4 ] },
         { name: "OUTPUT1", data_type: TYPE_FP32, dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU } ]
"""
ADD_SUB_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out = [pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b)]
            responses.append(pb_utils.InferenceResponse(output_tensors=out))
        return responses
"""


def _copy_model(repo: Path, name: str, engine_args: dict, config_extra: str = "") -> None:
    target = repo / name
    shutil.copytree(REPO / "model_repository" / "vllm_model", target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "1" / "model.json").write_text(json.dumps(engine_args))
    if config_extra:
        with open(target / "config.pbtxt", "a", encoding="utf-8") as config:
            config.write(config_extra)


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory):
    ensure_models()
    repo = tmp_path_factory.mktemp("vllm-backend-models")
    args = {"model": str(TINY_MODEL), **{k: v for k, v in ENGINE_ARGS.items() if "lora" not in k}}
    _copy_model(repo, "vllm_load_test", args)
    _copy_model(
        repo,
        "vllm_no_metrics",
        args,
        '\nparameters: { key: "REPORT_CUSTOM_METRICS" value: { string_value: "false" } }\n',
    )
    _copy_model(
        repo, "vllm_invalid_1", {**{k: v for k, v in args.items() if k != "enforce_eager"}, "invalid_attribute": True}
    )
    _copy_model(repo, "vllm_invalid_2", {**args, "model": "invalid_model"})
    (repo / "ensemble_model" / "1").mkdir(parents=True)
    (repo / "ensemble_model" / "config.pbtxt").write_text(ENSEMBLE)
    (repo / "add_sub" / "1").mkdir(parents=True)
    (repo / "add_sub" / "config.pbtxt").write_text(ADD_SUB_CONFIG)
    (repo / "add_sub" / "1" / "model.py").write_text(ADD_SUB_MODEL)
    ports = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    log = tmp_path_factory.mktemp("vllm-backend-logs") / "triton.log"
    env = {**engine_environment(REPO / ".cache"), "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    server = TritonProcess(
        str(repo),
        ports,
        tmp_path_factory.mktemp("vllm-backend-work"),
        env=env,
        log_path=str(log),
        extra_args=["--model-control-mode=explicit"],
    )
    server.start()
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{server.http_url}/v2/health/live", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log_tail(log, 4000)
        time.sleep(0.5)
    yield server, f"127.0.0.1:{ports.grpc}", log
    server.stop()


def _generate(url: str, model: str, params_as_tensor: bool) -> list[str]:
    results = []
    with grpcclient.InferenceServerClient(url) as client:
        client.start_stream(callback=lambda result, error: results.append(error or result))
        for i, prompt in enumerate(PROMPTS):
            send_vllm_request(client, prompt, i, False, SAMPLING_PARAMETERS, model, params_as_tensor)
        client.stop_stream()
    assert len(results) == len(PROMPTS)
    assert not any(isinstance(r, InferenceServerException) for r in results), results
    return [r.as_numpy("text_output")[0].decode() for r in results]


def _add_sub(client) -> None:
    a, b = np.random.rand(4).astype(np.float32), np.random.rand(4).astype(np.float32)
    inputs = [
        grpcclient.InferInput("INPUT0", [4], np_to_triton_dtype(a.dtype)),
        grpcclient.InferInput("INPUT1", [4], np_to_triton_dtype(b.dtype)),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    response = client.infer("add_sub", inputs, request_id="10")
    assert np.allclose(a + b, response.as_numpy("OUTPUT0")) and np.allclose(a - b, response.as_numpy("OUTPUT1"))


def test_vllm_triton_backend(explicit_server):
    """Their test_vllm_triton_backend, step by step (the model is our vllm_model, copied as vllm_load_test)."""
    _, url, _ = explicit_server
    with grpcclient.InferenceServerClient(url) as client:
        client.load_model("vllm_load_test")
        assert client.is_model_ready("vllm_load_test")
        client.load_model("add_sub")
        assert client.is_model_ready("add_sub")
        client.load_model("ensemble_model")  # an ensemble over the vLLM model loads
        assert client.is_model_ready("ensemble_model")
        client.unload_model("ensemble_model")
        client.unload_model("vllm_load_test")
        deadline = time.monotonic() + 60
        while client.is_model_ready("vllm_load_test") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not client.is_model_ready("vllm_load_test")
        _add_sub(client)
        client.load_model("vllm_load_test")
        assert client.is_model_ready("vllm_load_test")
        client.unload_model("add_sub")
        assert not client.is_model_ready("add_sub")
        assert all(t.startswith(p) for t, p in zip(_generate(url, "vllm_load_test", True), PROMPTS, strict=True))
        assert all(t.startswith(p) for t, p in zip(_generate(url, "vllm_load_test", False), PROMPTS, strict=True))
        client.unload_model("vllm_load_test")


def test_model_with_invalid_attributes(explicit_server):
    _, url, _ = explicit_server
    with grpcclient.InferenceServerClient(url) as client, pytest.raises(InferenceServerException):
        client.load_model("vllm_invalid_1")


def test_vllm_invalid_model_name(explicit_server):
    _, url, _ = explicit_server
    with grpcclient.InferenceServerClient(url) as client, pytest.raises(InferenceServerException):
        client.load_model("vllm_invalid_2")


def test_vllm_metrics_disabled(explicit_server):
    """metrics_test with REPORT_CUSTOM_METRICS "false": the model serves and reports no vllm: metrics."""
    server, url, _ = explicit_server
    with grpcclient.InferenceServerClient(url) as client:
        client.load_model("vllm_no_metrics")
        _generate(url, "vllm_no_metrics", True)
        time.sleep(1.0)  # the model would publish metrics every 0.2 s
        text = httpx.get(f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=10).text
        client.unload_model("vllm_no_metrics")
    assert not [line for line in text.splitlines() if line.startswith("vllm:") and 'model="vllm_no_metrics"' in line]
