"""A bounded client load through the router: the official `openai` SDK, streaming and not, each text checked."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import openai

from tests.conftest import MODEL_NAME

MAX_TOKENS = 24


@dataclass
class Outcome:
    started: float
    ended: float
    stream: bool
    error: str | None = None


@dataclass
class Load:
    """Requests, `concurrency` at a time, until `stop` is set or `limit` requests were sent."""

    base_url: str
    concurrency: int = 8
    limit: int = 200
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        # No SDK retries: every failure the router lets through is counted.
        self.client = openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
        self._sent = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _next(self) -> int | None:
        with self._lock:
            if self.stop.is_set() or self._sent >= self.limit:
                return None
            self._sent += 1
            return self._sent

    def one(self, number: int) -> Outcome:
        stream = number % 2 == 0
        outcome = Outcome(started=time.monotonic(), ended=0.0, stream=stream)
        try:
            if stream:
                chunks = list(
                    self.client.completions.create(
                        model=MODEL_NAME,
                        prompt="def f",
                        max_tokens=MAX_TOKENS,
                        stream=True,
                        extra_body={"ignore_eos": True},
                    )
                )
                text = "".join(c.choices[0].text for c in chunks if c.choices)
                reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
                if reasons != ["length"] or not text:
                    outcome.error = f"incomplete stream: reasons {reasons}, {len(text)} chars"
            else:
                response = self.client.chat.completions.create(
                    model=MODEL_NAME,
                    messages=[{"role": "user", "content": "hi"}],
                    max_tokens=MAX_TOKENS,
                    extra_body={"ignore_eos": True},
                )
                choice = response.choices[0]
                if choice.finish_reason != "length" or response.usage.completion_tokens != MAX_TOKENS:
                    outcome.error = f"incomplete: {choice.finish_reason}, {response.usage.completion_tokens} tokens"
        except Exception as exc:  # noqa: BLE001 - every failure is an outcome to count
            outcome.error = f"{type(exc).__name__}: {exc}"[:300]
        outcome.ended = time.monotonic()
        return outcome

    def _worker(self) -> None:
        while (number := self._next()) is not None:
            outcome = self.one(number)
            with self._lock:
                self.outcomes.append(outcome)

    def _run(self) -> None:
        with ThreadPoolExecutor(self.concurrency) as pool:
            for _ in range(self.concurrency):
                pool.submit(self._worker)

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def wait_done(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < count and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)

    def finish_when_done(self, timeout: float = 300) -> list[Outcome]:
        """Wait for all `limit` requests."""
        self._thread.join(timeout)
        return list(self.outcomes)

    def finish(self, timeout: float = 300) -> list[Outcome]:
        self.stop.set()
        self._thread.join(timeout)
        return list(self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error]
