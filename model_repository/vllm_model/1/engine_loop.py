"""The engine's asyncio event loop on a thread of its own (both Triton models of this repository use it).

`execute()` must return at once, so requests are handed to this loop; the engine is started on it and shut down
on it. The loop is uvloop's where it is installed (vLLM depends on it; `vllm serve` runs AsyncLLM on it too), else
asyncio's own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

try:
    import uvloop
except ImportError:  # pragma: no cover - vLLM installs it
    uvloop = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


class EngineLoop:
    def __init__(self, name: str) -> None:
        self.loop = new_event_loop()
        self._name = name
        self._thread: threading.Thread | None = None

    def start(self, start_engine: Callable[[], Awaitable[None]]) -> None:
        """Run the loop on its thread; return once `start_engine()` has finished there (re-raising its error)."""
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(start_engine())
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                failed.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            self._thread.join(timeout=30)
            raise failed[0]

    def submit(self, coro: Awaitable) -> asyncio.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, shutdown: Callable[[], Awaitable[None]] | None, logger, tag: str, timeout: float = 25.0) -> None:
        """Run `shutdown()` on the loop (when given) for up to `timeout` seconds, then stop the loop and its thread."""
        if shutdown is not None:
            try:
                self.submit(shutdown()).result(timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - best effort at exit
                logger.log_warn(f"[{tag}] engine shutdown: {exc!r}")
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
