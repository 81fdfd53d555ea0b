"""The one load generator and its statistics, shared by every system (the raw-engine driver imports it too).

A system is measured through a `Send`: an async function that runs one generation for a prompt (token ids) and
fills in a `RequestRecord` (arrival time of every chunk that carried new text, output tokens). Everything else is
here, once: the seeded workload, the closed loop, windows of load with their CPU accounting, and the statistics
(requests/s, output tokens/s, TTFT, inter-token latency, time per output token, end-to-end latency).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.cpu import OTHERS, CpuProbe


@dataclass
class RequestRecord:
    """What one request saw; times are `time.perf_counter()` seconds."""

    start: float
    end: float = 0.0
    chunk_times: list[float] = field(default_factory=list)  # arrival of each chunk with new text
    output_tokens: int = 0
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.start if self.chunk_times else None


# send(prompt_token_ids, record): run one request to its end, appending chunk times and counting output tokens.
Send = Callable[[list[int], RequestRecord], Awaitable[None]]
# make_send(stream) -> Send
MakeSend = Callable[[bool], Send]


@dataclass
class Level:
    """One closed-loop measurement: `concurrency` clients, each sending its next request when the last ends."""

    name: str
    concurrency: int
    requests: int
    stream: bool = True


@dataclass
class Workload:
    """The same for every system: seeded random token-id prompts, fixed output length, greedy, ignore_eos."""

    input_len: int
    output_len: int
    seed: int
    vocab_size: int
    special_ids: list[int]
    warmup: int
    levels: list[Level]
    request_timeout_s: float = 120.0
    level_timeout_s: float = 600.0

    def prompts(self, tag: str, count: int) -> list[list[int]]:
        """`count` prompts of `input_len` ids for this tag; distinct tags never share a prefix (no cache hits)."""
        rng = random.Random(f"{self.seed}:{tag}")  # str seeds are hashed deterministically across processes
        special = set(self.special_ids)
        pool = [i for i in range(self.vocab_size) if i not in special]
        return [[rng.choice(pool) for _ in range(self.input_len)] for _ in range(count)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        levels = [Level(**level) for level in data["levels"]]
        return cls(**{**data, "levels": levels})


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution_ms(values_s: list[float]) -> dict[str, float] | None:
    """p50/p90/p99/mean in milliseconds, or None without samples."""
    if not values_s:
        return None
    ms = [v * 1000 for v in values_s]
    return {
        "p50": round(percentile(ms, 50), 3),
        "p90": round(percentile(ms, 90), 3),
        "p99": round(percentile(ms, 99), 3),
        "mean": round(sum(ms) / len(ms), 3),
        "n": len(ms),
    }


async def run_closed_loop(
    send: Send, prompts: list[list[int]], concurrency: int, request_timeout: float, level_timeout: float
) -> tuple[list[RequestRecord], float]:
    """Run every prompt with `concurrency` clients in a closed loop; return the records and the wall time."""
    records: list[RequestRecord | None] = [None] * len(prompts)
    next_index = 0

    async def one(index: int) -> None:
        record = RequestRecord(start=time.perf_counter())
        records[index] = record
        try:
            await asyncio.wait_for(send(prompts[index], record), request_timeout)
        except TimeoutError:
            record.error = f"timeout after {request_timeout:.0f} s"
        except Exception as exc:  # noqa: BLE001 - a failed request is a result, not a crash
            record.error = f"{type(exc).__name__}: {exc}"[:500]
        record.end = time.perf_counter()

    async def client() -> None:
        nonlocal next_index
        while next_index < len(prompts):
            index = next_index
            next_index += 1
            await one(index)

    started = time.perf_counter()
    tasks = [asyncio.create_task(client()) for _ in range(min(concurrency, len(prompts)))]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), level_timeout)
    except TimeoutError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    duration = time.perf_counter() - started
    now = time.perf_counter()
    done: list[RequestRecord] = []
    for record in records:
        if record is None:
            record = RequestRecord(start=now, end=now, error=f"not run: level timeout after {level_timeout:.0f} s")
        elif record.end == 0.0:
            record.end, record.error = now, f"cut off: level timeout after {level_timeout:.0f} s"
        done.append(record)
    return done, duration


def summarize(records: list[RequestRecord], duration: float, level: Level, output_len: int) -> dict[str, Any]:
    """Throughput and latency statistics of one level (failed requests count against throughput)."""
    ok = [r for r in records if r.error is None]
    errors = [r.error for r in records if r.error is not None]
    tokens = sum(r.output_tokens for r in ok)
    ttft = [r.ttft for r in ok if r.ttft is not None]
    # Gaps between chunks that carried new text; with one token per engine step this is the inter-token latency.
    itl = [b - a for r in ok for a, b in zip(r.chunk_times, r.chunk_times[1:], strict=False)]
    tpot = [(r.end - r.chunk_times[0]) / (r.output_tokens - 1) for r in ok if r.chunk_times and r.output_tokens > 1]
    chunks = [len(r.chunk_times) for r in ok]
    return {
        "name": level.name,
        "concurrency": level.concurrency,
        "stream": level.stream,
        "requests": len(records),
        "completed": len(ok),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wrong_token_count": sum(1 for r in ok if r.output_tokens != output_len),
        "duration_s": round(duration, 3),
        "output_tokens": tokens,
        "requests_per_s": round(len(ok) / duration, 3) if duration > 0 else 0.0,
        "output_tokens_per_s": round(tokens / duration, 1) if duration > 0 else 0.0,
        "ttft_ms": distribution_ms(ttft),
        "itl_ms": distribution_ms(itl),
        "tpot_ms": distribution_ms(tpot),
        "e2e_ms": distribution_ms([r.end - r.start for r in ok]),
        "text_chunks_per_request": round(sum(chunks) / len(chunks), 2) if chunks and level.stream else None,
    }


@dataclass
class Window:
    """One stretch of closed-loop load on one system: its records, wall time and CPU seconds per process role."""

    records: list[RequestRecord]
    duration: float
    cpu_s: dict[str, float] = field(default_factory=dict)
    tool_summary: dict[str, Any] | None = None  # an external load generator's own headline numbers (AIPerf)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": [[r.start, r.end, r.chunk_times, r.output_tokens, r.error] for r in self.records],
            "duration": self.duration,
            "cpu_s": self.cpu_s,
            "tool_summary": self.tool_summary,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        records = [RequestRecord(*fields) for fields in data["records"]]
        return cls(records, data["duration"], data["cpu_s"], data.get("tool_summary"))

    @property
    def output_tokens_per_s(self) -> float:
        """Tokens of the requests that succeeded, over the window's wall time."""
        tokens = sum(r.output_tokens for r in self.records if r.error is None)
        return round(tokens / self.duration, 1) if self.duration > 0 else 0.0


async def run_window(
    send: Send, prompts: list[list[int]], concurrency: int, workload: Workload, cpu: CpuProbe | None = None
) -> Window:
    """The closed loop over `prompts`, with the CPU seconds each process role used meanwhile."""
    before = cpu.snapshot() if cpu else {}
    records, duration = await run_closed_loop(
        send, prompts, concurrency, workload.request_timeout_s, workload.level_timeout_s
    )
    return Window(records, duration, CpuProbe.diff(before, cpu.snapshot()) if cpu else {})


def summarize_windows(windows: list[Window], level: Level, output_len: int) -> dict[str, Any]:
    """One level's statistics over all its windows: records pooled, wall times and CPU seconds added up, and each
    window's throughput kept (`rounds_output_tokens_per_s`) so the spread stays visible."""
    records = [record for window in windows for record in window.records]
    duration = sum(window.duration for window in windows)
    result = summarize(records, duration, level, output_len)
    cpu: dict[str, float] = {}
    for window in windows:
        for role, seconds in window.cpu_s.items():
            cpu[role] = round(cpu.get(role, 0.0) + seconds, 2)
    if cpu and duration > 0:
        result["cpu_s"] = cpu
        result["cpu_cores_busy"] = round(sum(s for role, s in cpu.items() if role != OTHERS) / duration, 2)
        result["other_cores_busy"] = round(cpu.get(OTHERS, 0.0) / duration, 2)
    result["rounds_output_tokens_per_s"] = [window.output_tokens_per_s for window in windows]
    if any(window.tool_summary for window in windows):
        result["rounds_tool_summary"] = [window.tool_summary for window in windows]
    return result
