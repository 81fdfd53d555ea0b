"""The benchmark's pooling of windows of load and its paired ratios (pure logic)."""

from __future__ import annotations

import json

from bench.load import Level, RequestRecord, Window, summarize_windows
from bench.run import compare, schedule

LEVEL = Level("c2", 2, 2)


def record(start: float, ttft: float, tokens: int, step: float, error: str | None = None) -> RequestRecord:
    chunks = [start + ttft + i * step for i in range(tokens)]
    return RequestRecord(start, chunks[-1], chunks, tokens, error)


def test_a_window_survives_the_trip_through_json():
    window = Window([record(1.0, 0.1, 3, 0.01), record(2.0, 0.2, 2, 0.02, error="boom")], 4.0, {"Worker": 1.5})
    back = Window.from_dict(json.loads(json.dumps(window.to_dict())))
    assert back == window


def test_windows_are_pooled_and_each_windows_throughput_is_kept():
    fast = Window([record(0, 0.010, 4, 0.001), record(0, 0.020, 4, 0.001)], 1.0, {"Worker": 0.5, "frontend": 0.25})
    slow = Window([record(0, 0.030, 4, 0.002), record(0, 0.040, 4, 0.002)], 4.0, {"Worker": 2.0, "frontend": 0.5})
    result = summarize_windows([fast, slow], LEVEL, output_len=4)
    assert result["rounds_output_tokens_per_s"] == [8.0, 2.0]
    assert result["output_tokens"] == 16 and result["duration_s"] == 5.0
    assert result["output_tokens_per_s"] == 3.2  # pooled: all tokens over all wall time, not the mean of 8 and 2
    assert result["ttft_ms"]["p50"] == 25.0 and result["ttft_ms"]["n"] == 4
    assert result["cpu_s"] == {"Worker": 2.5, "frontend": 0.75}
    assert result["cpu_cores_busy"] == round(3.25 / 5.0, 2)


def test_failed_requests_count_against_the_window_they_failed_in():
    window = Window([record(0, 0.01, 4, 0.001), record(0, 0.01, 4, 0.001, error="HTTP 500")], 2.0)
    result = summarize_windows([window], LEVEL, output_len=4)
    assert result["errors"] == 1 and result["first_error"] == "HTTP 500"
    assert result["rounds_output_tokens_per_s"] == [2.0]


def level(tok_s: float, rounds: list[float], ttft: float) -> dict:
    return {
        "name": "c8",
        "output_tokens_per_s": tok_s,
        "requests_per_s": tok_s / 64,
        "rounds_output_tokens_per_s": rounds,
        "ttft_ms": {"p50": ttft, "p99": ttft * 2},
    }


def test_ratios_pair_the_windows_measured_side_by_side():
    results = {
        "ours": {"levels": [level(900, [1000, 800], 30)]},
        "vllm_serve": {"levels": [level(1000, [1250, 800], 20)]},
    }
    entry = compare(results, "ours", "vllm_serve")["c8"]
    assert entry["output_tokens_per_s_ratio"] == 0.9
    assert entry["output_tokens_per_s_ratio_rounds"] == [0.8, 1.0]
    assert entry["ttft_p50_diff_ms"] == 10 and entry["ttft_p99_diff_ms"] == 20


def test_no_paired_ratios_without_matching_windows():
    results = {
        "ours": {"levels": [level(900, [900], 30)]},
        "vllm_serve": {"levels": [level(1000, [1000], 20)]},
    }
    assert "output_tokens_per_s_ratio_rounds" not in compare(results, "ours", "vllm_serve")["c8"]


def test_schedule_alternates_systems_and_keeps_non_streaming_beside_streaming():
    c1, c8, c8n = Level("c1", 1, 4), Level("c8", 8, 8), Level("c8-nonstream", 8, 8, stream=False)
    order = [(index, level.name, name) for index, level, name in schedule([c1, c8, c8n], ["a", "b"], rounds=2)]
    assert order == [
        (0, "c1", "a"), (0, "c1", "b"), (1, "c1", "b"), (1, "c1", "a"),
        (0, "c8", "a"), (0, "c8-nonstream", "a"), (0, "c8", "b"), (0, "c8-nonstream", "b"),
        (1, "c8-nonstream", "b"), (1, "c8", "b"), (1, "c8-nonstream", "a"), (1, "c8", "a"),
    ]  # fmt: skip


def test_a_non_streaming_level_without_its_streaming_twin_is_a_level_of_its_own():
    lone = Level("c4-nonstream", 4, 8, stream=False)
    assert [(i, lv.name, n) for i, lv, n in schedule([lone], ["a"], rounds=1)] == [(0, "c4-nonstream", "a")]


def test_percentile_interpolates_between_ranks():
    from bench.load import percentile

    assert percentile([3.0], 99) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0) == 1.0 and percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 99) == 99.0
