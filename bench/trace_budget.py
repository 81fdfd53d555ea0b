"""`python -m bench.trace_budget`: where each streamed token's time goes, hop by hop, through our stack.

`run` starts our stack (as the bench does) with TVO_TRACE=1, sends closed-loop streaming requests (seeded random
token-id prompts, greedy, ignore_eos) from a client that stamps every SSE event it reads, stops the stack (the
model's stub and the frontend write their trace rings on exit: model_repository/vllm_model/1/tracing.py,
frontend/tracing.py) and prints the budget. `report DIR` prints it again from a run's files.

With `--placement ab` the model's own EngineCore placement is off (COLOCATE_ENGINE_CORE never) and the windows
cycle through `--conditions` (default free,placed): a free EngineCore, one moved onto its worker's cores (what
`auto` does under load), or a free one at the lowest CPU priority (`niced`: nice 19, so that the serving processes
woken per token preempt its busy-polling), so they are compared within minutes of each other.

Every stamp is CLOCK_MONOTONIC (time.monotonic_ns; vLLM's EngineCore stamps its step outputs with time.monotonic()),
so the processes' stamps are comparable. Hops of response r of a request (engine output k, the last one it carries):

  engine    EngineCore made output k (end of its step)      loop      model.py's `async for` got it (AsyncLLM)
  queued    handed to the Responder's queue                 dequeued  the Responder thread took it
  build     tensors being built                             send      sender.send() called
  sent      sender.send() returned                          read      frontend's grpc.aio read returned it
  parsed    tensors decoded                                 rendered  SSE event bytes made (tally, pydantic, JSON)
  written   uvicorn came back for the next event            client    the client read the event
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.cpu import CpuProbe
from bench.load import Workload
from bench.systems import REPO, colocate_engine_core
from launcher.model_code import procs
from launcher.stack import Stack, StackConfig
from launcher.triton import TritonPorts, free_port
from tools.tiny_stack import BASE_ENGINE_ARGS

HOPS = ("engine", "loop", "queued", "dequeued", "build", "send", "sent", "read", "parsed", "rendered", "written")
# (label, from hop, to hop): the per-response budget, in path order, then the totals.
SEGMENTS = (
    ("EngineCore step out -> model loop (ZMQ, AsyncLLM detokenize, queue)", "engine", "loop"),
    ("model loop: fold + Responder queue put", "loop", "queued"),
    ("Responder queue -> thread wake", "queued", "dequeued"),
    ("Responder merge/deliver", "dequeued", "build"),
    ("build_response (numpy, pb_utils.Tensor)", "build", "send"),
    ("sender.send() call (stub -> Triton IPC)", "send", "sent"),
    ("send() -> frontend read (Triton core, gRPC)", "send", "read"),
    ("frontend parse_chunk", "read", "parsed"),
    ("tally + render + SSE bytes", "parsed", "rendered"),
    ("uvicorn write (back for the next event)", "rendered", "written"),
    ("SSE -> client read", "rendered", "client"),
    ("TOTAL EngineCore step out -> client", "engine", "client"),
    ("  of which in the stub (engine -> send() returned)", "engine", "sent"),
    ("  of which Triton+gRPC+frontend (send -> client)", "send", "client"),
)


def log(message: str) -> None:
    print(f"==> [trace {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- run ----


def model_repository(run_dir: Path, placement: str | None) -> Path:
    """The repository as it is, or a copy whose config.pbtxt sets COLOCATE_ENGINE_CORE."""
    if placement is None:
        return REPO / "model_repository"
    copy = run_dir / "model_repository"
    shutil.copytree(REPO / "model_repository", copy, ignore=shutil.ignore_patterns("__pycache__"))
    config = copy / "vllm_model" / "config.pbtxt"
    config.write_text(
        config.read_text()
        + f'\nparameters: {{\n  key: "COLOCATE_ENGINE_CORE"\n  value: {{ string_value: "{placement}" }}\n}}\n'
    )
    return copy


async def one_request(client, url: str, model: str, prompt: list[int], output_len: int, events: list) -> None:
    body = {
        "model": model,
        "prompt": prompt,
        "stream": True,
        "max_tokens": output_len,
        "temperature": 0,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    index = 0
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            now = time.monotonic_ns()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("choices"):  # the frontend stamps every event with choices ("rendered")
                events.append((data["id"], index, "client", now, None))
                index += 1


async def closed_loop(base_url: str, model: str, prompts: list[list[int]], concurrency: int, output_len: int):
    import httpx

    events: list = []
    queue = list(prompts)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=300) as client:
        url = f"{base_url}/v1/completions"

        async def worker() -> None:
            while queue:
                await one_request(client, url, model, queue.pop(), output_len, events)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return events, time.perf_counter() - started


def run(args: argparse.Namespace) -> Path:
    run_dir = Path(args.dir or REPO / ".run" / "trace" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    trace_dir = run_dir / "trace"
    trace_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TVO_TRACE"] = "1"
    os.environ["TVO_TRACE_DIR"] = str(trace_dir)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    engine_args = {**BASE_ENGINE_ARGS, "max_num_seqs": max(32, args.concurrency)}
    for item in args.engine_arg:
        key, _, value = item.partition("=")
        engine_args[key] = json.loads(value) if value[:1] in "0123456789[{tf" else value
    placement = "never" if args.placement == "ab" else args.placement
    stack = Stack(
        StackConfig(
            model=str(Path(args.model).resolve()),
            port=free_port(),
            triton_ports=TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port()),
            engine_args=engine_args,
            model_repository=model_repository(run_dir, placement),
            run_dir=run_dir,
            log_dir=run_dir,
            ready_timeout=600,
        )
    )
    model = os.path.basename(os.path.normpath(args.model))
    vocab = json.loads((Path(args.model) / "config.json").read_text()).get("vocab_size", 1000)
    workload = Workload(args.input_len, args.output_len, args.seed, vocab, [], 0, [])
    windows: list[dict[str, Any]] = []
    stack.start()
    try:
        groups = {"triton (other)": stack.triton.process.pid, "frontend": stack.frontend.process.pid}
        root = stack.triton.process.pid
        asyncio.run(closed_loop(stack.base_url, model, workload.prompts("warmup", 3), 1, args.output_len))
        for number in range(args.windows):
            conditions = args.conditions.split(",")
            condition = conditions[number % len(conditions)] if args.placement == "ab" else args.placement or "auto"
            if args.placement == "ab":
                place(root, condition)
            time.sleep(1.5)  # vLLM's processes busy-poll for about a second after their last step
            prompts = workload.prompts(f"window{number}", args.requests)
            probe = CpuProbe(groups, self_label="client")
            before = probe.snapshot()
            start_ns = time.monotonic_ns()
            events, wall = asyncio.run(closed_loop(stack.base_url, model, prompts, args.concurrency, args.output_len))
            cpu = CpuProbe.diff(before, probe.snapshot())
            tokens = args.requests * args.output_len
            windows.append(
                {
                    "window": number,
                    "condition": condition,
                    "start_ns": start_ns,
                    "end_ns": time.monotonic_ns(),
                    "wall_s": wall,
                    "tokens": tokens,
                    "tok_s": tokens / wall,
                    "cpu_ms_per_token": {role: round(1000 * s / tokens, 3) for role, s in cpu.items()},
                }
            )
            with open(trace_dir / "client.jsonl", "a", encoding="utf-8") as file:
                for event in events:
                    file.write(json.dumps(event) + "\n")
            log(f"window {number} ({condition}): {tokens / wall:.0f} tok/s")
    finally:
        stack.stop()
    (run_dir / "windows.json").write_text(json.dumps(windows, indent=1))
    return run_dir


def place(root: int, condition: str) -> None:
    """free / placed / niced: where the EngineCore below `root` runs, and at which priority."""
    found = procs.engine_processes(root)
    if condition == "placed":
        colocate_engine_core(root)
    else:
        procs.set_affinity(found.engine_cores, os.sched_getaffinity(0))
    nice = 19 if condition == "niced" else 0
    for pid in found.engine_cores:
        for tid in procs.threads(pid):
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            except OSError:
                continue


# ---- report ----


def load_events(trace_dir: Path) -> list[tuple]:
    events = []
    for path in sorted(trace_dir.glob("*.jsonl")):
        with open(path, encoding="utf-8") as file:
            events += [tuple(json.loads(line)) for line in file if line.strip()]
    return events


def responses(events: list[tuple]) -> list[dict[str, int]]:
    """One dict per response the client read: hop -> monotonic ns (engine/loop/queued/dequeued from output k)."""
    by_output: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)
    by_response: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)
    last_output: dict[tuple[str, int], int] = {}
    rendered: dict[str, list[tuple[int, tuple[str, int]]]] = defaultdict(list)  # completion id -> responses
    client: dict[tuple[str, int], int] = {}
    for key, index, hop, t_ns, extra in events:
        if hop in ("engine", "loop", "queued", "dequeued"):
            by_output[(key, index)][hop] = t_ns
        elif hop == "client":
            client[(key, index)] = t_ns
        else:
            by_response[(key, index)][hop] = t_ns
            if hop == "build":
                last_output[(key, index)] = extra
            elif hop == "rendered":
                rendered[extra].append((t_ns, (key, index)))
    for completion, items in rendered.items():
        for position, (_, response_key) in enumerate(sorted(items)):
            t_client = client.get((completion, position))
            if t_client is not None:
                by_response[response_key]["client"] = t_client
    rows = []
    for (key, index), hops in by_response.items():
        output = last_output.get((key, index))
        if output is None:
            continue
        row = {**by_output.get((key, output), {}), **hops, "_index": index, "_key": key}
        rows.append(row)
    return rows


def table(rows: list[dict[str, int]], title: str) -> str:
    later = [r for r in rows if r["_index"] > 0]  # the first response is the TTFT path: reported apart
    lines = [f"{title}: {len(later)} responses after the first ({len(rows)} in all)", ""]
    lines.append("| hop | p50 ms | p90 ms | n |")
    lines.append("|---|---|---|---|")
    for label, start, end in SEGMENTS:
        values = sorted((r[end] - r[start]) / 1e6 for r in later if start in r and end in r)
        if values:
            p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
            lines.append(f"| {label} | {statistics.median(values):.3f} | {p90:.3f} | {len(values)} |")
    # Intervals between consecutive responses of a request, per hop: the engine's own pace vs what reaches clients.
    streams: dict[str, list[dict[str, int]]] = defaultdict(list)
    for r in rows:
        streams[r["_key"]].append(r)
    for hop in ("engine", "sent", "client"):
        gaps = []
        for items in streams.values():
            items.sort(key=lambda r: r["_index"])
            gaps += [
                (b[hop] - a[hop]) / 1e6 for a, b in zip(items[1:], items[2:], strict=False) if hop in a and hop in b
            ]
        if gaps:
            lines.append(
                f"| interval between responses at '{hop}' (per token at c1) | {statistics.median(gaps):.3f} "
                f"| {sorted(gaps)[int(0.9 * len(gaps))]:.3f} | {len(gaps)} |"
            )
    return "\n".join(lines)


def report(run_dir: Path) -> str:
    events = load_events(run_dir / "trace")
    windows_path = run_dir / "windows.json"
    windows = json.loads(windows_path.read_text()) if windows_path.exists() else []
    out = []
    rows = responses(events)
    conditions = sorted({w["condition"] for w in windows}) or ["all"]
    for condition in conditions:
        spans = [(w["start_ns"], w["end_ns"]) for w in windows if w["condition"] == condition]
        chosen = [r for r in rows if not spans or any(a <= r.get("loop", 0) <= b for a, b in spans)]
        out.append(table(chosen, f"## {condition}"))
        for w in windows:
            if w["condition"] == condition:
                cpu = ", ".join(f"{k} {v}" for k, v in w["cpu_ms_per_token"].items())
                out.append(f"window {w['window']}: {w['tok_s']:.0f} tok/s; CPU ms per token: {cpu}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_budget", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="start the stack traced, run load, stop it, print the budget")
    run_parser.add_argument("--model", default=".models/tiny")
    run_parser.add_argument("--dir", default=None, help="run directory (default .run/trace/<time>)")
    run_parser.add_argument("--concurrency", type=int, default=1)
    run_parser.add_argument("--requests", type=int, default=16, help="requests per window (default 16)")
    run_parser.add_argument("--windows", type=int, default=2)
    run_parser.add_argument("--input-len", type=int, default=64)
    run_parser.add_argument("--output-len", type=int, default=64)
    run_parser.add_argument("--seed", type=int, default=0)
    run_parser.add_argument(
        "--placement",
        choices=("auto", "always", "never", "ab"),
        default=None,
        help="COLOCATE_ENGINE_CORE for the run (default: config.pbtxt's); ab: free and placed windows alternate",
    )
    run_parser.add_argument("--conditions", default="free,placed", help="with --placement ab: free, placed, niced")
    run_parser.add_argument("--engine-arg", action="append", default=[], help="extra engine argument key=value")
    report_parser = sub.add_parser("report", help="print the budget of a run directory")
    report_parser.add_argument("dir")
    args = parser.parse_args(argv)
    run_dir = run(args) if args.command == "run" else Path(args.dir)
    print(report(run_dir))


if __name__ == "__main__":
    main()
