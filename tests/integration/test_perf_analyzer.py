"""Smoke test: Triton's own perf_analyzer (2.51.0, fetched by scripts/get_perf_analyzer.sh) streams from the
decoupled vllm_model over gRPC and records one timestamp per streamed response."""

from __future__ import annotations

import json
import math
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


def present(outputs: list[dict], name: str) -> list:
    """The values of one output across responses, as scalars; a response without it exports "" and is skipped."""
    values = [out[name] for out in outputs if out[name] != ""]
    return [value[0] if isinstance(value, list) else value for value in values]


def test_perf_analyzer_streams_from_the_decoupled_model(perf_analyzer, triton_grpc_url, tmp_path, tokenizer):
    sampling = json.dumps({"max_tokens": MAX_TOKENS, "ignore_eos": True, "temperature": 0})
    # Only the inputs named here are sent; the model's other optional inputs (prompt_token_ids,
    # control_request, ...) are left out. perf_analyzer 2.51 asks for every output the config declares and
    # exports uninitialised memory for the ones a response lacks; a garbage FP32 that happens to be NaN or Inf
    # makes its JSON writer stop before the first flush, leaving an empty export with exit code 0 (seen in CI).
    # So every numeric output is asked for: the export then holds real values only.
    data = {
        "data": [
            {
                "text_input": ["def hello"],
                "stream": [True],
                "sampling_parameters": [sampling],
                "return_num_output_tokens": [True],
                "return_num_input_tokens": [True],
                "return_cumulative_logprob": [True],
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

    prompt_tokens = len(tokenizer(data["data"][0]["text_input"][0])["input_ids"])
    exported = export.read_text()
    assert exported, f"perf_analyzer left an empty profile export:\n{output[-6000:]}"
    profile = json.loads(exported)
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
        # Every response that carries text carries the numeric outputs asked for, with real values.
        carrying_text = sum(1 for out in request["response_outputs"] if out["text_output"])
        logprobs = present(request["response_outputs"], "cumulative_logprob")
        assert len(logprobs) >= carrying_text > 0, request["response_outputs"]
        # A running sum of log-probabilities: finite, never positive, never rising.
        assert all(math.isfinite(lp) and lp <= 0 for lp in logprobs), logprobs
        assert logprobs == sorted(logprobs, reverse=True), logprobs
        assert set(present(request["response_outputs"], "num_input_tokens")) == {prompt_tokens}
        assert set(request["request_inputs"]) == set(data["data"][0]), request["request_inputs"]
