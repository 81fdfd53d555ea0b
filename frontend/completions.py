"""/v1/completions: OpenAI's text completion shape over the shared generation path."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from frontend.generation import Part, ServedModels, Tally, build_requests, serve
from frontend.protocol import (
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
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


class CompletionRenderer:
    """/v1/completions' shapes: text_completion chunks while streaming, one CompletionResponse otherwise."""

    def __init__(self, model: str, num_choices: int, logprobs: bool) -> None:
        self.id = new_id("cmpl")
        self.created = now()
        self.model = model
        self.logprobs = logprobs
        self.offsets = [0] * num_choices  # each choice's text length so far: its logprobs' text_offset

    def open(self) -> list[CompletionChunk]:
        return []

    def _chunk(self, choices: list[CompletionChunkChoice], usage: Usage | None = None) -> CompletionChunk:
        return CompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)

    def delta(self, parts: list[Part], usage: Usage | None) -> CompletionChunk:
        choices = []
        for index, text, reason, logprobs in parts:
            choice = CompletionChunkChoice(index=index, text=text, finish_reason=reason)
            if self.logprobs:
                choice.logprobs = completion_logprobs(logprobs, self.offsets[index])
                self.offsets[index] += len(text)
            choices.append(choice)
        return self._chunk(choices, usage)

    def usage(self, usage: Usage) -> CompletionChunk:
        return self._chunk([], usage)

    def final(self, tally: Tally) -> CompletionResponse:
        choices = [
            CompletionChoice(
                index=index,
                text="".join(state.text),
                logprobs=completion_logprobs(state.logprobs, 0) if self.logprobs else None,
                finish_reason=state.finish_reason,
            )
            for index, state in enumerate(tally.choices)
        ]
        return CompletionResponse(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=tally.usage()
        )


async def create_completion(
    body: CompletionRequest, request: Request, client: TritonClient, models: ServedModels
) -> CompletionResponse | StreamingResponse:
    body.check_stream_options()
    model_name, lora_name = await models.resolve(body.model)
    prompts = body.prompts()
    want_logprobs = body.logprobs is not None
    requests = build_requests(body, prompts, lora_name, include_prompt=body.echo, logprobs=want_logprobs)
    tally = Tally(n=body.n, num_prompts=len(prompts))
    renderer = CompletionRenderer(model_name, len(tally.choices), want_logprobs)
    return await serve(request, client, requests, tally, renderer, body, prompts)
