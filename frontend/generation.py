"""What completions and chat share: model resolution, running prompts through Triton, usage, errors, disconnects,
and serve(): one request answered whole or streamed, through the endpoint's Renderer."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from frontend.errors import APIError, model_not_found
from frontend.protocol import ModelCard, ModelList, SamplingRequest, Usage
from frontend.streaming import DONE, SSE_HEADERS, merged_generations, sse
from frontend.tracing import RING as TRACE_RING
from frontend.triton import GenerateRequest, GenerationChunk, TritonClient, TritonError

logger = logging.getLogger("frontend")
T = TypeVar("T")


# The model names the sampling parameter it refuses: "sampling parameter 'max_tokens' is too large: ...".
_PARAMETER_IN_MESSAGE = re.compile(r"sampling parameter '([A-Za-z_]+)'")


def api_error_from(exc: TritonError, body: SamplingRequest | None = None) -> APIError:
    """How a Triton/model failure reaches an OpenAI client; `body` names a refused parameter as the client sent it."""
    if exc.kind == "invalid":
        named = _PARAMETER_IN_MESSAGE.search(exc.message)
        param = None if named is None else body.param_name(named.group(1)) if body is not None else named.group(1)
        return APIError(400, exc.message, param=param, code="invalid_request")
    if exc.kind == "not_found":
        return APIError(404, exc.message, param="model", code="model_not_found")
    if exc.kind == "unavailable":
        return APIError(503, f"the model is not available: {exc.message}", code="service_unavailable")
    message = exc.message if exc.message.lower().startswith("internal error") else f"internal error: {exc.message}"
    return APIError(500, message, code="internal_error")


class ServedModels:
    """The names clients may put in `model`: the base model and the LoRA adapters the model reports."""

    def __init__(self, client: TritonClient, base_name_override: str | None = None) -> None:
        self.client = client
        self.base_name_override = base_name_override

    async def _info(self, refresh: bool = False) -> dict[str, Any]:
        try:
            return await self.client.info(refresh=refresh)
        except TritonError as exc:
            raise api_error_from(exc) from None

    def _base(self, info: dict[str, Any]) -> str:
        return self.base_name_override or info["served_model_name"]

    async def resolve(self, name: str) -> tuple[str, str | None]:
        """(name to report, LoRA adapter to use or None). Unknown names are looked up once more, then 404."""
        for refresh in (False, True):
            info = await self._info(refresh)
            if name == self._base(info) or name == info.get("model"):
                return self._base(info), None
            if name in info.get("loras", []):
                return name, name
        raise model_not_found(name)

    async def resolve_base(self) -> tuple[str, dict[str, Any]]:
        """The base model's name, and the model's facts."""
        info = await self._info()
        return self._base(info), info

    async def max_model_len(self) -> int:
        return int((await self._info())["max_model_len"])

    async def tokenizer_facts(self) -> dict[str, Any]:
        """The model's chat template and special tokens."""
        info = await self._info()
        return {"chat_template": info.get("chat_template"), "special_tokens": info.get("special_tokens") or {}}

    async def cards(self) -> ModelList:
        info = await self._info(refresh=True)
        base = self._base(info)
        created = int(info.get("created", 0))
        cards = [ModelCard(id=base, created=created, root=info.get("model"), max_model_len=info["max_model_len"])]
        cards += [
            ModelCard(id=name, created=created, root=name, parent=base, max_model_len=info["max_model_len"])
            for name in info.get("loras", [])
        ]
        return ModelList(data=cards)


@dataclass
class ChoiceState:
    """What has been generated so far for one choice (prompt × sample)."""

    text: list[str] = field(default_factory=list)
    tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[dict[str, Any]] = field(default_factory=list)


class Part(NamedTuple):
    """What one model response adds to one choice (only parts that add something are made)."""

    index: int  # the choice: prompt index × n + sample
    text: str
    finish_reason: str | None  # set once, on the part that finishes the choice
    logprobs: list[dict[str, Any]]  # the model's per-token {token_id: {logprob, rank, decoded_token}}


@dataclass
class Tally:
    """Accumulated choices and token counts across all prompts of a request."""

    n: int
    num_prompts: int
    choices: list[ChoiceState] = field(init=False)
    prompt_tokens: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.choices = [ChoiceState() for _ in range(self.n * self.num_prompts)]
        self.prompt_tokens = [0] * self.num_prompts

    def add(self, chunk: GenerationChunk) -> list[Part]:
        """Fold one chunk in; return the parts of it that add text, a finish reason or logprobs."""
        self.prompt_tokens[chunk.prompt_index] = chunk.num_input_tokens
        parts = []
        for seq, text in enumerate(chunk.texts):
            index = chunk.prompt_index * self.n + seq
            state = self.choices[index]
            reason = chunk.finish_reasons[seq] if seq < len(chunk.finish_reasons) else None
            logprobs = chunk.logprobs[seq] if chunk.logprobs else []
            state.text.append(text)
            state.tokens += chunk.num_output_tokens[seq] if seq < len(chunk.num_output_tokens) else 0
            state.logprobs.extend(logprobs)
            if reason and state.finish_reason is None:
                state.finish_reason = reason
            else:
                reason = None
            if text or reason or logprobs:
                parts.append(Part(index, text, reason, logprobs))
        return parts

    def usage(self) -> Usage:
        prompt = sum(self.prompt_tokens)
        completion = sum(c.tokens for c in self.choices)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the HTTP client disconnects first (non-streaming requests)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    logger.info("client disconnected; request cancelled")
    raise APIError(499, "client disconnected")


class Observer:
    """Records what the client sees of one generation request in the frontend's metrics."""

    def __init__(
        self, request: Request, prompts: list[str | list[int]] | None = None, body: SamplingRequest | None = None
    ) -> None:
        self.body = body
        self.metrics = request.app.state.metrics
        self.log_text = request.app.state.settings.log_text
        self.request_id = request.scope.get("state", {}).get("request_id", "-")
        self.prompts = prompts
        self.route = request.url.path
        self.started = request.scope.get("state", {}).get("started", time.perf_counter())
        self.first_seen = False

    def first_text(self) -> None:
        if not self.first_seen:
            self.first_seen = True
            self.metrics.ttft.labels(self.route).observe(time.perf_counter() - self.started)

    def done(self, tally: Tally) -> None:
        self.metrics.tokens.labels(self.route).inc(sum(c.tokens for c in tally.choices))
        if self.log_text:  # debugging only (--log-text): prompts and completions are user data
            texts = ["".join(c.text) for c in tally.choices]
            logger.info("request_id=%s prompts=%r completions=%r", self.request_id, self.prompts, texts)

    def failed(self, exc: TritonError) -> APIError:
        self.metrics.triton_errors.labels(exc.kind).inc()
        return api_error_from(exc, self.body)


async def run_to_end(client: TritonClient, requests: list[GenerateRequest], tally: Tally, observer: Observer) -> Tally:
    try:
        async for chunk in merged_generations(client, requests):
            tally.add(chunk)
    except TritonError as exc:
        raise observer.failed(exc) from None
    observer.done(tally)
    return tally


class Renderer(Protocol):
    """One endpoint's response shapes, from the tally of its choices; each stream event is one protocol.py model."""

    def open(self) -> list[BaseModel]:
        """The events a stream starts with, before any text (chat: the role, once per choice)."""
        ...

    def delta(self, parts: list[Part], usage: Usage | None) -> BaseModel:
        """The event for what one model response added (`usage` so far with continuous_usage_stats)."""
        ...

    def usage(self, usage: Usage) -> BaseModel:
        """The last event before [DONE] when stream_options.include_usage: no choices, the request's usage."""
        ...

    def final(self, tally: Tally) -> BaseModel:
        """The whole response of a request that is not streamed."""
        ...


async def serve(
    request: Request,
    client: TritonClient,
    requests: list[GenerateRequest],
    tally: Tally,
    renderer: Renderer,
    body: SamplingRequest,
    prompts: list[str | list[int]],
) -> BaseModel | StreamingResponse:
    """Run the request's generations and answer: the whole response, or (body.stream) an SSE stream of chunks."""
    observer = Observer(request, prompts, body)
    if not body.stream:
        await cancel_on_disconnect(request, run_to_end(client, requests, tally, observer))
        return renderer.final(tally)
    return await stream_response(client, requests, tally, renderer, body, observer)


async def stream_response(
    client: TritonClient,
    requests: list[GenerateRequest],
    tally: Tally,
    renderer: Renderer,
    body: SamplingRequest,
    observer: Observer,
) -> StreamingResponse:
    """Stream chunks as SSE. The first model response is awaited before answering, so early errors get a status.

    The events: renderer.open(), one renderer.delta() per model response that adds something, an OpenAI error
    event if the model fails on the way, renderer.usage() when asked for, then [DONE].
    """
    continuous_usage = body.continuous_usage
    chunks = merged_generations(client, requests)
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = None
    except TritonError as exc:
        await chunks.aclose()
        raise observer.failed(exc) from None

    async def events() -> AsyncIterator[bytes]:
        try:
            for event in renderer.open():
                yield sse(event)
            pending = [first] if first is not None else []
            while True:
                chunk = pending.pop() if pending else await chunks.__anext__()
                parts = tally.add(chunk)
                if parts:
                    observer.first_text()
                    event = sse(renderer.delta(parts, tally.usage() if continuous_usage else None))
                    if chunk.trace is None:
                        yield event
                        continue
                    # TVO_TRACE=1 (tracing.py): rendered, then written (the server came back for the next event).
                    TRACE_RING.stamp(*chunk.trace, "rendered", getattr(renderer, "id", ""))
                    yield event
                    TRACE_RING.stamp(*chunk.trace, "written")
        except StopAsyncIteration:
            pass
        except TritonError as exc:
            yield sse(observer.failed(exc).body())
        finally:
            await chunks.aclose()
            observer.done(tally)
        if body.include_usage:
            yield sse(renderer.usage(tally.usage()))
        yield DONE

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def build_requests(
    body: SamplingRequest,
    prompts: list[str | list[int]],
    lora_name: str | None,
    include_prompt: bool = False,
    logprobs: bool = False,
) -> list[GenerateRequest]:
    params = body.to_sampling_parameters()
    if lora_name:
        params["lora_name"] = lora_name
    return [
        GenerateRequest(
            prompt=p, sampling_parameters=params, stream=body.stream, include_prompt=include_prompt, logprobs=logprobs
        )
        for p in prompts
    ]
