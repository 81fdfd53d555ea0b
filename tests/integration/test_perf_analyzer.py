"""Smoke test: Triton's own perf_analyzer (2.51.0, fetched by scripts/get_perf_analyzer.sh) streams from the
decoupled vllm_model over gRPC and records one timestamp per streamed response."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GET_SCRIPT = REPO / "scripts" / "get_perf_analyzer.sh"
MODEL = "vllm_model"
MAX_TOKENS = 16
CONCURRENCY = 2
# A fixed request count (one measurement, no stability search): on a busy 2-core box perf_analyzer's default
# time-window mode can fail with "Failed to obtain stable measurement". 20 requests x 16 tokens at
# concurrency 2 take a few seconds.
REQUEST_COUNT = 20
THROUGHPUT = re.compile(r"^\s*Throughput: ([0-9.]+) infer/sec", re.MULTILINE)


@pytest.fixture(scope="module")
def perf_analyzer() -> Path:
    """Fetch perf_analyzer (idempotent: a second run only re-checks it) and return its wrapper script."""
    done = subprocess.run(["bash", str(GET_SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"get_perf_analyzer.sh failed:\n{done.stdout}\n{done.stderr}"
    wrapper = Path(done.stdout.strip().splitlines()[-1])
    assert wrapper.name == "perf_analyzer.sh" and wrapper.is_file(), done.stdout
    return wrapper


def token_count(output) -> int:
    """num_output_tokens of one exported response ([-1] UINT32: a scalar when it holds one element)."""
    value = output["num_output_tokens"]
    return sum(value) if isinstance(value, list) else int(value)


def test_perf_analyzer_streams_from_the_decoupled_model(perf_analyzer, triton_grpc_url, tmp_path):
    sampling = json.dumps({"max_tokens": MAX_TOKENS, "ignore_eos": True, "temperature": 0})
    # Only the inputs named here are sent; the model's other optional inputs (prompt_token_ids,
    # control_request, ...) are left out. return_num_output_tokens makes the exported responses carry real
    # token counts (outputs the model does not send show up in the export as garbage values).
    data = {
        "data": [
            {
                "text_input": ["def hello"],
                "stream": [True],
                "sampling_parameters": [sampling],
                "return_num_output_tokens": [True],
            }
        ]
    }
    input_file = tmp_path / "perf_input.json"
    input_file.write_text(json.dumps(data))
    export = tmp_path / "profile_export.json"

    cmd = [
        str(perf_analyzer),
        "-m", MODEL,
        "-i", "grpc",
        "--streaming",
        "-u", triton_grpc_url,
        "--input-data", str(input_file),
        "--concurrency-range", str(CONCURRENCY),
        "--request-count", str(REQUEST_COUNT),
        "--profile-export-file", str(export),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"perf_analyzer exited {done.returncode}:\n{output[-6000:]}"
    assert "Detected decoupled model" in output, output[-6000:]

    match = THROUGHPUT.search(output)
    assert match, f"no throughput line in perf_analyzer output:\n{output[-6000:]}"
    assert float(match.group(1)) > 0, match.group(0)

    profile = json.loads(export.read_text())
    assert profile["service_kind"] == "triton"
    requests = [request for experiment in profile["experiments"] for request in experiment["requests"]]
    assert len(requests) >= REQUEST_COUNT
    for request in requests:
        stamps = request["response_timestamps"]
        assert len(stamps) > 1, f"streaming should give several responses per request: {request}"
        assert stamps == sorted(stamps) and stamps[0] > request["timestamp"]
        assert len(request["response_outputs"]) == len(stamps)
        # vLLM may merge engine steps into one response when the consumer lags: count tokens, not responses.
        assert sum(token_count(out) for out in request["response_outputs"]) == MAX_TOKENS
        assert set(request["request_inputs"]) == set(data["data"][0]), request["request_inputs"]
