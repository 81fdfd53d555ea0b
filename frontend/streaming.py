"""Server-sent events framing, once; and running one generation per prompt concurrently as one stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import BaseModel

from frontend.triton import GenerateRequest, GenerationChunk, TritonClient

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(payload: BaseModel | dict[str, Any]) -> bytes:
    """One SSE event carrying a JSON object: a stream chunk model, or an error body."""
    if isinstance(payload, BaseModel):
        # model_dump_json's bytes, without the str round trip.
        data = payload.__pydantic_serializer__.to_json(payload)
    else:
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return b"data: " + data + b"\n\n"


_END = object()


async def merged_generations(
    client: TritonClient, requests: Sequence[GenerateRequest]
) -> AsyncIterator[GenerationChunk]:
    """Run one Triton request per prompt at the same time; yield their chunks as they come, tagged by prompt.

    If any prompt fails, the others are cancelled and the error is raised. Leaving early cancels them all.
    """
    if len(requests) == 1:
        async for chunk in client.generate(requests[0]):
            yield chunk
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, request: GenerateRequest) -> None:
        try:
            async for chunk in client.generate(request):
                chunk.prompt_index = index
                await queue.put(chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            await queue.put(exc)
            return
        await queue.put(_END)

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
    remaining = len(tasks)
    try:
        while remaining:
            item = await queue.get()
            if item is _END:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
