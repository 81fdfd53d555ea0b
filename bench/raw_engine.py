"""The ceiling: vLLM's `AsyncLLM` in this process, no HTTP, no Triton, driven by the shared load generator.

Run as a subprocess of the benchmark (vLLM spawns its EngineCore and workers, so this needs the `__main__` guard):
`python -m bench.raw_engine --spec spec.json --out result.json`. The spec holds `engine_args`, the `workload`
(bench.load.Workload as a dict) and `colocate_engine_core` (run vLLM's EngineCore on its CPU worker's cores, as our
model does). The result (startup time, per-level statistics, CPU per process) is written to `--out` and printed as
the last stdout line, prefixed with `RESULT `.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from typing import Any

from bench.cpu import CpuProbe
from bench.load import RequestRecord, Send, Workload, measure


def log(message: str) -> None:
    print(f"[raw-engine {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Start the engine, measure every level, shut the engine down."""
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    workload = Workload.from_dict(spec["workload"])
    started = time.monotonic()
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**spec["engine_args"]))
    startup_s = time.monotonic() - started
    log(f"engine ready in {startup_s:.1f} s")
    if spec.get("colocate_engine_core"):
        from bench.systems import colocate_engine_core

        log(f"EngineCore placed on the worker's cores: {colocate_engine_core(os.getpid())}")

    def make_send(stream: bool) -> Send:
        kind = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY

        async def send(prompt: list[int], record: RequestRecord) -> None:
            params = SamplingParams(max_tokens=workload.output_len, temperature=0, ignore_eos=True, output_kind=kind)
            async for output in engine.generate({"prompt_token_ids": prompt}, params, uuid.uuid4().hex):
                now = time.perf_counter()
                for completion in output.outputs:
                    record.output_tokens += len(completion.token_ids)
                    if stream and completion.text:
                        record.chunk_times.append(now)

        return send

    # This process is its own process group's leader: the engine client and load generator are "python".
    cpu = CpuProbe({"engine client + load generator": os.getpgid(0)})
    try:
        measured = await measure(make_send, workload, cpu, log)
    finally:
        engine.shutdown()
    return {"startup_s": round(startup_s, 1), **measured}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="JSON file: {engine_args, workload}")
    parser.add_argument("--out", required=True, help="where to write the result JSON")
    args = parser.parse_args()
    with open(args.spec) as file:
        spec = json.load(file)
    result = asyncio.run(run(spec))
    with open(args.out, "w") as file:
        json.dump(result, file)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
