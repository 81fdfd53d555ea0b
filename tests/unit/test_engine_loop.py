"""The engine's event loop: uvloop's (as `vllm serve` runs AsyncLLM; measured cheaper per token, bench/README.md),
on a thread of its own that runs what is submitted from other threads."""

from __future__ import annotations

import asyncio
import threading

import uvloop
from engine_loop import EngineLoop


def test_engine_loop_is_uvloop_and_runs_submitted_work_on_its_thread():
    engine = EngineLoop("test-engine-loop")
    assert isinstance(engine.loop, uvloop.Loop)
    started: list[str] = []

    async def start_engine() -> None:
        started.append(threading.current_thread().name)

    async def work(x: int) -> tuple[int, str]:
        await asyncio.sleep(0)
        return x * 2, threading.current_thread().name

    engine.start(start_engine)
    try:
        assert started == ["test-engine-loop"]
        assert engine.submit(work(21)).result(timeout=5) == (42, "test-engine-loop")
    finally:
        engine.stop(None, logger=None, tag="test")
    assert not engine.loop.is_running()
