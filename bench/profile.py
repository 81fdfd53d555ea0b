"""`python -m bench.profile`: where our serving processes spend their CPU under the benchmark's load.

Starts our stack as the benchmark does, warms it up, then runs one closed-loop level (streaming, through the
frontend, or straight to Triton with `--grpc`) while `py-spy` samples the stub (model.py + AsyncLLM client) and the
frontend. Prints, per process, the functions with the most samples (own and inclusive) and the CPU seconds every
role used; the collapsed stacks are kept under `.run/profile/<time>/` (open them with any flame-graph tool).
Needs `py-spy` (`pip install py-spy`) and permission to trace (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.clients import HttpCompletions, TritonGrpc
from bench.cpu import CpuProbe
from bench.load import Level, run_closed_loop, summarize
from bench.run import BASE_ENGINE_ARGS, REPO, bench_environment, build_workload, get_json
from bench.systems import OurStack
from launcher.model_code import procs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=".models/tiny")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--grpc", action="store_true", help="drive Triton's gRPC endpoint instead of the frontend")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--engine-arg", action="append", default=[], metavar="KEY=JSON", help="extra engine argument")
    parser.add_argument("--pin", default="", help="experiment: comm-prefix=cores;... e.g. 'VLLM::=0;*=1'")
    parser.add_argument("--no-spy", action="store_true", help="measure CPU seconds only (no sampling overhead)")
    parser.add_argument("--top", type=int, default=25, help="functions listed per process")
    parser.add_argument("--kv-cache-gib", default="2")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    return parser.parse_args(argv)


def pids_by_comm(pgid: int) -> dict[str, int]:
    return {process.comm: process.pid for process in procs.processes() if process.pgrp == pgid}


def py_spy() -> str | None:
    """py-spy beside this interpreter (a venv's bin/) or on PATH."""
    return shutil.which("py-spy", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))


def start_py_spy(pid: int, out: Path, rate: int) -> subprocess.Popen:
    command = [py_spy() or "py-spy", "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--threads"]
    command += ["--nonblocking", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_py_spy(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err.decode(errors="replace")[-500:]


def pin(spec: str, pgids: list[int]) -> None:
    """Experiment: pin every thread of the processes in `pgids` by process name prefix ('*' for the rest)."""
    rules = [
        (prefix, {int(c) for c in cores.split(",")}) for prefix, _, cores in (r.partition("=") for r in spec.split(";"))
    ]
    for process in procs.processes():
        if process.pgrp not in pgids:
            continue
        cores = next((c for prefix, c in rules if prefix == "*" or process.comm.startswith(prefix)), None)
        if cores is None:
            continue
        procs.set_affinity([process.pid], cores)
        print(f"pinned {process.comm} ({process.pid}) to {sorted(cores)}")


def summarize_stacks(path: Path, top: int) -> str:
    """Own and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        own[frames[-1]] += count
        for frame in set(frames[1:]):
            inclusive[frame] += count
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; by thread: " + ", ".join(f"{t} {c / total:.0%}" for t, c in threads.most_common(6))]
    lines.append(f"  {'own':>6} {'incl':>6}  function")
    for frame, count in own.most_common(top):
        lines.append(f"  {count / total:6.1%} {inclusive[frame] / total:6.1%}  {frame[:140]}")
    lines.append("  -- inclusive --")
    for frame, count in inclusive.most_common(top):
        lines.append(f"  {own[frame] / total:6.1%} {count / total:6.1%}  {frame[:140]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.no_spy and py_spy() is None:
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    model_dir = (REPO / args.model).resolve()
    os.environ.update(bench_environment(args.kv_cache_gib))
    engine_args = {**BASE_ENGINE_ARGS, "max_num_seqs": max(BASE_ENGINE_ARGS["max_num_seqs"], args.concurrency)}
    for item in args.engine_arg:
        key, _, raw = item.partition("=")
        engine_args[key] = json.loads(raw)
    bench_args = argparse.Namespace(
        input_len=args.input_len,
        output_len=args.output_len,
        seed=0,
        warmup=0,
        levels=[args.concurrency],
        requests=args.requests,
        quick=False,
        no_nonstream=True,
        request_timeout=120.0,
    )
    workload = build_workload(bench_args, model_dir)
    work = REPO / ".run" / "profile" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    stack = OurStack(str(model_dir), engine_args, work / "stack", args.ready_timeout)
    stack.start()
    try:
        return asyncio.run(_profile(stack, args, workload, work))
    finally:
        stack.stop()


async def _profile(stack: OurStack, args: argparse.Namespace, workload, work: Path) -> int:
    if args.grpc:
        client = TritonGrpc(stack.grpc_url, args.output_len)
    else:
        model = get_json(f"{stack.base_url}/v1/models")["data"][0]["id"]
        client = HttpCompletions(stack.base_url, model, args.output_len, args.concurrency + 4)
    try:
        send = client.make_send(True)
        await run_closed_loop(send, workload.prompts("warmup", 8), 4, 120, 300)
        groups = stack.pgids()
        if args.pin:
            pin(args.pin, list(groups.values()))
        targets = {"stub": pids_by_comm(groups["triton (other)"]).get("triton_python_b")}
        if not args.grpc:
            targets["frontend"] = stack.stack.frontend.process.pid
        spies = (
            {}
            if args.no_spy
            else {name: start_py_spy(pid, work / f"{name}.txt", args.rate) for name, pid in targets.items() if pid}
        )
        probe = CpuProbe(groups, self_label="load generator")
        before = probe.snapshot()
        level = Level(f"c{args.concurrency}", args.concurrency, args.requests)
        records, duration = await run_closed_loop(
            send, workload.prompts("profile", args.requests), level.concurrency, 120, 600
        )
        used = CpuProbe.diff(before, probe.snapshot())
        errors = {name: stop_py_spy(process) for name, process in spies.items()}
    finally:
        await client.aclose()
    result = summarize(records, duration, level, args.output_len)
    ttft, itl = result["ttft_ms"], result["itl_ms"]
    print(
        f"\n{level.name} via {'Triton gRPC' if args.grpc else 'frontend'}: {result['output_tokens_per_s']:.0f} tok/s, "
        f"TTFT p50 {ttft['p50']:.1f} ms, ITL p50/p99 {itl['p50']:.2f}/{itl['p99']:.1f} ms, "
        f"chunks/request {result['text_chunks_per_request']}, {duration:.1f} s"
    )
    tokens = max(1, sum(r.output_tokens for r in records))
    print("CPU seconds (per 1000 output tokens):")
    for role, seconds in used.items():
        print(f"  {role:<36} {seconds:7.2f}  ({seconds * 1000 / tokens:.3f})")
    for name in spies:
        print(f"\n== {name} ({work / (name + '.txt')}) ==")
        path = work / f"{name}.txt"
        print(summarize_stacks(path, args.top) if path.exists() else f"  py-spy failed: {errors[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
