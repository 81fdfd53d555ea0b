"""A one-minute soak of the session's stack (tools/soak.py): steady concurrent streamed and non-streamed
completions with random client disconnects and bad requests, while the RSS of every process is sampled.

Asserts: no accepted request lost or wrong, every bad request refused with an OpenAI-shaped 4xx, the engine idle
afterwards, no process of the stack gone, and the RSS of the frontend and of the Triton-side processes
(tritonserver, the Python stub, VLLM::EngineCore, VLLM::Worker) within RSS_THRESHOLD_PCT between the first
sample after the warm-up and the last. Run with `-s` to see the report table.
"""

from __future__ import annotations

from tools.soak import SoakConfig, format_report, run_soak

SECONDS = 60
RSS_THRESHOLD_PCT = 15.0
JUDGED = ("frontend", "tritonserver", "python_stub", "VLLM::EngineCore", "VLLM::Worker")


def test_soak_one_minute(stack, base_url):
    config = SoakConfig(
        seconds=SECONDS,
        concurrency=6,
        max_tokens=24,
        disconnect_fraction=0.1,
        bad_fraction=0.1,
        sample_every=3.0,
        warmup=15.0,
        rss_threshold=RSS_THRESHOLD_PCT,
        seed=1,
    )
    report = run_soak(
        base_url,
        config,
        root_pids=[stack.triton.process.pid, stack.frontend.process.pid],
        triton_metrics_url=f"http://127.0.0.1:{stack.config.triton_ports.metrics}/metrics",
        check_rss=list(JUDGED),
    )
    text = format_report(report)
    print("\n" + text)

    outcomes = report["outcomes"]
    assert outcomes.get("ok", 0) > 0, text
    assert report["lost_or_wrong"] == 0, text
    assert report["bad_sent"] > 0 and report["bad_refused_4xx"] == report["bad_sent"], text
    assert outcomes.get("disconnected_on_purpose", 0) > 0, text
    assert report["engine_after_load"] == {
        "checked": True,
        "idle": True,
        "vllm:num_requests_running": 0.0,
        "vllm:num_requests_waiting": 0.0,
    }, text
    assert not report["processes_gone"], text
    assert set(JUDGED) <= set(report["rss"]), f"not every process of the stack was found: {sorted(report['rss'])}"
    for label in JUDGED:
        growth = report["rss"][label]["growth_after_warmup_pct"]
        assert growth <= RSS_THRESHOLD_PCT, f"RSS of {label} grew {growth}%\n{text}"
    assert not report["failures"], text
