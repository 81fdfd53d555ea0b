"""The benchmark's merging of repeated rounds (pure logic)."""

from __future__ import annotations

from bench.run import merge_rounds


def level(name: str, tok_s: float, ttft_p50: float, errors: int = 0) -> dict:
    return {
        "name": name,
        "stream": True,
        "errors": errors,
        "first_error": "boom" if errors else None,
        "output_tokens_per_s": tok_s,
        "ttft_ms": {"p50": ttft_p50, "p99": ttft_p50 * 2},
        "cpu_s": {"frontend": tok_s / 1000},
    }


def test_one_round_is_returned_as_is():
    results = {"ours": {"levels": [level("c1", 100, 10)]}}
    assert merge_rounds([results]) is results


def test_numbers_are_medians_errors_the_most_and_each_rounds_throughput_is_kept():
    rounds = [
        {"ours": {"startup_s": 30, "levels": [level("c1", 100, 10), level("c8", 800, 90)]}},
        {"ours": {"startup_s": 20, "levels": [level("c1", 140, 30, errors=1), level("c8", 600, 70)]}},
        {"ours": {"startup_s": 25, "levels": [level("c1", 120, 20), level("c8", 700, 80)]}},
    ]
    merged = merge_rounds(rounds)["ours"]
    c1, c8 = merged["levels"]
    assert c1["output_tokens_per_s"] == 120
    assert c1["ttft_ms"] == {"p50": 20, "p99": 40}
    assert c1["errors"] == 1 and c1["first_error"] == "boom"
    assert c1["rounds_output_tokens_per_s"] == [100, 140, 120]
    assert c8["output_tokens_per_s"] == 700 and c8["stream"] is True
    assert c8["cpu_s"] == {"frontend": 0.7}
    assert merged["startup_s"] == 25 and merged["rounds_failed"] == 0


def test_even_rounds_average_the_middle_pair_and_failed_rounds_are_counted():
    rounds = [
        {"ours": {"levels": [level("c1", 100, 10)]}, "vllm_serve": {"error": "no start"}},
        {"ours": {"levels": [level("c1", 150, 20)]}, "vllm_serve": {"error": "no start"}},
        {"ours": {"error": "crashed"}},
    ]
    merged = merge_rounds(rounds)
    assert merged["ours"]["levels"][0]["output_tokens_per_s"] == 125
    assert merged["ours"]["rounds_failed"] == 1
    assert merged["vllm_serve"] == {"error": "no start"}
