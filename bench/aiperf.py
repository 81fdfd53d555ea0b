"""NVIDIA AIPerf as a second, independent load generator: `python -m bench.run --tool aiperf`.

AIPerf (`pip install aiperf`) is what many users will measure us with, so the bench runs it unchanged, as a user
would: `aiperf profile --endpoint-type completions --streaming ...` against the server's URL, one `aiperf` process
per window of load. Its pins (pillow, psutil, pyzmq, prometheus-client ...) clash with vLLM's, so it lives in a
virtual environment of its own, `.venv-aiperf` (`scripts/setup_aiperf.sh`, ~2-3 min, made on first use).

What comes back is AIPerf's own measurement: its per-request records (`profile_export.jsonl`: request start, TTFT,
gaps between chunks, end, server-reported token counts) become the bench's `RequestRecord`s, and the window's wall
time is AIPerf's `benchmark_duration`, so the table and ratios are computed from AIPerf's clock the same way as from
the built-in generator's. AIPerf's own headline numbers are kept beside them (`rounds_tool_summary` per level) to
check that reading. Prompts are AIPerf's synthetic text (`--isl` tokens, stddev 0), seeded per window so windows
do not share prefixes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.load import Level, RequestRecord, Window
from bench.systems import REPO

AIPERF_VERSION = "0.13.0"
VENV = REPO / ".venv-aiperf"
SETUP_SCRIPT = REPO / "scripts" / "setup_aiperf.sh"
BINARY = VENV / "bin" / "aiperf"
# Headline numbers of AIPerf's summary (profile_export_aiperf.json) kept per window: (metric, stat).
SUMMARY_FIELDS = (
    ("output_token_throughput", "avg"),
    ("request_throughput", "avg"),
    ("time_to_first_token", "p50"),
    ("inter_token_latency", "p50"),
    ("request_latency", "p50"),
    ("benchmark_duration", "avg"),
)


def ensure_installed() -> Path:
    """The `aiperf` executable, installing `.venv-aiperf` first if it is missing."""
    subprocess.run(["bash", str(SETUP_SCRIPT)], check=True)  # returns at once when it is installed
    return BINARY


def aiperf_environment() -> dict[str, str]:
    """The bench's environment minus HF_HUB_OFFLINE: with it set, AIPerf 0.13 reads a local tokenizer directory as
    a hub id and fails. The tokenizer is a local path, so nothing is downloaded either way."""
    env = dict(os.environ)
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    return env


def profile_command(
    base_url: str,
    model: str,
    tokenizer: str,
    level: Level,
    requests: int,
    input_len: int,
    output_len: int,
    seed: int,
    artifact_dir: Path,
    request_timeout_s: float,
    endpoint_type: str = "completions",
) -> list[str]:
    """`aiperf profile` (`endpoint_type` completions or chat) for one closed-loop window: `level.concurrency`
    users, `requests` requests, greedy, `ignore_eos`, exactly `output_len` tokens each (server-reported counts, as
    the built-in generator uses)."""
    command = [
        str(BINARY),
        "profile",
        "--model",
        model,
        "--url",
        base_url,
        "--endpoint-type",
        endpoint_type,
        "--concurrency",
        str(level.concurrency),
        "--request-count",
        str(requests),
        "--isl",
        str(input_len),
        "--isl-stddev",
        "0",
        "--osl",
        str(output_len),
        "--osl-stddev",
        "0",
        "--extra-inputs",
        "ignore_eos:true",
        "--extra-inputs",
        "temperature:0",
        "--use-server-token-count",
        "--tokenizer",
        tokenizer,
        "--random-seed",
        str(seed),
        "--request-timeout-seconds",
        str(int(request_timeout_s)),
        "--artifact-dir",
        str(artifact_dir),
        "--export-level",
        "records",
        "--no-server-metrics",
        "--ui-type",
        "none",
    ]
    if level.stream:
        command.append("--streaming")
    return command


def _value(metrics: dict[str, Any], name: str) -> Any:
    entry = metrics.get(name)
    return entry["value"] if isinstance(entry, dict) else None


def _profiling_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON lines of `profile_export.jsonl` that belong to the profiling phase (warm-up dropped)."""
    for line in path.read_text().splitlines():
        if line.strip():
            data = json.loads(line)
            if data.get("metadata", {}).get("benchmark_phase", "profiling") == "profiling":
                yield data


def chunks_parsed(path: Path) -> list[int]:
    """Per profiled request, how many content chunks AIPerf parsed: its inter-chunk gaps + 1, gaps of 0 ms (chunks
    timed in one network read) included."""
    return [len(_value(data.get("metrics", {}), "inter_chunk_latency") or []) + 1 for data in _profiling_entries(path)]


def records_from_export(path: Path) -> list[RequestRecord]:
    """AIPerf's per-request records of the profiling phase (warm-up records dropped) as `RequestRecord`s, in
    seconds on AIPerf's clock: start, first chunk at TTFT, later chunks by AIPerf's inter-chunk gaps, end at the
    request latency; output tokens as the server reported them."""
    records = []
    for data in _profiling_entries(path):
        meta, metrics = data.get("metadata", {}), data.get("metrics", {})
        start = meta["request_start_ns"] / 1e9
        error = data.get("error")
        if error:
            message = (error.get("message") or error.get("type") or str(error)) if isinstance(error, dict) else error
            end = meta.get("request_end_ns", meta["request_start_ns"]) / 1e9
            records.append(RequestRecord(start=start, end=end, error=f"aiperf: {message}"[:500]))
            continue

        latency_ms = _value(metrics, "request_latency")
        end = start + latency_ms / 1e3 if latency_ms is not None else meta["request_end_ns"] / 1e9
        chunk_times: list[float] = []
        ttft_ms = _value(metrics, "time_to_first_token")
        if ttft_ms is not None:
            chunk_times.append(start + ttft_ms / 1e3)
            for gap_ms in _value(metrics, "inter_chunk_latency") or []:
                if gap_ms > 0:  # AIPerf's first gap is 0 (the first chunk itself); zero gaps: one network read
                    chunk_times.append(chunk_times[-1] + gap_ms / 1e3)
        tokens = _value(metrics, "usage_completion_tokens")
        if tokens is None:
            tokens = _value(metrics, "output_token_count") or 0
        records.append(RequestRecord(start=start, end=end, chunk_times=chunk_times, output_tokens=int(tokens)))
    return records


def summary_from_export(path: Path) -> dict[str, Any]:
    """AIPerf's own headline numbers for the window (its units: tokens/s, requests/s, ms, s)."""
    data = json.loads(path.read_text())
    out: dict[str, Any] = {}
    for metric, stat in SUMMARY_FIELDS:
        entry = data.get(metric)
        if isinstance(entry, dict) and entry.get(stat) is not None:
            out[f"{metric}_{stat}"] = round(float(entry[stat]), 3)
    return out


class AiperfCompletions:
    """Runs windows of load on one OpenAI server (`/v1/completions`) with the `aiperf` CLI."""

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer: str,
        input_len: int,
        output_len: int,
        work_dir: Path,
        request_timeout_s: float,
        seed: int = 0,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.tokenizer = tokenizer
        self.input_len = input_len
        self.output_len = output_len
        self.work_dir = work_dir
        self.request_timeout_s = request_timeout_s
        self.seed = seed
        self.windows = 0

    async def aclose(self) -> None:
        """Nothing stays open between windows (one `aiperf` process per window)."""

    async def window(self, level: Level, requests: int, timeout_s: float) -> Window:
        """One window: run `aiperf profile`, then read its exports. Raises with the tail of its log if it fails."""
        self.windows += 1
        artifacts = self.work_dir / f"{level.name}-{self.windows:02d}"
        artifacts.mkdir(parents=True, exist_ok=True)
        command = profile_command(
            self.base_url,
            self.model,
            self.tokenizer,
            level,
            requests,
            self.input_len,
            self.output_len,
            self.seed * 1000 + self.windows,
            artifacts,
            self.request_timeout_s,
        )
        log_path = artifacts / "aiperf.out"
        with log_path.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=out, stderr=subprocess.STDOUT, env=aiperf_environment(), start_new_session=True
            )
            try:
                code = await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                process.kill()
                await process.wait()
                raise RuntimeError(f"aiperf ran past {timeout_s:.0f} s (log: {log_path})") from None
        records_path, summary_path = artifacts / "profile_export.jsonl", artifacts / "profile_export_aiperf.json"
        if code != 0 or not records_path.exists() or not summary_path.exists():
            tail = log_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"aiperf exited {code} (log: {log_path}):\n{tail}")
        summary = summary_from_export(summary_path)
        records = records_from_export(records_path)
        duration = summary.get("benchmark_duration_avg") or _span(records)
        return Window(records, duration, {}, tool_summary=summary)


def _span(records: list[RequestRecord]) -> float:
    """First start to last end, when AIPerf's summary has no duration."""
    return max(r.end for r in records) - min(r.start for r in records) if records else 0.0
