"""/v1/chat/completions: render the messages with the model's chat template, then the shared generation path."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from frontend.chat_template import render_chat
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
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatResponseMessage,
    ChatTokenLogprob,
    ChatTopLogprob,
    Usage,
    new_id,
    now,
)
from frontend.triton import TritonClient


def _token(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def chat_logprobs(entries: list[dict[str, Any]], top: int) -> ChatLogprobs:
    """OpenAI's chat logprobs from the model's per-token {token_id: {logprob, rank, decoded_token}}."""
    content = []
    for entry in entries:
        infos = list(entry.values())
        if not infos:
            continue
        sampled = infos[0]
        ranked = sorted(infos, key=lambda info: info.get("rank") or 0)[:top]
        content.append(
            ChatTokenLogprob(
                **_token(sampled.get("decoded_token") or "", sampled["logprob"]),
                top_logprobs=[ChatTopLogprob(**_token(i.get("decoded_token") or "", i["logprob"])) for i in ranked],
            )
        )
    return ChatLogprobs(content=content)


async def render_prompt(body: ChatCompletionRequest, models: ServedModels, template_override: str | None) -> str:
    facts = await models.tokenizer_facts()
    return render_chat(
        [message.template_dict() for message in body.messages],
        template_override or facts.get("chat_template"),
        facts.get("special_tokens") or {},
        add_generation_prompt=body.add_generation_prompt,
        continue_final_message=body.continue_final_message,
        template_kwargs=body.chat_template_kwargs,
    )


async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    client: TritonClient,
    models: ServedModels,
    template_override: str | None = None,
) -> ChatCompletionResponse | StreamingResponse:
    body.check_stream_options()
    model_name, lora_name = await models.resolve(body.model)
    prompt = await render_prompt(body, models, template_override)
    requests = build_requests(body, [prompt], lora_name, logprobs=body.logprobs)
    tally = Tally(n=body.n, num_prompts=1)
    request_id = new_id("chatcmpl")
    created = now()
    top = body.top_logprobs or 0

    if not body.stream:
        await cancel_on_disconnect(request, run_to_end(client, requests, tally, Observer(request, [prompt])))
        choices = [
            ChatChoice(
                index=index,
                message=ChatResponseMessage(content="".join(state.text)),
                logprobs=chat_logprobs(state.logprobs, top) if body.logprobs else None,
                finish_reason=state.finish_reason,
            )
            for index, state in enumerate(tally.choices)
        ]
        return ChatCompletionResponse(
            id=request_id, created=created, model=model_name, choices=choices, usage=tally.usage()
        )

    def chunk(choices: list[dict[str, Any]], usage: Usage | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_name,
            "choices": choices,
        }
        if usage is not None:
            payload["usage"] = usage.model_dump()
        return payload

    def render(parts, usage: Usage | None) -> list[dict[str, Any]]:
        if not parts:
            # The stream opens with the role, once per choice.
            return [
                chunk(
                    [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
                for i in range(len(tally.choices))
            ]
        choices = []
        for index, text, reason, logprobs in parts:
            choice: dict[str, Any] = {
                "index": index,
                "delta": {"content": text} if text else {},
                "logprobs": chat_logprobs(logprobs, top).model_dump() if body.logprobs else None,
                "finish_reason": reason,
            }
            choices.append(choice)
        return [chunk(choices, usage)]

    def final_usage(usage: Usage) -> dict[str, Any]:
        return chunk([], usage)

    return await stream_response(
        client,
        requests,
        tally,
        render,
        final_usage if body.include_usage else None,
        body.continuous_usage,
        Observer(request, [prompt]),
    )
