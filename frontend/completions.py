"""/v1/completions: OpenAI's text completion shape over the shared generation path."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from frontend.generation import (
    Observer,
    ServedModels,
    Tally,
    build_requests,
    cancel_on_disconnect,
    run_to_end,
    stream_response,
)
from frontend.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Usage,
    new_id,
    now,
)
from frontend.triton import TritonClient


def completion_logprobs(entries: list[dict[str, Any]], start_offset: int) -> CompletionLogprobs:
    """OpenAI's completions logprobs from the model's per-token {token_id: {logprob, rank, decoded_token}}."""
    result = CompletionLogprobs()
    offset = start_offset
    for entry in entries:
        infos = list(entry.values())
        sampled = infos[0] if infos else {"decoded_token": "", "logprob": None}
        token = sampled.get("decoded_token") or ""
        result.tokens.append(token)
        result.token_logprobs.append(sampled.get("logprob"))
        result.top_logprobs.append({info.get("decoded_token") or "": info["logprob"] for info in infos})
        result.text_offset.append(offset)
        offset += len(token)
    return result


async def create_completion(
    body: CompletionRequest, request: Request, client: TritonClient, models: ServedModels
) -> CompletionResponse | StreamingResponse:
    body.check_stream_options()
    model_name, lora_name = await models.resolve(body.model)
    prompts = body.prompts()
    want_logprobs = body.logprobs is not None
    requests = build_requests(body, prompts, lora_name, include_prompt=body.echo, logprobs=want_logprobs)
    tally = Tally(n=body.n, num_prompts=len(prompts))
    request_id = new_id("cmpl")
    created = now()

    if not body.stream:
        await cancel_on_disconnect(request, run_to_end(client, requests, tally, Observer(request, prompts, body)))
        choices = []
        for index, state in enumerate(tally.choices):
            logprobs = completion_logprobs(state.logprobs, 0) if want_logprobs else None
            choices.append(
                CompletionChoice(
                    index=index, text="".join(state.text), logprobs=logprobs, finish_reason=state.finish_reason
                )
            )
        return CompletionResponse(
            id=request_id, created=created, model=model_name, choices=choices, usage=tally.usage()
        )

    offsets = [0] * len(tally.choices)

    def render(parts, usage: Usage | None) -> list[dict[str, Any]]:
        if not parts:
            return []
        choices = []
        for index, text, reason, logprobs in parts:
            choice: dict[str, Any] = {"index": index, "text": text, "logprobs": None, "finish_reason": reason}
            if want_logprobs:
                choice["logprobs"] = completion_logprobs(logprobs, offsets[index]).model_dump()
                offsets[index] += len(text)
            choices.append(choice)
        payload: dict[str, Any] = {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": model_name,
            "choices": choices,
        }
        if usage is not None:
            payload["usage"] = usage.model_dump()
        return [payload]

    def final_usage(usage: Usage) -> dict[str, Any]:
        return {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": model_name,
            "choices": [],
            "usage": usage.model_dump(),
        }

    return await stream_response(
        client,
        requests,
        tally,
        render,
        final_usage if body.include_usage else None,
        body.continuous_usage,
        Observer(request, prompts, body),
    )
