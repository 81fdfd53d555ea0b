"""A stand-in for frontend.triton.TritonClient: hand-built GenerationChunks per prompt, no stack.

The app under test is the real one (create_app); only the client that would speak gRPC to Triton is replaced.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from frontend.app import create_app
from frontend.generation import ServedModels
from frontend.settings import Settings
from frontend.triton import GenerateRequest, GenerationChunk, TritonError

MODEL = "fake-model"
# Reads `tools`, so tool_choice "auto" is allowed with a parser.
TEMPLATE = (
    "{% if tools %}tools: {{ tools | length }}\n{% endif %}"
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
INFO = {
    "served_model_name": MODEL,
    "model": "/models/fake",
    "loras": [],
    "max_model_len": 512,
    "created": 0,
    "chat_template": TEMPLATE,
    "special_tokens": {},
}

Script = list[GenerationChunk | BaseException]


def chunk(
    texts: list[str],
    reasons: list[str | None] | None = None,
    num_output: list[int] | None = None,
    num_input: int = 3,
    logprobs: list[list[dict[str, Any]]] | None = None,
) -> GenerationChunk:
    """One model response: per sequence its text delta, finish reason and output-token count."""
    return GenerationChunk(
        texts=texts,
        finish_reasons=reasons if reasons is not None else [None] * len(texts),
        num_input_tokens=num_input,
        num_output_tokens=num_output if num_output is not None else [1 if t else 0 for t in texts],
        logprobs=logprobs,
        final=bool(reasons) and all(reasons),
    )


def entry(*tokens: tuple[int, float, int, str]) -> dict[str, Any]:
    """One position's logprobs as the model sends them: {token_id: {logprob, rank, decoded_token}}."""
    return {str(tid): {"logprob": lp, "rank": rank, "decoded_token": text} for tid, lp, rank, text in tokens}


class FakeTriton:
    """generate() plays `script(request)` back: chunks are yielded, an exception in it is raised there."""

    def __init__(self, script: Callable[[GenerateRequest], Script] | Script) -> None:
        self.script = script if callable(script) else (lambda _request: script)
        self.requests: list[GenerateRequest] = []
        self.closed = 0

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        try:
            for item in self.script(request):
                if isinstance(item, BaseException):
                    raise item
                yield copy.deepcopy(item)
        finally:
            self.closed += 1

    async def info(self, refresh: bool = False) -> dict[str, Any]:
        return INFO

    async def close(self) -> None:
        pass


def client_for(fake: FakeTriton, **settings: Any) -> httpx.AsyncClient:
    """An HTTP client on the real app, whose Triton client is `fake`."""
    app = create_app(Settings(**settings))
    app.state.triton = fake
    app.state.models = ServedModels(fake)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://frontend")


def sse_events(body: bytes) -> list[Any]:
    """The body's SSE events in order: each event's JSON, or the string "[DONE]". Fails on any other framing."""
    assert body.endswith(b"\n\n"), body[-40:]
    events = []
    for frame in body[:-2].split(b"\n\n"):
        assert frame.startswith(b"data: ") and b"\n" not in frame, frame
        data = frame[len(b"data: ") :]
        events.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return events


_VOLATILE = re.compile(rb'"id":"(cmpl-|chatcmpl-|call_)[0-9a-f]+"|"created":\d+')


def stable(body: bytes) -> bytes:
    """The body with its random ids and clock time replaced (for comparing whole bodies byte for byte)."""
    return _VOLATILE.sub(lambda m: b'"created":0' if m.group(0).startswith(b'"created"') else b'"id":"ID"', body)


def model_error(message: str = "sampling parameter 'max_tokens' is too large: 9999") -> TritonError:
    return TritonError(message, "invalid")
