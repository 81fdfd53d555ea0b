"""Soak test: steady concurrent load on /v1/completions for a while, then a verdict.

Usage: ``python -m tools.soak [--seconds 300] [--concurrency 8] [--base-url URL] [--rss-threshold 10] ...``
(``make soak SOAK_ARGS="--seconds 120"``).

Without ``--base-url`` it starts its own stack (launcher.stack.Stack: the tiny model in .models/tiny, the test
engine arguments without LoRA, free ports, logs in a temporary directory) and stops it at the end. With it, it
drives that (loopback) frontend and finds the stack's processes from the port it listens on.

What runs, with ``--concurrency`` requests always in flight until ``--seconds`` have passed (or
``--max-requests`` were sent):
- greedy, ``ignore_eos`` completions of a few fixed prompts, streamed and not; each output must equal the one
  learnt for its prompt at the start with single requests (text, token count, finish_reason);
- a fraction dropped on purpose by the client (mid-stream, or while waiting for a non-streamed answer);
- a fraction of bad requests (malformed JSON, out-of-range values, unknown model, over-long prompt,
  out-of-vocabulary token ids): each must get a 4xx in OpenAI's error shape.

Meanwhile the RSS of every process of the stack (tritonserver, the Python backend stub, VLLM::EngineCore,
VLLM::Worker, the frontend, ...: the stack's root processes and their descendants, via /proc) is sampled every
``--sample-every`` seconds. Afterwards the engine must be idle again (Triton's vllm:num_requests_* metrics).

Report: a table on stdout and a JSON file (``--json``; default .run/soak/soak-<time>.json): requests by outcome,
p50/p99 latency of the first and last third of the run, RSS per process (first sample, after the warm-up, last;
change in %). Exit code 1 when an accepted request was lost or wrong, a bad request was not refused with a 4xx,
a process of the stack went away, the engine kept requests after the load, or the RSS of any process grew by
more than ``--rss-threshold`` % between the first sample after ``--warmup`` seconds and the last; 2 when the
soak could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.load import percentile
from launcher.model_code import procs
from launcher.triton import free_port
from tools.tiny_stack import BASE_ENGINE_ARGS, PROMPTS, REPO, TINY_MODEL

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}

OK = "ok"
EXPECTED_4XX = "expected_4xx"
DISCONNECTED = "disconnected_on_purpose"
WRONG = "wrong_output"
ERROR = "error:"  # prefix: unexpected error, by type


@dataclass
class SoakConfig:
    seconds: float = 300.0
    concurrency: int = 8
    max_tokens: int = 24
    stream_fraction: float = 0.5  # of the well-formed requests
    disconnect_fraction: float = 0.1
    bad_fraction: float = 0.1
    max_requests: int = 100_000
    request_timeout: float = 120.0
    sample_every: float = 5.0
    warmup: float | None = None  # None: min(30 s, a quarter of the run)
    rss_threshold: float = 10.0  # % growth allowed between the first sample after the warm-up and the last
    seed: int = 0
    api_key: str | None = None

    @property
    def warmup_s(self) -> float:
        return self.warmup if self.warmup is not None else min(30.0, self.seconds / 4)


# ---- the stack's processes, from /proc ----


def descendants(roots: list[int]) -> list[int]:
    """The roots (those still alive) and all their descendants."""
    alive = [pid for pid in roots if procs.stat(pid) is not None]
    return sorted({*alive, *procs.descendants(alive)})


def role_of(pid: int) -> str:
    comm = procs.read(pid, "comm").strip()
    cmd = procs.read(pid, "cmdline").replace("\0", " ").strip()
    if comm == "tritonserver" or cmd.split(" ", 1)[0].endswith("/tritonserver"):
        return "tritonserver"
    if "triton_python_backend_stub" in cmd or comm.startswith("triton_python"):
        return "python_stub"
    if comm.startswith(procs.ENGINE_CORE) or "EngineCore" in cmd:
        return "VLLM::EngineCore"
    if comm.startswith(procs.WORKER) or procs.WORKER in cmd:
        return "VLLM::Worker"
    if re.search(r"-m frontend(\s|$)", cmd):
        return "frontend"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    return comm or "?"


def rss_kib(pid: int) -> int | None:
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", procs.read(pid, "status"), re.MULTILINE)
    return int(match.group(1)) if match else None


def _listener_pid(port: int) -> int | None:
    """The process listening on a local TCP port (our own user's processes only)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in procs.read("net", table).splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in procs.pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    return pid
            except OSError:
                continue
    return None


def discover_roots(base_url: str) -> tuple[list[int], str | None]:
    """For a running stack: the frontend listening on base_url's port, the tritonserver its TRITON_URL names,
    and Triton's metrics URL (from its --metrics-port)."""
    frontend = _listener_pid(urlsplit(base_url).port or 80)
    if frontend is None:
        return [], None
    roots = [frontend]
    cmd = procs.read(frontend, "cmdline").split("\0")
    environ = dict(item.split("=", 1) for item in procs.read(frontend, "environ").split("\0") if "=" in item)
    triton_url = environ.get("TRITON_URL", "localhost:8001")
    if "--triton-url" in cmd and cmd.index("--triton-url") + 1 < len(cmd):
        triton_url = cmd[cmd.index("--triton-url") + 1]
    triton = _listener_pid(int(triton_url.rsplit(":", 1)[1]))
    metrics = None
    if triton is not None:
        roots.append(triton)
        match = re.search(r"--metrics-port=(\d+)", procs.read(triton, "cmdline").replace("\0", " "))
        metrics = f"http://127.0.0.1:{match.group(1)}/metrics" if match else None
    return roots, metrics


class RssSampler(threading.Thread):
    """Samples the RSS of the roots and their descendants every `every` seconds, in the background."""

    def __init__(self, roots: list[int], every: float) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.roots = roots
        self.every = every
        self.labels: dict[int, str] = {}  # pid -> stable label (role, or role#pid for a second of a kind)
        self.samples: list[dict[str, Any]] = []
        self.gone: list[str] = []
        self.started = time.monotonic()
        self._halt = threading.Event()

    def sample(self) -> None:
        alive = descendants(self.roots)
        values = {}
        for pid in alive:
            if pid not in self.labels:
                role = role_of(pid)
                self.labels[pid] = role if role not in self.labels.values() else f"{role}#{pid}"
            rss = rss_kib(pid)
            if rss is not None:
                values[self.labels[pid]] = rss
        for pid, label in self.labels.items():
            if pid not in alive and label not in self.gone:
                self.gone.append(label)
        self.samples.append({"t": round(time.monotonic() - self.started, 1), "rss_kib": values})

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        self.sample()


def rss_summary(samples: list[dict[str, Any]], warmup: float) -> dict[str, dict[str, Any]]:
    """Per process: RSS (MiB) at the first sample, the first after the warm-up, the last; changes in %."""
    summary: dict[str, dict[str, Any]] = {}
    labels = sorted({label for s in samples for label in s["rss_kib"]})
    for label in labels:
        series = [(s["t"], s["rss_kib"][label]) for s in samples if label in s["rss_kib"]]
        after = [value for t, value in series if t >= warmup]
        first, last = series[0][1], series[-1][1]
        base = after[0] if after else last
        summary[label] = {
            "first_mib": round(first / 1024, 1),
            "after_warmup_mib": round(base / 1024, 1),
            "last_mib": round(last / 1024, 1),
            "max_mib": round(max(v for _, v in series) / 1024, 1),
            "growth_after_warmup_pct": round((last - base) / base * 100, 2) if base else 0.0,
            "change_first_to_last_pct": round((last - first) / first * 100, 2) if first else 0.0,
            "samples": len(series),
        }
    return summary


# ---- the load ----


@dataclass
class Record:
    kind: str  # stream / non_stream / disconnect_stream / disconnect_non_stream / bad:<name>
    outcome: str
    started: float  # seconds since the load began
    latency: float
    detail: str = ""


@dataclass
class Load:
    base_url: str
    model: str
    expected: dict[str, str]  # prompt -> greedy output
    config: SoakConfig
    headers: dict[str, str] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    sent: int = 0
    started: float = 0.0  # time.monotonic() when the load began


def bad_requests(model: str) -> list[tuple[str, bytes]]:
    """(name, raw body): each must be refused with a 4xx in OpenAI's error shape."""

    def body(**fields: Any) -> bytes:
        return json.dumps({"model": model, "prompt": "hi", "max_tokens": 4, **fields}).encode()

    return [
        ("truncated_json", b'{"model": "' + model.encode() + b'", "prompt": "hi", "max_tok'),
        ("not_json", b"this is not json"),
        ("json_array", b"[1, 2, 3]"),
        ("temperature_9", body(temperature=9)),
        ("max_tokens_0", body(max_tokens=0)),
        ("max_tokens_negative", body(max_tokens=-3)),
        ("max_tokens_string", body(max_tokens="many")),
        ("n_0", body(n=0)),
        ("top_p_1.5", body(top_p=1.5)),
        ("logprobs_50", body(logprobs=50)),
        ("no_prompt", json.dumps({"model": model, "max_tokens": 4}).encode()),
        ("unknown_model", body(model="no-such-model")),
        ("prompt_too_long", body(prompt="hello " * 3000)),
        ("token_out_of_vocab", body(prompt=[1, 2, 10**7])),
        ("stream_not_bool", body(stream="maybe")),
        ("stop_token_out_of_vocab", body(stop_token_ids=[10**7])),
    ]


def _error_shape_ok(response: httpx.Response) -> bool:
    try:
        payload = response.json()
    except ValueError:
        return False
    return (
        isinstance(payload, dict)
        and set(payload) == {"error"}
        and isinstance(payload["error"], dict)
        and set(payload["error"]) == OPENAI_ERROR_KEYS
        and isinstance(payload["error"]["message"], str)
        and bool(payload["error"]["message"])
    )


def _good_body(load: Load, prompt: str, stream: bool) -> dict[str, Any]:
    return {
        "model": load.model,
        "prompt": prompt,
        "max_tokens": load.config.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }


def _check_choice(load: Load, prompt: str, text: str, tokens: int | None, reason: str | None) -> str | None:
    if text != load.expected[prompt]:
        return f"text differs for {prompt!r}: {text[:60]!r} != {load.expected[prompt][:60]!r}"
    if tokens is not None and tokens != load.config.max_tokens:
        return f"completion_tokens {tokens} != {load.config.max_tokens}"
    if reason != "length":
        return f"finish_reason {reason!r}"
    return None


async def _non_stream(client: httpx.AsyncClient, load: Load, prompt: str) -> tuple[str, str]:
    response = await client.post(f"{load.base_url}/v1/completions", json=_good_body(load, prompt, False))
    if response.status_code != 200:
        return f"{ERROR}http_{response.status_code}", response.text[:200]
    data = response.json()
    choice = data["choices"][0]
    problem = _check_choice(load, prompt, choice["text"], data["usage"]["completion_tokens"], choice["finish_reason"])
    return (WRONG, problem) if problem else (OK, "")


async def _stream(client: httpx.AsyncClient, load: Load, prompt: str, drop_after: int | None = None) -> tuple[str, str]:
    """A streamed completion; with drop_after, the client goes away after that many events."""
    body = {**_good_body(load, prompt, True), "stream_options": {"include_usage": True}}
    text, reason, tokens, events, done = "", None, None, 0, False
    async with client.stream("POST", f"{load.base_url}/v1/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return f"{ERROR}http_{response.status_code}", response.text[:200]
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                done = True
                break
            payload = json.loads(data)
            if "error" in payload:
                return f"{ERROR}stream_error_event", data[:200]
            for choice in payload.get("choices", []):
                text += choice.get("text") or ""
                reason = choice.get("finish_reason") or reason
            if payload.get("usage"):
                tokens = payload["usage"]["completion_tokens"]
            events += 1
            if drop_after is not None and events >= drop_after:
                return DISCONNECTED, ""  # leaving the block closes the connection mid-stream
    if not done:
        return f"{ERROR}stream_without_done", text[-60:]
    problem = _check_choice(load, prompt, text, tokens, reason)
    return (WRONG, problem) if problem else (OK, "")


async def _bad(client: httpx.AsyncClient, load: Load, raw: bytes) -> tuple[str, str]:
    response = await client.post(
        f"{load.base_url}/v1/completions", content=raw, headers={"Content-Type": "application/json"}
    )
    if 400 <= response.status_code < 500:
        if _error_shape_ok(response):
            return EXPECTED_4XX, ""
        return f"{ERROR}4xx_without_openai_error_shape", response.text[:200]
    return f"{ERROR}bad_request_got_{response.status_code}", response.text[:200]


async def _one(client: httpx.AsyncClient, load: Load, rng: random.Random, bad: list[tuple[str, bytes]]) -> None:
    config = load.config
    prompt = rng.choice(PROMPTS)
    draw = rng.random()
    if draw < config.bad_fraction:
        name, raw = rng.choice(bad)
        kind, work = f"bad:{name}", _bad(client, load, raw)
    elif draw < config.bad_fraction + config.disconnect_fraction:
        if rng.random() < 0.5:
            kind, work = "disconnect_stream", _stream(client, load, prompt, drop_after=rng.randint(1, 3))
        else:
            kind, work = "disconnect_non_stream", None
    elif rng.random() < config.stream_fraction:
        kind, work = "stream", _stream(client, load, prompt)
    else:
        kind, work = "non_stream", _non_stream(client, load, prompt)
    started = time.monotonic()
    try:
        if work is None:
            # Give up on a non-streamed request after a random short wait (the connection is closed).
            task = asyncio.ensure_future(_non_stream(client, load, prompt))
            await asyncio.wait({task}, timeout=rng.uniform(0.05, 0.5))
            if task.done():
                outcome, detail = task.result()
            else:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                outcome, detail = DISCONNECTED, ""
        else:
            outcome, detail = await asyncio.wait_for(work, timeout=config.request_timeout)
    except TimeoutError:
        outcome, detail = f"{ERROR}timeout", ""
    except httpx.HTTPError as exc:
        outcome, detail = f"{ERROR}{type(exc).__name__}", str(exc)[:200]
    except Exception as exc:  # noqa: BLE001 - every failure is a counted outcome
        outcome, detail = f"{ERROR}{type(exc).__name__}", str(exc)[:200]
    load.records.append(Record(kind, outcome, started - load.started, time.monotonic() - started, detail))


async def _drive(load: Load) -> float:
    """Keep `concurrency` requests in flight until the time or the request budget is spent."""
    config = load.config
    bad = bad_requests(load.model)
    load.started = time.monotonic()
    deadline = load.started + config.seconds
    limits = httpx.Limits(max_connections=config.concurrency * 2, max_keepalive_connections=config.concurrency)
    timeout = httpx.Timeout(config.request_timeout, connect=10)

    async def worker(index: int) -> None:
        rng = random.Random(config.seed * 1000 + index)
        async with httpx.AsyncClient(headers=load.headers, limits=limits, timeout=timeout) as client:
            while time.monotonic() < deadline and load.sent < config.max_requests:
                load.sent += 1
                await _one(client, load, rng, bad)

    await asyncio.gather(*(worker(i) for i in range(config.concurrency)))
    return time.monotonic() - load.started


def learn_expected(base_url: str, model: str, config: SoakConfig, headers: dict[str, str]) -> dict[str, str]:
    """Each prompt's greedy output, from one request at a time (no batching)."""
    expected = {}
    with httpx.Client(headers=headers, timeout=config.request_timeout) as client:
        for prompt in PROMPTS:
            body = {
                "model": model,
                "prompt": prompt,
                "max_tokens": config.max_tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            response = client.post(f"{base_url}/v1/completions", json=body)
            response.raise_for_status()
            data = response.json()
            if data["usage"]["completion_tokens"] != config.max_tokens:
                raise RuntimeError(f"learning {prompt!r}: {data['usage']}")
            expected[prompt] = data["choices"][0]["text"]
    return expected


def engine_idle(metrics_url: str | None, timeout: float = 20.0) -> dict[str, Any]:
    """Wait for vllm:num_requests_running + waiting to fall to 0 on Triton's metrics port."""
    if not metrics_url:
        return {"checked": False}
    deadline = time.monotonic() + timeout
    counts: dict[str, float] = {}
    while True:
        try:
            text = httpx.get(metrics_url, timeout=10).text
        except httpx.HTTPError as exc:
            return {"checked": False, "error": str(exc)}
        for name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
            values = re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.MULTILINE)
            counts[name] = sum(float(v) for v in values)
        if sum(counts.values()) == 0 or time.monotonic() > deadline:
            return {"checked": True, "idle": sum(counts.values()) == 0, **counts}
        time.sleep(0.5)


def latency_summary(records: list[Record], duration: float) -> dict[str, Any]:
    """p50/p99 of the complete, correct requests started in the first and in the last third of the run."""
    summary = {}
    for kind in ("all", "stream", "non_stream"):
        ok = [r for r in records if r.outcome == OK and (kind == "all" or r.kind == kind)]
        thirds = {
            "first_third": [r.latency for r in ok if r.started < duration / 3],
            "last_third": [r.latency for r in ok if r.started >= 2 * duration / 3],
        }
        entry: dict[str, Any] = {}
        for name, values in thirds.items():
            entry[name] = {
                "count": len(values),
                "p50_s": _round(percentile(values, 50) if values else None),
                "p99_s": _round(percentile(values, 99) if values else None),
            }
        for q in ("p50_s", "p99_s"):
            first, last = entry["first_third"][q], entry["last_third"][q]
            entry[f"{q[:3]}_drift_pct"] = round((last - first) / first * 100, 1) if first and last else None
        summary[kind] = entry
    return summary


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def run_soak(
    base_url: str,
    config: SoakConfig,
    root_pids: list[int] | None = None,
    triton_metrics_url: str | None = None,
    check_rss: list[str] | None = None,
) -> dict[str, Any]:
    """Run the load against a running frontend and return the report (see `verdict` for pass/fail).

    root_pids: the stack's root processes (their descendants are found); None: found from base_url's port.
    check_rss: the process labels whose RSS growth is judged (None: all).
    """
    host = urlsplit(base_url).hostname or ""
    if host not in LOOPBACK:
        raise ValueError(f"the soak only drives a loopback frontend, not {host!r}")
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    if root_pids is None:
        root_pids, found_metrics = discover_roots(base_url)
        triton_metrics_url = triton_metrics_url or found_metrics
    with httpx.Client(headers=headers, timeout=30) as client:
        model = client.get(f"{base_url}/v1/models").raise_for_status().json()["data"][0]["id"]
    expected = learn_expected(base_url, model, config, headers)
    load = Load(base_url=base_url, model=model, expected=expected, config=config, headers=headers)
    sampler = RssSampler(root_pids, config.sample_every) if root_pids else None
    if sampler:
        sampler.start()
    try:
        duration = asyncio.run(_drive(load))
    finally:
        if sampler:
            sampler.stop()
    idle = engine_idle(triton_metrics_url)

    outcomes: dict[str, int] = {}
    for record in load.records:
        outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
    by_kind: dict[str, dict[str, int]] = {}
    for record in load.records:
        kind = "bad" if record.kind.startswith("bad:") else record.kind
        by_kind.setdefault(kind, {}).setdefault(record.outcome, 0)
        by_kind[kind][record.outcome] += 1
    bad_sent = sum(1 for r in load.records if r.kind.startswith("bad:"))
    unexpected = [asdict(r) for r in load.records if r.outcome == WRONG or r.outcome.startswith(ERROR)]
    rss = rss_summary(sampler.samples, config.warmup_s) if sampler else {}
    report = {
        "config": {**asdict(config), "api_key": bool(config.api_key), "warmup_s": config.warmup_s},
        "base_url": base_url,
        "model": model,
        "duration_s": round(duration, 1),
        "requests": len(load.records),
        "requests_per_s": round(len(load.records) / duration, 2) if duration else None,
        "outcomes": dict(sorted(outcomes.items())),
        "by_kind": by_kind,
        "bad_sent": bad_sent,
        "bad_refused_4xx": outcomes.get(EXPECTED_4XX, 0),
        "lost_or_wrong": sum(1 for r in load.records if r.outcome == WRONG or r.outcome.startswith(ERROR)),
        "unexpected_examples": unexpected[:20],
        "latency": latency_summary(load.records, duration),
        "rss": rss,
        "rss_checked": check_rss if check_rss is not None else sorted(rss),
        "rss_samples": sampler.samples if sampler else [],
        "processes_gone": sampler.gone if sampler else [],
        "engine_after_load": idle,
    }
    report["failures"] = verdict(report)
    return report


def verdict(report: dict[str, Any]) -> list[str]:
    """Why the soak failed; empty when it passed."""
    failures = []
    if report["lost_or_wrong"]:
        failures.append(f"{report['lost_or_wrong']} request(s) lost, wrong or with an unexpected error")
    if report["bad_refused_4xx"] != report["bad_sent"]:
        failures.append(f"only {report['bad_refused_4xx']} of {report['bad_sent']} bad requests got a 4xx")
    if report["processes_gone"]:
        failures.append(f"processes went away: {report['processes_gone']}")
    engine = report["engine_after_load"]
    if engine.get("checked") and not engine.get("idle"):
        failures.append(f"the engine still had requests after the load: {engine}")
    threshold = report["config"]["rss_threshold"]
    for label in report["rss_checked"]:
        entry = report["rss"].get(label)
        if entry and entry["growth_after_warmup_pct"] > threshold:
            failures.append(
                f"RSS of {label} grew {entry['growth_after_warmup_pct']}% after the warm-up (> {threshold}%)"
            )
    if not report["rss"]:
        failures.append("no RSS samples: the stack's processes were not found")
    return failures


def format_report(report: dict[str, Any]) -> str:
    config = report["config"]
    lines = [
        f"soak: {report['duration_s']} s at concurrency {config['concurrency']}, {report['requests']} requests "
        f"({report['requests_per_s']}/s), model {report['model']!r} at {report['base_url']}",
        "",
        f"{'outcome':<42}{'count':>8}",
    ]
    for outcome, count in report["outcomes"].items():
        lines.append(f"  {outcome:<40}{count:>8}")
    lines.append(f"  {'(of which bad requests sent)':<40}{report['bad_sent']:>8}")
    lines.append("by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(report["by_kind"].items())))
    lines += [
        "",
        f"{'latency of ok requests (s)':<28}{'first third p50/p99':>26}{'last third p50/p99':>26}{'drift':>18}",
    ]
    for kind, entry in report["latency"].items():
        first, last = entry["first_third"], entry["last_third"]
        first_text = f"{_fmt(first['p50_s'])} / {_fmt(first['p99_s'])} (n={first['count']})"
        last_text = f"{_fmt(last['p50_s'])} / {_fmt(last['p99_s'])} (n={last['count']})"
        drift = f"{_pct(entry['p50_drift_pct'])} / {_pct(entry['p99_drift_pct'])}"
        lines.append(f"  {kind:<26}{first_text:>26}{last_text:>26}{drift:>18}")
    lines += [
        "",
        f"{'RSS (MiB)':<24}{'first':>9}{'after warm-up':>15}{'last':>9}{'max':>9}"
        f"{'warm-up→last':>14}{'first→last':>12}",
    ]
    for label, entry in report["rss"].items():
        checked = "" if label in report["rss_checked"] else "  (not judged)"
        lines.append(
            f"  {label:<22}{entry['first_mib']:>9}{entry['after_warmup_mib']:>15}{entry['last_mib']:>9}"
            f"{entry['max_mib']:>9}{_pct(entry['growth_after_warmup_pct']):>14}"
            f"{_pct(entry['change_first_to_last_pct']):>12}{checked}"
        )
    warmup, every, threshold = config["warmup_s"], config["sample_every"], config["rss_threshold"]
    lines.append(f"  (baseline after a {warmup} s warm-up, sampled every {every} s, threshold {threshold}%)")
    engine = report["engine_after_load"]
    lines.append("")
    lines.append(
        f"engine idle after the load: {engine.get('idle')}" if engine.get("checked") else "engine idle: not checked"
    )
    for example in report["unexpected_examples"][:10]:
        lines.append(f"  unexpected: {example['kind']} -> {example['outcome']} {example['detail']}")
    lines.append("verdict: " + ("PASS" if not report["failures"] else "FAIL: " + "; ".join(report["failures"])))
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


# ---- its own stack ----


def start_stack(log_dir: Path, api_key: str | None = None):
    """The tiny model's stack on free ports (built first if missing), as the integration tests run it."""
    from launcher.stack import Stack, StackConfig
    from launcher.triton import TritonPorts

    if not (TINY_MODEL / "model.safetensors").exists():
        subprocess.run([sys.executable, "-m", "tools.build_tiny_model", "--out", str(TINY_MODEL)], cwd=REPO, check=True)
    stack = Stack(
        StackConfig(
            model=str(TINY_MODEL),
            port=free_port(),
            triton_ports=TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port()),
            api_key=api_key,
            engine_args=BASE_ENGINE_ARGS,
            run_dir=log_dir / "run",
            log_dir=log_dir,
            ready_timeout=900,
        )
    )
    stack.start()
    return stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long the load runs (default 300)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--base-url", help="a running loopback frontend; default: start our own stack")
    parser.add_argument("--api-key", help="Bearer key for --base-url (default: API_KEY)", default=None)
    parser.add_argument("--rss-threshold", type=float, default=10.0, help="max RSS growth %% after warm-up")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the RSS baseline (30)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling period, seconds")
    parser.add_argument("--max-tokens", type=int, default=24, help="tokens per completion (default 24)")
    parser.add_argument("--disconnect-fraction", type=float, default=0.1)
    parser.add_argument("--bad-fraction", type=float, default=0.1)
    parser.add_argument("--stream-fraction", type=float, default=0.5)
    parser.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="report file (default .run/soak/soak-<time>.json)")
    args = parser.parse_args(argv)

    config = SoakConfig(
        seconds=args.seconds,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        stream_fraction=args.stream_fraction,
        disconnect_fraction=args.disconnect_fraction,
        bad_fraction=args.bad_fraction,
        max_requests=args.max_requests,
        sample_every=args.sample_every,
        warmup=args.warmup,
        rss_threshold=args.rss_threshold,
        seed=args.seed,
        api_key=args.api_key or (os.environ.get("API_KEY") if args.base_url else None),
    )
    stack = None
    try:
        if args.base_url:
            base_url, roots, metrics = args.base_url.rstrip("/"), None, None
        else:
            log_dir = Path(tempfile.mkdtemp(prefix="soak-"))
            print(f"==> starting the tiny model's stack (logs in {log_dir})", flush=True)
            stack = start_stack(log_dir)
            base_url = stack.base_url
            roots = [stack.triton.process.pid, stack.frontend.process.pid]
            metrics = f"http://127.0.0.1:{stack.config.triton_ports.metrics}/metrics"
        print(f"==> soaking {base_url} for {config.seconds:.0f} s at concurrency {config.concurrency}", flush=True)
        report = run_soak(base_url, config, root_pids=roots, triton_metrics_url=metrics)
    except (OSError, RuntimeError, ValueError, TimeoutError, httpx.HTTPError) as exc:
        print(f"soak could not run: {exc}", file=sys.stderr)
        return 2
    finally:
        if stack is not None:
            stack.stop()
    path = args.json or REPO / ".run" / "soak" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(format_report(report))
    print(f"report: {path}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
