"""The ceiling: vLLM's `AsyncLLM` in this process, no HTTP, no Triton, driven by the shared load generator.

Runs as a long-lived subprocess of the benchmark (vLLM spawns its EngineCore and workers, so this needs the
`__main__` guard), controlled over two pipes so that vLLM's own output on stdout cannot get in the way:

    python -m bench.raw_engine --spec spec.json --control-fds READ,WRITE

The spec holds `engine_args`, the `workload` (bench.load.Workload as a dict) and `colocate_engine_core` (run vLLM's
EngineCore on its CPU worker's cores, as our model does). Once the engine is up this writes `READY {startup_s,
placement}`; then, for each command line read (`{"op": "window", "level": {...}, "prompts": [[ids]]}` or
`{"op": "stop"}`), it runs that window of load and writes `WINDOW {records, duration, cpu_s}` (bench.load.Window).
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
from bench.load import Level, RequestRecord, Send, Workload, run_window


def log(message: str) -> None:
    print(f"[raw-engine {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def serve(spec: dict[str, Any], commands, replies) -> None:
    """Start the engine, then run windows of load on command until told to stop."""
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    workload = Workload.from_dict(spec["workload"])
    started = time.monotonic()
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**spec["engine_args"]))
    startup_s = round(time.monotonic() - started, 1)
    log(f"engine ready in {startup_s} s")
    placement = None
    if spec.get("colocate_engine_core"):
        from bench.systems import colocate_engine_core

        placement = colocate_engine_core(os.getpid())
        log(f"EngineCore placement: {placement}")

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

    def reply(kind: str, data: dict[str, Any]) -> None:
        replies.write(f"{kind} {json.dumps(data)}\n")
        replies.flush()

    # This process is its own process group's leader: the engine client and load generator are "python".
    cpu = CpuProbe({"engine client + load generator": os.getpgid(0)})
    try:
        reply("READY", {"startup_s": startup_s, "placement": placement})
        while True:
            line = await asyncio.to_thread(commands.readline)
            command = json.loads(line) if line.strip() else {"op": "stop"}
            if command["op"] != "window":
                break
            level = Level(**command["level"])
            window = await run_window(make_send(level.stream), command["prompts"], level.concurrency, workload, cpu)
            reply("WINDOW", window.to_dict())
    finally:
        engine.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="JSON file: {engine_args, workload, colocate_engine_core}")
    parser.add_argument("--control-fds", required=True, help="READ,WRITE: inherited pipe ends for commands/replies")
    args = parser.parse_args()
    with open(args.spec) as file:
        spec = json.load(file)
    read_fd, write_fd = (int(fd) for fd in args.control_fds.split(","))
    with os.fdopen(read_fd, "r") as commands, os.fdopen(write_fd, "w") as replies:
        asyncio.run(serve(spec, commands, replies))


if __name__ == "__main__":
    main()
