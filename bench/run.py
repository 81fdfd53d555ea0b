"""`python -m bench.run [--quick]`: our stack side by side with `vllm serve` and the raw engine, in one run.

One system measured at a time, same machine, model, engine settings and workload (seeded random token-id prompts,
greedy, ignore_eos, fixed output length, streaming, closed-loop concurrency levels). By default every system is
started first and the windows of load alternate between them (forward, then reverse order), so the machine's speed
drift hits all systems alike; `--schedule sequential` starts, measures and stops one system after another.

1. raw_engine   vLLM AsyncLLM in-process, no HTTP (the ceiling; bench/raw_engine.py in a subprocess)
2. vllm_serve   vLLM's own OpenAI server, /v1/completions
3. ours         our frontend /v1/completions -> Triton gRPC -> model.py -> AsyncLLM (launcher.stack.Stack)
4. triton_grpc  the same running Triton, gRPC streaming straight to vllm_model (no frontend)

Systems 2 and 3 are driven by the same HTTP load generator (bench/clients.py). With `--tool aiperf` (or `both`)
they are also driven by NVIDIA's AIPerf, unchanged, as users run it (bench/aiperf.py): `vllm_serve_aiperf` and
`ours_aiperf`, in the same interleaved schedule. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import aiperf
from bench.clients import HttpCompletions, TritonGrpc
from bench.cpu import CpuProbe, machine_busy_seconds
from bench.load import Level, Window, Workload, run_window, summarize_windows
from bench.systems import REPO, OurStack, RawEngine, VllmServe, colocate_engine_core, get_json
from tools.tiny_stack import BASE_ENGINE_ARGS  # the tests' engine without LoRA

BUILTIN_SYSTEMS = ("raw_engine", "raw_engine_colocated", "vllm_serve", "vllm_serve_colocated", "ours", "triton_grpc")
AIPERF_SYSTEMS = ("vllm_serve_aiperf", "ours_aiperf")  # the same two servers, load from AIPerf
SYSTEMS = BUILTIN_SYSTEMS + AIPERF_SYSTEMS
TOOL_SYSTEMS = {"builtin": BUILTIN_SYSTEMS, "aiperf": AIPERF_SYSTEMS, "both": SYSTEMS}
LABELS = {
    "raw_engine": "raw engine (AsyncLLM)",
    "raw_engine_colocated": "raw engine (core placed)",
    "vllm_serve": "vllm serve (HTTP)",
    "vllm_serve_colocated": "vllm serve (core placed)",
    "ours": "ours: frontend (HTTP)",
    "triton_grpc": "ours: Triton gRPC direct",
    "vllm_serve_aiperf": "vllm serve (AIPerf)",
    "ours_aiperf": "ours: frontend (AIPerf)",
}
LOADGEN_LABEL = "bench load generator"
NOISY_CORES = 0.2  # other people's work above this many cores during a level: flagged as noisy


def log(message: str) -> None:
    print(f"==> [bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="levels 1,8 with fewer requests (~5 min on 2 cores)")
    parser.add_argument("--out", default="bench/results.json", help="JSON results (default: bench/results.json)")
    parser.add_argument("--model", default=".models/tiny", help="local model directory (default: .models/tiny)")
    parser.add_argument("--levels", default=None, help="concurrency levels (default 1,8,16,32; quick: 1,8)")
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per level (default max(12c,32); quick max(4c,16))"
    )
    parser.add_argument("--input-len", type=int, default=128, help="prompt length in tokens (default 128)")
    parser.add_argument("--output-len", type=int, default=64, help="generated tokens per request (default 64)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests per system (default 4; quick 3)")
    parser.add_argument("--seed", type=int, default=0, help="prompt seed (default 0)")
    parser.add_argument(
        "--tool",
        choices=tuple(TOOL_SYSTEMS),
        default="builtin",
        help="load generator: builtin (default; bench/clients.py), aiperf (NVIDIA AIPerf against vllm serve and ours; "
        "installs .venv-aiperf on first use) or both",
    )
    parser.add_argument("--systems", default=None, help=f"subset of {','.join(SYSTEMS)} (default: the tool's)")
    parser.add_argument(
        "--no-nonstream", action="store_true", help="skip the non-streaming run at the top level (for the 5%% check)"
    )
    parser.add_argument(
        "--schedule",
        choices=("interleaved", "sequential"),
        default="interleaved",
        help="interleaved (default): every system up at once, one measured at a time, windows alternating between "
        "systems (the machine's drift hits all alike); sequential: start, measure, stop one system after another",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="windows per level and system, in forward then reverse order of the systems (default 3; quick 2)",
    )
    parser.add_argument("--kv-cache-gib", default="1", help="VLLM_CPU_KVCACHE_SPACE for every system (default 1)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60,
        help="before each system, wait up to this many seconds for other work on the machine to stop (0: don't)",
    )
    parser.add_argument("--ready-timeout", type=float, default=300, help="seconds for a server to become ready")
    parser.add_argument("--request-timeout", type=float, default=120, help="seconds for one request")
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in (args.levels or ("1,8" if args.quick else "1,8,16,32")).split(",") if x.strip()]
    chosen = args.systems.split(",") if args.systems else TOOL_SYSTEMS[args.tool]
    args.systems = [s.strip() for s in chosen if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if args.warmup is None:
        args.warmup = 3 if args.quick else 4
    if args.rounds is None:
        args.rounds = 2 if args.quick else 3
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def requests_for(concurrency: int, args: argparse.Namespace) -> int:
    if args.requests:
        return args.requests
    return max(4 * concurrency, 16) if args.quick else max(12 * concurrency, 32)


def build_workload(args: argparse.Namespace, model_dir: Path) -> Workload:
    """Levels and prompt vocabulary (every id the tokenizer knows, minus its special tokens)."""
    config = json.loads((model_dir / "config.json").read_text())
    vocab_size = int(config["vocab_size"])
    special: list[int] = []
    tokenizer_file = model_dir / "tokenizer.json"
    if tokenizer_file.exists():
        tokenizer = json.loads(tokenizer_file.read_text())
        special = [int(t["id"]) for t in tokenizer.get("added_tokens", [])]
        vocab_size = min(vocab_size, len(tokenizer["model"]["vocab"]) + len(special))
    levels = [Level(f"c{c}", c, requests_for(c, args)) for c in args.levels]
    if not args.no_nonstream:
        top = max(args.levels)
        levels.append(Level(f"c{top}-nonstream", top, requests_for(top, args), stream=False))
    return Workload(
        input_len=args.input_len,
        output_len=args.output_len,
        seed=args.seed,
        vocab_size=vocab_size,
        special_ids=special,
        warmup=args.warmup,
        levels=levels,
        request_timeout_s=args.request_timeout,
        level_timeout_s=max(300.0, args.request_timeout * 3),
    )


def bench_environment(kv_cache_gib: str) -> dict[str, str]:
    """The same engine environment for every system (the launcher's defaults where it has them)."""
    env = {
        "VLLM_CPU_KVCACHE_SPACE": kv_cache_gib,
        "VLLM_NO_USAGE_STATS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env["VLLM_CACHE_ROOT"] = os.environ.get("VLLM_CACHE_ROOT", str(REPO / ".cache" / "vllm"))
    env["TORCHINDUCTOR_CACHE_DIR"] = os.environ.get("TORCHINDUCTOR_CACHE_DIR", str(REPO / ".cache" / "inductor"))
    return env


def machine_info() -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    total = meminfo_gib("MemTotal")
    mem_gib = round(total, 1) if total is not None else None
    return {
        "cpu_model": cpu_model,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": mem_gib,
        "kernel": platform.release(),
    }


def package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "vllm": package_version("vllm", "vllm-cpu"),
        "vllm_distribution": "vllm-cpu" if package_version("vllm-cpu") else "vllm",
        "torch": package_version("torch"),
        "tritonserver": None,  # asked from the running server
        "nvidia_pytriton": package_version("nvidia-pytriton"),
        "tritonclient": package_version("tritonclient"),
        "grpcio": package_version("grpcio"),
        "httpx": package_version("httpx"),
        "fastapi": package_version("fastapi"),
        "uvicorn": package_version("uvicorn"),
    }


def wait_for_quiet(max_wait: float, threshold: float = NOISY_CORES, window: float = 3.0) -> float | None:
    """Wait up to `max_wait` s until the machine is nearly idle (before measuring); return the busy cores."""
    if max_wait <= 0:
        return None
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy_seconds()
        time.sleep(window)
        busy = (machine_busy_seconds() - before) / window
        if busy < threshold or time.monotonic() >= deadline:
            if busy >= threshold:
                log(f"machine still busy ({busy:.2f} cores used by others) after {max_wait:.0f} s; going on")
            return round(busy, 2)
        log(f"machine busy ({busy:.2f} cores used by others); waiting for it to calm down")


def timed(step: Callable[[], Any]) -> float:
    started = time.monotonic()
    step()
    return round(time.monotonic() - started, 1)


def meminfo_gib(key: str) -> float | None:
    """One /proc/meminfo field (e.g. MemTotal, MemAvailable) in GiB, or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


# Systems started together (ours and triton_grpc share one running stack), in their order in the table.
BLOCKS = (
    ("raw_engine",),
    ("raw_engine_colocated",),
    ("vllm_serve", "vllm_serve_aiperf"),
    ("vllm_serve_colocated",),
    ("ours", "triton_grpc", "ours_aiperf"),
)
MIN_FREE_GIB = 3.0  # a system (engine, KV cache, processes) takes ~2.4 GiB with the tiny model and 1 GiB of KV cache


@dataclass
class Block:
    """The processes of one or two systems (ours and triton_grpc share a stack) and what their start reported."""

    names: tuple[str, ...]
    server: Any
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Target:
    """One measured system: a window of load on it, given a level and prompts."""

    name: str
    run: Callable[[Level, list[list[int]]], Awaitable[Window]]
    info: dict[str, Any]


def start_block(names: tuple[str, ...], args: argparse.Namespace, model: str, engine_args, workload, work) -> Block:
    """Start the processes of one block and wait until they serve (a failure is recorded, not raised)."""
    first = names[0]
    available = meminfo_gib("MemAvailable")
    if available is not None and available < MIN_FREE_GIB:
        return Block(names, None, error=f"only {available:.1f} GiB of memory left; try --schedule sequential")
    if first.startswith("raw_engine"):
        spec = {
            "engine_args": {"model": model, **engine_args},
            "workload": workload.to_dict(),
            "colocate_engine_core": first.endswith("_colocated"),
        }
        server: Any = RawEngine(spec, work, first, args.ready_timeout)
        what = "AsyncLLM in a subprocess"
    elif first.startswith("vllm_serve"):
        server = VllmServe(model, engine_args, work / f"{first}.log", args.ready_timeout)
        what = "vLLM's OpenAI server"
    else:
        server = OurStack(model, engine_args, work / "stack", args.ready_timeout)
        what = "tritonserver + vLLM + frontend"
    log(f"{LABELS[first]}: starting ({what})")
    block = Block(names, server)
    try:
        block.info["startup_s"] = timed(server.start)
    except Exception as exc:  # noqa: BLE001 - report and go on with the next system
        log(f"{first} FAILED to start: {exc}")
        block.error = f"start failed: {exc}"
        return block
    if isinstance(server, RawEngine):
        block.info["startup_s"] = server.info.get("startup_s", block.info["startup_s"])
        if server.info.get("placement"):
            block.info["placement"] = server.info["placement"]
    elif first == "vllm_serve_colocated":
        block.info["placement"] = colocate_engine_core(server.pgid)
    elif isinstance(server, OurStack):
        block.info["tritonserver_version"] = server.triton_version()
    placement = f"; {block.info['placement']}" if block.info.get("placement") else ""
    log(f"{LABELS[first]}: ready in {block.info['startup_s']} s{placement}")
    return block


def stop_block(block: Block) -> None:
    if block.server is None:
        return
    stop_s = timed(block.server.stop)
    block.info["stop_s"] = stop_s
    log(f"{LABELS[block.names[0]]}: stopped in {stop_s} s")


async def open_targets(
    block: Block, workload: Workload, top: int, stack: contextlib.AsyncExitStack, tokenizer: str, work: Path
) -> list[Target]:
    """The block's systems as targets; their clients live in `stack` (closed when the measuring ends)."""
    server = block.server
    if isinstance(server, RawEngine):

        async def run_raw(level: Level, prompts: list[list[int]]) -> Window:
            timeout = workload.level_timeout_s + 60
            return Window.from_dict(await asyncio.to_thread(server.window, asdict(level), prompts, timeout))

        return [Target(block.names[0], run_raw, block.info)]
    if isinstance(server, VllmServe):
        probe = CpuProbe({"api server (python)": server.pgid}, self_label=LOADGEN_LABEL)
        urls = {name: server.base_url for name in block.names}
    else:
        probe = CpuProbe(server.pgids(), self_label=LOADGEN_LABEL)
        urls = {"ours": server.base_url, "triton_grpc": server.grpc_url, "ours_aiperf": server.base_url}
    targets = []
    for name in block.names:
        if name in AIPERF_SYSTEMS:
            targets.append(await aiperf_target(name, urls[name], workload, block.info, tokenizer, work))
            continue
        if name == "triton_grpc":
            client: Any = TritonGrpc(urls[name], workload.output_len)
            info = dict(block.info)
        else:
            model = get_json(f"{urls[name]}/v1/models")["data"][0]["id"]
            client = HttpCompletions(urls[name], model, workload.output_len, max_connections=top + 4)
            info = {**block.info, "served_model": model}
        stack.push_async_callback(client.aclose)

        async def run(level: Level, prompts: list[list[int]], client: Any = client) -> Window:
            return await run_window(client.make_send(level.stream), prompts, level.concurrency, workload, probe)

        targets.append(Target(name, run, info))
    return targets


async def aiperf_target(
    name: str, url: str, workload: Workload, info: dict[str, Any], tokenizer: str, work: Path
) -> Target:
    """A system driven by the `aiperf` CLI (one process per window; no CPU accounting: AIPerf's own start-up
    would be counted)."""
    await asyncio.to_thread(aiperf.ensure_installed)
    model = get_json(f"{url}/v1/models")["data"][0]["id"]
    client = aiperf.AiperfCompletions(
        url,
        model,
        tokenizer,
        workload.input_len,
        workload.output_len,
        work / name,
        workload.request_timeout_s,
        workload.seed,
    )

    async def run(level: Level, prompts: list[list[int]]) -> Window:
        return await client.window(level, len(prompts), workload.level_timeout_s + 120)

    return Target(name, run, {**info, "served_model": model, "load_generator": f"aiperf {aiperf.AIPERF_VERSION}"})


async def measure_blocks(
    blocks: list[Block], args: argparse.Namespace, workload: Workload, tokenizer: str, work: Path
) -> dict[str, Any]:
    """Warm every system up, then per level run `rounds` windows on each, alternating forward and reverse order,
    so that every system sees the machine's drift alike; returns the results per system."""
    top = max(args.levels)
    results: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as clients:
        targets: list[Target] = []
        for block in blocks:
            if block.error is None:
                opened = await open_targets(block, workload, top, clients, tokenizer, work)
                targets += [t for t in opened if t.name in args.systems]
        warm_level = Level("warmup", max(1, min(4, workload.warmup)), workload.warmup)
        alive: list[Target] = []
        for target in targets:
            window = await _window(target, warm_level, workload.prompts(f"warmup:{target.name}", workload.warmup))
            warm = summarize_windows([window], warm_level, workload.output_len) if window else None
            if warm is None or warm["errors"]:
                error = f"warm-up failed: {warm['first_error'] if warm else 'no result'}"
                log(f"{target.name}: {error}")
                results[target.name] = {**target.info, "error": error}
                continue
            log(f"{target.name}: warm-up {warm['completed']}/{warm['requests']} ok in {window.duration:.1f} s")
            alive.append(target)
        windows: dict[tuple[str, str], list[Window]] = {}
        by_name = {target.name: target for target in alive}
        for index, level, name in schedule(workload.levels, list(by_name), args.rounds):
            prompts = workload.prompts(f"{name}:{level.name}:{index}", level.requests)
            window = await _window(by_name[name], level, prompts)
            if window is None:
                continue
            windows.setdefault((name, level.name), []).append(window)
            errors = sum(1 for r in window.records if r.error is not None)
            log(
                f"{level.name} round {index + 1}/{args.rounds} {name}: "
                f"{window.output_tokens_per_s:.0f} tok/s" + (f", {errors} failed" if errors else "")
            )
            await settle()
        for target in alive:
            levels = [
                summarize_windows(windows[(target.name, level.name)], level, workload.output_len)
                for level in workload.levels
                if (target.name, level.name) in windows
            ]
            results[target.name] = {**target.info, "levels": levels}
    return results


def schedule(levels: list[Level], systems: list[str], rounds: int) -> list[tuple[int, Level, str]]:
    """The order of the windows: (round, level, system). Level by level, `rounds` times over the systems, forward
    then reverse order, so systems compared at one level are measured minutes apart at most. A non-streaming level
    goes right beside the streaming level of the same concurrency, for each system (streaming first in even rounds,
    second in odd ones), so the streaming ÷ non-streaming ratio does not straddle the machine's drift either."""
    streaming = {level.concurrency: level for level in levels if level.stream}
    groups: list[list[Level]] = []
    for level in levels:
        if level.stream or level.concurrency not in streaming:
            groups.append([level])
    for level in levels:
        if not level.stream and level.concurrency in streaming:
            next(g for g in groups if g[0] is streaming[level.concurrency]).append(level)
    order = []
    for group in groups:
        for index in range(rounds):
            for name in systems if index % 2 == 0 else systems[::-1]:
                for level in group if index % 2 == 0 else group[::-1]:
                    order.append((index, level, name))
    return order


async def settle(max_wait: float = 5.0, sample: float = 0.25, threshold: float = 0.1) -> None:
    """Between windows: wait until the machine is idle again. vLLM's processes keep busy-polling for about a second
    after their last step, which would otherwise be taken from the next system's first second."""
    deadline = time.monotonic() + max_wait
    await asyncio.sleep(1.0)
    while time.monotonic() < deadline:
        before = machine_busy_seconds()
        await asyncio.sleep(sample)
        if (machine_busy_seconds() - before) / sample < threshold:
            return


async def _window(target: Target, level: Level, prompts: list[list[int]]) -> Window | None:
    try:
        return await target.run(level, prompts)
    except Exception as exc:  # noqa: BLE001 - a broken system is reported, the others go on
        log(f"{target.name} {level.name}: FAILED: {exc}")
        return None


def run_all(args: argparse.Namespace, model: str, engine_args, workload: Workload, work: Path):
    """Start, measure and stop every selected system on the chosen schedule; returns (results, idle cores)."""
    selected = [block for block in BLOCKS if any(name in args.systems for name in block)]
    results: dict[str, Any] = {}
    busy: list[float | None] = []
    groups = [selected] if args.schedule == "interleaved" else [[block] for block in selected]
    for group in groups:
        blocks: list[Block] = []
        try:
            for names in group:
                blocks.append(start_block(names, args, model, engine_args, workload, work))
            busy.append(wait_for_quiet(args.wait_quiet))
            results.update(asyncio.run(measure_blocks(blocks, args, workload, model, work)))
        finally:
            for block in reversed(blocks):
                stop_block(block)
        for block in blocks:
            for name in block.names:
                if name not in args.systems:
                    continue
                if block.error is not None:
                    results[name] = {"error": block.error}
                elif name in results:
                    results[name]["stop_s"] = block.info.get("stop_s")
    return results, busy


def level_map(system: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not system or "levels" not in system:
        return {}
    return {level["name"]: level for level in system["levels"]}


def _p(level: dict[str, Any], metric: str, q: str) -> float | None:
    dist = level.get(metric)
    return dist[q] if dist else None


def compare(results: dict[str, Any], numerator: str, denominator: str) -> dict[str, dict[str, Any]]:
    """Per level: numerator ÷ denominator for throughput; numerator − denominator for latencies (ms)."""
    mine, theirs = level_map(results.get(numerator)), level_map(results.get(denominator))
    out = {}
    for name, a in mine.items():
        b = theirs.get(name)
        if not b or not b["output_tokens_per_s"]:
            continue
        entry: dict[str, Any] = {
            "output_tokens_per_s_ratio": round(a["output_tokens_per_s"] / b["output_tokens_per_s"], 3),
            "requests_per_s_ratio": round(a["requests_per_s"] / b["requests_per_s"], 3)
            if b["requests_per_s"]
            else None,
        }
        rounds_a, rounds_b = a.get("rounds_output_tokens_per_s", []), b.get("rounds_output_tokens_per_s", [])
        if len(rounds_a) == len(rounds_b) > 1:
            entry["output_tokens_per_s_ratio_rounds"] = [
                round(x / y, 3) if y else None for x, y in zip(rounds_a, rounds_b, strict=True)
            ]
        for metric in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"):
            for q in ("p50", "p99"):
                x, y = _p(a, metric, q), _p(b, metric, q)
                entry[f"{metric[:-3]}_{q}_diff_ms"] = round(x - y, 2) if x is not None and y is not None else None
        out[name] = entry
    return out


def stream_vs_nonstream(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per system: streaming ÷ non-streaming output tokens/s at the top level (the 'within 5%' check)."""
    out = {}
    for system, data in results.items():
        levels = level_map(data)
        for name, level in levels.items():
            if name.endswith("-nonstream") and name.removesuffix("-nonstream") in levels:
                stream = levels[name.removesuffix("-nonstream")]
                if level["output_tokens_per_s"]:
                    out[system] = {
                        "level": name.removesuffix("-nonstream"),
                        "stream_tok_s": stream["output_tokens_per_s"],
                        "nonstream_tok_s": level["output_tokens_per_s"],
                        "ratio": round(stream["output_tokens_per_s"] / level["output_tokens_per_s"], 3),
                    }
    return out


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(report: dict[str, Any]) -> str:
    """The readable summary: metrics per system and level, then the ratios, then where the CPU went."""
    lines = []
    header = (
        f"{'system':<26} {'level':<14} {'ok':>7} {'req/s':>7} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p99':>9} "
        f"{'ITL p50':>8} {'ITL p99':>8} {'TPOT p50':>9} {'E2E p50':>8} {'E2E p99':>8} {'cores':>6} {'noise':>6}"
    )
    lines += [
        "",
        "Latencies in ms. ITL = gap between streamed text chunks; TPOT = (E2E - TTFT) / (tokens - 1) per request;",
        "cores = CPU cores this system (+ the load generator) kept busy; noise = cores busy with other people's work.",
        f"Schedule {report['settings']['schedule']}: per level, {report['settings']['rounds']} window(s) on each "
        "system, in forward then reverse order; statistics over all windows, 'rounds' = tok/s of each window.",
        header,
    ]
    lines.append("-" * len(header))
    systems = report["systems"]
    for name in SYSTEMS:
        data = systems.get(name)
        if data is None:
            continue
        if "levels" not in data:
            lines.append(f"{LABELS[name]:<26} FAILED: {str(data.get('error'))[:200]}")
            continue
        for level in data["levels"]:
            lines.append(
                f"{LABELS[name]:<26} {level['name']:<14} {level['completed']:>3}/{level['requests']:<3} "
                f"{level['requests_per_s']:>7.2f} {level['output_tokens_per_s']:>8.0f} "
                f"{fmt(_p(level, 'ttft_ms', 'p50')):>9} {fmt(_p(level, 'ttft_ms', 'p99')):>9} "
                f"{fmt(_p(level, 'itl_ms', 'p50')):>8} {fmt(_p(level, 'itl_ms', 'p99')):>8} "
                f"{fmt(_p(level, 'tpot_ms', 'p50'), 2):>9} "
                f"{fmt(_p(level, 'e2e_ms', 'p50'), 0):>8} {fmt(_p(level, 'e2e_ms', 'p99'), 0):>8} "
                f"{fmt(level.get('cpu_cores_busy'), 2):>6} {fmt(level.get('other_cores_busy'), 2):>6}"
                + (
                    "  rounds " + "/".join(f"{x:.0f}" for x in level["rounds_output_tokens_per_s"])
                    if "rounds_output_tokens_per_s" in level
                    else ""
                )
            )
        lines.append("")
    noisy = [
        f"{LABELS[name]} {level['name']} ({level['other_cores_busy']:.2f})"
        for name in SYSTEMS
        for level in level_map(systems.get(name)).values()
        if (level.get("other_cores_busy") or 0) >= NOISY_CORES
    ]
    if noisy:
        lines.append(f"WARNING: other processes kept cores busy during: {', '.join(noisy)}; rerun on a quiet machine.")
        lines.append("")
    lines.append(
        "Ratios: throughput a÷b; latency differences a−b in ms at p50 (per-level p99 differences in the JSON):"
    )
    for key, pairs in report["ratios"].items():
        for level, entry in pairs.items():
            per_round = entry.get("output_tokens_per_s_ratio_rounds")
            lines.append(
                f"  {key:<34} {level:<14} tok/s x{entry['output_tokens_per_s_ratio']:.3f}   "
                f"TTFT {fmt(entry['ttft_p50_diff_ms']):>7} ms  ITL {fmt(entry['itl_p50_diff_ms'], 2):>6} ms  "
                f"TPOT {fmt(entry['tpot_p50_diff_ms'], 2):>6} ms  E2E {fmt(entry['e2e_p50_diff_ms'], 0):>6} ms"
                + (f"  rounds {'/'.join(fmt(x, 2) for x in per_round)}" if per_round else "")
            )
    if report["stream_vs_nonstream"]:
        lines.append("")
        lines.append("Streaming ÷ non-streaming output tokens/s at the top level:")
        for system, entry in report["stream_vs_nonstream"].items():
            lines.append(
                f"  {LABELS[system]:<26} {entry['level']:<6} {entry['stream_tok_s']:>7.0f} / "
                f"{entry['nonstream_tok_s']:>7.0f} = x{entry['ratio']:.3f}"
            )
    lines += render_tool_summaries(systems)
    lines.append("")
    lines.append("Where the CPU went at the top streaming level (cores busy per process role):")
    for name in SYSTEMS:
        levels = level_map(systems.get(name))
        top = levels.get(f"c{max(report['settings']['levels'])}")
        if top and top.get("cpu_s"):
            parts = ", ".join(
                f"{role} {seconds / top['duration_s']:.2f}" for role, seconds in top["cpu_s"].items() if seconds > 0
            )
            lines.append(f"  {LABELS[name]:<26} {parts}")
    return "\n".join(lines)


def render_tool_summaries(systems: dict[str, Any]) -> list[str]:
    """AIPerf's own headline numbers per window, beside the table computed from its records (a cross-check)."""
    lines = []
    for name in AIPERF_SYSTEMS:
        for level in level_map(systems.get(name)).values():
            rounds = [r for r in level.get("rounds_tool_summary") or [] if r]
            if not rounds:
                continue
            if not lines:
                lines += [
                    "",
                    "AIPerf's own summary per window (profile_export_aiperf.json): output tok/s, TTFT p50 ms, "
                    "ITL p50 ms (AIPerf's ITL is per token: the table's TPOT):",
                ]

            def col(key: str, digits: int, rounds: list[dict[str, Any]] = rounds) -> str:
                return "/".join(fmt(r.get(key), digits) for r in rounds)

            lines.append(
                f"  {LABELS[name]:<26} {level['name']:<14} tok/s {col('output_token_throughput_avg', 0)}   "
                f"TTFT {col('time_to_first_token_p50', 1)}   ITL {col('inter_token_latency_p50', 2)}"
            )
    return lines


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir = (REPO / args.model).resolve() if not os.path.isabs(args.model) else Path(args.model)
    if not (model_dir / "config.json").exists():
        print(f"model directory {model_dir} not found (build the tiny model with `make models`)", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C so every server is stopped by the finally blocks.
    signal.signal(signal.SIGTERM, _interrupt)
    env = bench_environment(args.kv_cache_gib)
    os.environ.update(env)  # every system (and everything it spawns) inherits the same engine environment
    engine_args = {**BASE_ENGINE_ARGS, "max_num_seqs": max(BASE_ENGINE_ARGS["max_num_seqs"], max(args.levels))}
    workload = build_workload(args, model_dir)
    work = REPO / ".run" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    log(f"model {model_dir}; levels {args.levels}; logs in {work}")
    started = time.monotonic()
    results, busy = run_all(args, str(model_dir), engine_args, workload, work)
    triton_version = next((d["tritonserver_version"] for d in results.values() if d.get("tritonserver_version")), None)
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "total_s": round(time.monotonic() - started, 1),
        "machine": machine_info(),
        "versions": {**versions(), "tritonserver": triton_version},
        "model": str(model_dir.relative_to(REPO)) if model_dir.is_relative_to(REPO) else str(model_dir),
        "settings": {
            "quick": args.quick,
            "schedule": args.schedule,
            "rounds": args.rounds,
            "machine_busy_before_measuring": busy,
            "levels": args.levels,
            "engine_args": engine_args,
            "environment": env,
            "workload": {k: v for k, v in workload.to_dict().items() if k != "special_ids"},
            "sampling": {"temperature": 0, "ignore_eos": True, "max_tokens": args.output_len},
            "prompts": "seeded random token ids (no special tokens), distinct per level: no prefix-cache hits",
            "http_client": "httpx, POST /v1/completions, stream=true, stream_options.include_usage (bench/clients.py)",
            "grpc_client": "grpc.aio ModelStreamInfer, one stream per request, frontend.triton.build_request",
            "tool": args.tool,
            "aiperf": f"aiperf {aiperf.AIPERF_VERSION} (.venv-aiperf): profile --endpoint-type completions "
            "--streaming --isl/--osl (stddev 0) --extra-inputs ignore_eos:true,temperature:0 "
            "--use-server-token-count, seeded synthetic prompts per window (bench/aiperf.py)",
            "order": [s for s in SYSTEMS if s in args.systems],
            "logs": str(work),
        },
        "systems": results,
        "ratios": {
            "ours / vllm_serve": compare(results, "ours", "vllm_serve"),
            "ours / vllm_serve_colocated": compare(results, "ours", "vllm_serve_colocated"),
            "ours / raw_engine_colocated": compare(results, "ours", "raw_engine_colocated"),
            "ours / raw_engine": compare(results, "ours", "raw_engine"),
            "vllm_serve / raw_engine": compare(results, "vllm_serve", "raw_engine"),
            "triton_grpc / raw_engine": compare(results, "triton_grpc", "raw_engine"),
            "ours / triton_grpc": compare(results, "ours", "triton_grpc"),
            "ours / vllm_serve (AIPerf)": compare(results, "ours_aiperf", "vllm_serve_aiperf"),
        },
        "stream_vs_nonstream": stream_vs_nonstream(results),
    }
    out = Path(args.out) if os.path.isabs(args.out) else REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    log(f"total {report['total_s']:.0f} s; JSON written to {out}")
    failed = [name for name, data in results.items() if "levels" not in data]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
