"""Per-token timestamps of the response path, for bench/trace_budget.py; off unless TVO_TRACE=1 at start.

Each process that takes part (the model's stub here; the frontend through frontend/tracing.py, which loads this
file) stamps every hop of every response into an in-memory ring and writes it as JSON lines to $TVO_TRACE_DIR (default
/tmp/tvo-trace) when it exits. The stamps are time.monotonic_ns() (CLOCK_MONOTONIC on Linux: comparable across the
processes of one machine). Off, a hop costs one check of the module's ENABLED bool and nothing is allocated.

Standard library only (the model directory is copied into Triton as it is).
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import time

ENABLED = os.environ.get("TVO_TRACE", "").strip().lower() in ("1", "true", "yes", "on")
RING_SIZE = 1 << 20  # events kept (the oldest are dropped): ~16k responses of ~60 tokens, 8 hops each


class Ring:
    """(key, index, hop, monotonic ns, extra) events of one process, dumped once as JSON lines."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.events: collections.deque = collections.deque(maxlen=RING_SIZE)
        self.dumped = False

    def stamp(self, key: str, index: int, hop: str, extra=None, t_ns: int | None = None) -> None:
        self.events.append((key, index, hop, time.monotonic_ns() if t_ns is None else t_ns, extra))

    def dump(self) -> str | None:
        """Write the events to $TVO_TRACE_DIR/<role>-<pid>.jsonl (once); returns the path, None if nothing to write."""
        if self.dumped or not self.events:
            return None
        self.dumped = True
        directory = os.environ.get("TVO_TRACE_DIR") or "/tmp/tvo-trace"
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"{self.role}-{os.getpid()}.jsonl")
        with open(path, "w", encoding="utf-8") as file:
            for event in self.events:
                file.write(json.dumps(event) + "\n")
        return path


RING = Ring("model")
if ENABLED:
    atexit.register(RING.dump)


class StreamTrace:
    """One streamed request's counters: the engine outputs (index k) and the responses sent (index r)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.outputs = 0
        self.responses = 0

    def output(self, output) -> int:
        """An engine output reached the model's loop: stamps "engine" (the EngineCore's own monotonic time of the
        step that made it, vLLM's RequestStateStats.last_token_ts) and "loop" (now); returns its index k."""
        now = time.monotonic_ns()
        index = self.outputs
        self.outputs += 1
        engine_ts = getattr(getattr(output, "metrics", None), "last_token_ts", 0.0)
        if engine_ts:
            RING.stamp(self.key, index, "engine", t_ns=int(engine_ts * 1e9))
        RING.stamp(self.key, index, "loop", t_ns=now)
        return index

    def next_response(self) -> int:
        index = self.responses
        self.responses += 1
        return index
