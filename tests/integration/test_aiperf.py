"""NVIDIA AIPerf, unchanged, against our frontend: completions and chat, streaming and not, every request served
with exactly the tokens asked for. AIPerf lives in .venv-aiperf (scripts/setup_aiperf.sh, installed on first use)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import aiperf
from bench.load import Level
from tests.conftest import TINY_MODEL

REQUESTS = 8
OUTPUT_LEN = 16


@pytest.fixture(scope="module")
def aiperf_binary() -> Path:
    done = subprocess.run(["bash", str(aiperf.SETUP_SCRIPT)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"setup_aiperf.sh failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert aiperf.BINARY.exists()
    return aiperf.BINARY


@pytest.mark.parametrize(
    ("endpoint_type", "stream"),
    [("completions", True), ("chat", True), ("chat", False)],
    ids=["completions-stream", "chat-stream", "chat"],
)
def test_aiperf_profiles_our_frontend(aiperf_binary, base_url, tmp_path, endpoint_type, stream) -> None:
    model = json.loads(subprocess.check_output(["curl", "-sf", f"{base_url}/v1/models"]))["data"][0]["id"]
    level = Level("c2", 2, REQUESTS, stream=stream)
    command = aiperf.profile_command(
        base_url, model, str(TINY_MODEL), level, REQUESTS, 32, OUTPUT_LEN, 1, tmp_path, 120, endpoint_type
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=aiperf.aiperf_environment())
    assert done.returncode == 0, f"aiperf failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    records = aiperf.records_from_export(tmp_path / "profile_export.jsonl")
    assert len(records) == REQUESTS
    assert [r.error for r in records] == [None] * REQUESTS
    assert [r.output_tokens for r in records] == [OUTPUT_LEN] * REQUESTS  # ignore_eos + the usage we report
    if stream:
        # Every request reached AIPerf as many SSE chunks. Their arrival times are the client's: on this 2-core box
        # AIPerf's own start-up can starve its reader, so the first requests' chunks may come in one read (gaps of 0).
        chunks = aiperf.chunks_parsed(tmp_path / "profile_export.jsonl")
        assert all(n >= OUTPUT_LEN // 2 for n in chunks), f"no token stream: chunks per request {chunks}"
        assert sum(len(r.chunk_times) > 1 for r in records) >= REQUESTS // 2, "AIPerf timed no token stream"
    summary = aiperf.summary_from_export(tmp_path / "profile_export_aiperf.json")
    assert summary["output_token_throughput_avg"] > 0
