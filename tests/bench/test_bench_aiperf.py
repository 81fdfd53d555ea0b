"""AIPerf's exports read into the bench's records, and the command the bench runs (no AIPerf needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import aiperf
from bench.load import Level, Window, summarize_windows


def _record(phase: str, start_ns: int, ttft_ms: float, gaps_ms: list[float], latency_ms: float, tokens: int) -> dict:
    metrics = {
        "time_to_first_token": {"value": ttft_ms, "unit": "ms"},
        "inter_chunk_latency": {"value": gaps_ms, "unit": "ms"},
        "request_latency": {"value": latency_ms, "unit": "ms"},
        "usage_completion_tokens": {"value": tokens, "unit": "tokens"},
        "output_token_count": {"value": tokens + 3, "unit": "tokens"},  # client re-tokenization differs
    }
    meta = {"benchmark_phase": phase, "request_start_ns": start_ns, "request_end_ns": start_ns + int(latency_ms * 1e6)}
    return {"metadata": meta, "metrics": metrics, "error": None}


def test_records_keep_profiling_phase_and_aiperf_timings(tmp_path: Path) -> None:
    lines = [
        _record("warmup", 1_000_000_000, 50.0, [0.0, 10.0], 70.0, 3),
        _record("profiling", 2_000_000_000, 20.0, [0.0, 5.0, 0.0, 7.0], 40.0, 4),
        {
            "metadata": {
                "benchmark_phase": "profiling",
                "request_start_ns": 3_000_000_000,
                "request_end_ns": 3_100_000_000,
            },
            "metrics": {},
            "error": {"code": 500, "type": "HTTPError", "message": "boom"},
        },
    ]
    path = tmp_path / "profile_export.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    records = aiperf.records_from_export(path)
    assert len(records) == 2  # warm-up dropped
    ok, failed = records
    assert ok.error is None and ok.output_tokens == 4  # the server's count, not the client's
    assert ok.start == pytest.approx(2.0)
    assert ok.ttft == pytest.approx(0.020)
    # first chunk at TTFT, then one chunk per positive gap (zero gaps: chunks of one network read)
    assert [t - ok.start for t in ok.chunk_times] == pytest.approx([0.020, 0.025, 0.032])
    assert ok.end - ok.start == pytest.approx(0.040)
    assert failed.error is not None and "boom" in failed.error

    summary = summarize_windows([Window(records, 1.0)], Level("c1", 1, 2), output_len=4)
    assert summary["completed"] == 1 and summary["errors"] == 1
    assert summary["ttft_ms"]["p50"] == pytest.approx(20.0)
    assert summary["tpot_ms"]["p50"] == pytest.approx((40.0 - 20.0) / 3, abs=1e-3)


def test_summary_reads_headline_numbers(tmp_path: Path) -> None:
    path = tmp_path / "profile_export_aiperf.json"
    path.write_text(
        json.dumps(
            {
                "output_token_throughput": {"unit": "tokens/sec", "avg": 250.57},
                "time_to_first_token": {"unit": "ms", "avg": 80.5, "p50": 70.77},
                "benchmark_duration": {"unit": "sec", "avg": 2.26},
                "request_count": {"unit": "requests", "avg": 16},
            }
        )
    )
    summary = aiperf.summary_from_export(path)
    assert summary == {
        "output_token_throughput_avg": 250.57,
        "time_to_first_token_p50": 70.77,
        "benchmark_duration_avg": 2.26,
    }


def test_profile_command_is_a_plain_user_invocation(tmp_path: Path) -> None:
    command = aiperf.profile_command(
        "http://127.0.0.1:9", "tiny", "/models/tiny", Level("c8", 8, 96), 96, 128, 64, 7, tmp_path, 120
    )
    assert command[:2] == [str(aiperf.BINARY), "profile"]
    pairs = dict(zip(command[2::1], command[3::1], strict=False))
    assert pairs["--concurrency"] == "8" and pairs["--request-count"] == "96"
    assert pairs["--isl"] == "128" and pairs["--osl"] == "64" and pairs["--random-seed"] == "7"
    assert pairs["--endpoint-type"] == "completions"
    assert "--streaming" in command and "--use-server-token-count" in command
    nonstream = aiperf.profile_command(
        "http://x", "m", "t", Level("c8-nonstream", 8, 96, stream=False), 96, 128, 64, 7, tmp_path, 120
    )
    assert "--streaming" not in nonstream


def test_environment_drops_hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE" not in aiperf.aiperf_environment()
