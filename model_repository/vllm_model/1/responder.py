"""The model's response path, on a thread of its own.

Every `response_sender.send()` and `is_cancelled()` is an IPC round trip from the stub to Triton, and every response
then costs Triton's server and the client a message each. Doing them on the engine's event loop stalls vLLM's output
handling and delays new requests (time to first token). So the engine loop only queues plain Python data (`Step`s);
this thread builds the tensors, sends, and polls cancellation.

Under load the thread paces itself: after a round of sends it rests twice as long as the round took (at most
`MAX_REST_SECONDS`), and the streaming steps that arrive meanwhile are merged, one response per request (as vLLM
itself merges steps for a slow consumer). With few streams a round takes well under a millisecond, so every token
still goes out on its own; with many, responses carry several tokens and the serving processes spend less CPU per
token. First and last responses of a stream (time to first token; the end of a request, after which a client sends
its next one), whole non-streaming answers, errors and control answers never wait: during a rest they go out alone
(with their request's earlier steps, merged), and the other streams keep resting.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from accumulator import Step
from tracing import ENABLED as TRACE
from tracing import RING as TRACE_RING
from tracing import StreamTrace

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
# How often in-flight requests are checked for cancellation by the client (each check is an IPC round trip): every
# CANCEL_POLL_SECONDS, or less often with many requests in flight, so that the checks stay under
# MAX_CANCEL_CHECKS_PER_SECOND (32 streams: every 0.32 s instead of 320 round trips a second).
CANCEL_POLL_SECONDS = 0.1
MAX_CANCEL_CHECKS_PER_SECOND = 100
# After a round of sends the thread rests REST_RATIO times as long as the round took (so it sends at most a third of
# the time), but never longer than MAX_REST_SECONDS (the most a streamed token waits for company).
REST_RATIO = 2.0
MAX_REST_SECONDS = 0.02


def build_response(step: Step, return_flags: dict[str, bool]) -> pb_utils.InferenceResponse:
    tensors = [pb_utils.Tensor("text_output", np.array([t.encode("utf-8") for t in step.texts], dtype=np.object_))]
    if return_flags["return_finish_reason"]:
        # As vllm_backend (str(None)): "None" while a sequence has not finished.
        reasons = np.array([(r or "None").encode() for r in step.finish_reasons], dtype=np.object_)
        tensors.append(pb_utils.Tensor("finish_reason", reasons))
    if return_flags["return_num_input_tokens"]:
        tensors.append(pb_utils.Tensor("num_input_tokens", np.array([step.num_input_tokens], dtype=np.uint32)))
    if return_flags["return_num_output_tokens"]:
        tensors.append(pb_utils.Tensor("num_output_tokens", np.array(step.num_output_tokens, dtype=np.uint32)))
    if return_flags["return_cumulative_logprob"]:
        tensors.append(pb_utils.Tensor("cumulative_logprob", np.array(step.cumulative_logprobs, dtype=np.float32)))
    if return_flags["return_logprobs"]:
        encoded = [json.dumps(entries).encode("utf-8") for entries in step.logprobs]
        tensors.append(pb_utils.Tensor("logprobs", np.array(encoded, dtype=np.object_)))
    return pb_utils.InferenceResponse(output_tensors=tensors)


@dataclass
class _Item:
    sender: Any
    step: Step | None = None
    return_flags: dict[str, bool] = field(default_factory=dict)
    response: Any = None  # a ready InferenceResponse (errors, control answers), or None with no step: close
    mergeable: bool = False
    trace: StreamTrace | None = None  # TVO_TRACE=1 only: the request's trace, and the engine output's index
    index: int = 0

    @property
    def urgent(self) -> bool:
        """Sent at once, even while the thread rests: anything but a streaming step between the first and last."""
        return not self.mergeable or self.step.first or self.step.final


class Responder:
    """Sends responses and watches for cancelled requests, off the engine's event loop."""

    def __init__(self, logger, pace: bool = True) -> None:
        self._logger = logger
        self._pace = pace
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._watched: dict[int, tuple[Any, Callable[[], None]]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="vllm-responder", daemon=True)
        self._thread.start()

    # ---- called from the engine loop ----

    def step(
        self,
        sender,
        step: Step,
        return_flags: dict[str, bool],
        stream: bool,
        trace: StreamTrace | None = None,
        index: int = 0,
    ) -> None:
        self._queue.put(_Item(sender, step=step, return_flags=return_flags, mergeable=stream, trace=trace, index=index))
        if trace is not None:
            TRACE_RING.stamp(trace.key, index, "queued")

    def send(self, sender, response) -> None:
        """A ready response that ends the request (an error or a control answer)."""
        self._queue.put(_Item(sender, response=response))

    def close(self, sender) -> None:
        """End the request without data (e.g. after cancellation)."""
        self._queue.put(_Item(sender))

    def watch(self, sender, on_cancel: Callable[[], None]) -> None:
        with self._lock:
            self._watched[id(sender)] = (sender, on_cancel)

    def unwatch(self, sender) -> None:
        with self._lock:
            self._watched.pop(id(sender), None)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    # ---- the thread ----

    def _run(self) -> None:
        next_poll = time.monotonic() + CANCEL_POLL_SECONDS
        batch: list[_Item] = []
        rest_until = 0.0
        while True:
            now = time.monotonic()
            if batch and now >= rest_until:
                timeout = 0.0
            else:
                timeout = max(0.0, min(next_poll, rest_until if batch else next_poll) - now)
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                item = ...
            if item is None:
                self._deliver(batch)
                return
            urgent = False
            if item is not ...:
                batch.append(item)
                if TRACE:
                    _stamp_dequeued(item)
                urgent = item.urgent
                while True:  # take what is waiting, to merge it
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._deliver(batch)
                        return
                    batch.append(item)
                    if TRACE:
                        _stamp_dequeued(item)
                    urgent = urgent or item.urgent
            if batch and time.monotonic() >= rest_until:
                started = time.monotonic()
                self._deliver(batch)
                batch = []
                if self._pace:
                    took = time.monotonic() - started
                    rest_until = time.monotonic() + min(took * REST_RATIO, MAX_REST_SECONDS)
            elif urgent:  # resting: the urgent requests go now, the other streams keep waiting
                keys = {id(item.sender) for item in batch if item.urgent}
                self._deliver([item for item in batch if id(item.sender) in keys])
                batch = [item for item in batch if id(item.sender) not in keys]
            if time.monotonic() >= next_poll:
                checked = self._poll_cancellations()
                next_poll = time.monotonic() + max(CANCEL_POLL_SECONDS, checked / MAX_CANCEL_CHECKS_PER_SECOND)

    def _deliver(self, batch: list[_Item]) -> None:
        merged: list[_Item] = []
        open_step: dict[int, _Item] = {}
        for item in batch:
            key = id(item.sender)
            pending = open_step.get(key)
            if item.mergeable and pending is not None:
                pending.step.absorb(item.step)
                pending.index = item.index
            else:
                merged.append(item)
            if item.mergeable and not item.step.final:
                open_step.setdefault(key, item if pending is None else pending)
            else:
                open_step.pop(key, None)
        for item in merged:
            if item.step is None or item.step.final:
                # The Python backend frees the request's response factory after its final response, so a later
                # is_cancelled() on this sender would make Triton read freed memory. The engine loop unwatches too,
                # but after queueing the final response, which this thread may send (and then poll) first.
                self.unwatch(item.sender)
            try:
                if item.trace is not None:
                    _send_traced(item)
                elif item.step is not None:
                    flags = FINAL if item.step.final else 0
                    item.sender.send(build_response(item.step, item.return_flags), flags=flags)
                elif item.response is not None:
                    item.sender.send(item.response, flags=FINAL)
                else:
                    item.sender.send(flags=FINAL)
            except Exception as exc:  # noqa: BLE001 - e.g. the request was cancelled meanwhile
                self._logger.log_warn(f"[vllm_model] could not send a response: {exc!r}")

    def _poll_cancellations(self) -> int:
        """Check every watched request once; returns how many were checked."""
        with self._lock:
            watched = list(self._watched.items())
        for key, (sender, on_cancel) in watched:
            if sender.is_cancelled():
                with self._lock:
                    self._watched.pop(key, None)
                on_cancel()
        return len(watched)


def _stamp_dequeued(item: _Item) -> None:
    if item.trace is not None:
        TRACE_RING.stamp(item.trace.key, item.index, "dequeued")


def _send_traced(item: _Item) -> None:
    """`_deliver`'s send of a traced step: response r (carrying engine outputs up to `item.index`), stamped before
    the tensors are built, after they are, and when send() returns."""
    key, response_index = item.trace.key, item.trace.next_response()
    TRACE_RING.stamp(key, response_index, "build", item.index)
    response = build_response(item.step, item.return_flags)
    TRACE_RING.stamp(key, response_index, "send")
    item.sender.send(response, flags=FINAL if item.step.final else 0)
    TRACE_RING.stamp(key, response_index, "sent")
