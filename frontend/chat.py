"""/v1/chat/completions: render the messages with the model's chat template, then the shared generation path."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from frontend.chat_template import render_chat, template_takes
from frontend.errors import bad_request
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
    ChatMessage,
    ChatResponseMessage,
    ChatTokenLogprob,
    ChatTopLogprob,
    ToolCallMessage,
    Usage,
    new_id,
    now,
)
from frontend.tool_calls import ToolOutput, parse_whole
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


async def chat_template(models: ServedModels, template_override: str | None) -> str | None:
    """The template chat prompts are rendered with: --chat-template, else the model's own."""
    return template_override or (await models.tokenizer_facts()).get("chat_template")


async def render_messages(
    messages: list[ChatMessage],
    models: ServedModels,
    template_override: str | None,
    *,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    chat_template_kwargs: dict[str, Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The prompt text for `messages` (the one rendering path of chat completions and /tokenize)."""
    facts = await models.tokenizer_facts()
    return render_chat(
        [message.template_dict() for message in messages],
        template_override or facts.get("chat_template"),
        facts.get("special_tokens") or {},
        add_generation_prompt=add_generation_prompt,
        continue_final_message=continue_final_message,
        template_kwargs=chat_template_kwargs,
        tools=tools,
    )


async def render_prompt(body: ChatCompletionRequest, models: ServedModels, template_override: str | None) -> str:
    return await render_messages(
        body.messages,
        models,
        template_override,
        add_generation_prompt=body.add_generation_prompt,
        continue_final_message=body.continue_final_message,
        chat_template_kwargs=body.chat_template_kwargs,
        tools=body.template_tools(),
    )


async def check_auto_tools(
    body: ChatCompletionRequest, models: ServedModels, template_override: str | None, parser: str | None
) -> None:
    """tool_choice "auto" needs a parser for the model's output and a chat template that shows the model its tools."""
    if body.tool_mode != "auto":
        return
    if parser is None:
        raise bad_request(
            'tool_choice "auto" (the default when tools are given) needs the frontend started with '
            "--tool-call-parser (hermes or llama3_json, the format the model writes calls in); "
            'or send tool_choice "required", "none" or a named function',
            param="tool_choice",
        )
    if not template_takes(await chat_template(models, template_override), "tools"):
        raise bad_request(
            'tool_choice "auto": the chat template does not take tools, so the model would never see them; start '
            "the frontend with --chat-template FILE naming a template that does (for ChatML models: "
            'examples/tool_chat_template_chatml.jinja); or send tool_choice "required" or a named function',
            param="tool_choice",
        )
    if parser == "hermes":
        # As vLLM's hermes parser: <tool_call> is a special token in some tokenizers.
        body.skip_special_tokens = False


def tool_finish_reason(mode: str | None, reason: str | None, called: bool) -> str | None:
    """OpenAI's finish reason: "tool_calls" when "auto" or "required" made calls; named calls end with "stop"."""
    if mode in ("auto", "required") and called and reason == "stop":
        return "tool_calls"
    return reason


def new_tool_output(body: ChatCompletionRequest, parser: str | None) -> ToolOutput | None:
    mode = body.tool_mode
    if mode is None:
        return None
    return ToolOutput(mode, parser, body.tool_choice.function.name if mode == "named" else None)


def response_message(text: str, body: ChatCompletionRequest, parser: str | None) -> tuple[ChatResponseMessage, bool]:
    """The assistant message for one whole choice, and whether it holds tool calls."""
    mode = body.tool_mode
    if mode is None:
        return ChatResponseMessage(content=text), False
    parsed = parse_whole(text, mode, parser, body.tool_choice.function.name if mode == "named" else None)
    if not parsed.calls:
        return ChatResponseMessage(content=parsed.text_content if mode == "auto" else text), False
    calls = [ToolCallMessage(**call.openai()) for call in parsed.calls]
    return ChatResponseMessage(content=parsed.text_content, tool_calls=calls), True


async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    client: TritonClient,
    models: ServedModels,
    template_override: str | None = None,
    tool_call_parser: str | None = None,
) -> ChatCompletionResponse | StreamingResponse:
    body.check_stream_options()
    body.check_tools()
    model_name, lora_name = await models.resolve(body.model)
    await check_auto_tools(body, models, template_override, tool_call_parser)
    mode = body.tool_mode
    prompt = await render_prompt(body, models, template_override)
    requests = build_requests(body, [prompt], lora_name, logprobs=body.logprobs)
    tally = Tally(n=body.n, num_prompts=1)
    request_id = new_id("chatcmpl")
    created = now()
    top = body.top_logprobs or 0

    if not body.stream:
        await cancel_on_disconnect(request, run_to_end(client, requests, tally, Observer(request, [prompt], body)))
        choices = []
        for index, state in enumerate(tally.choices):
            message, called = response_message("".join(state.text), body, tool_call_parser)
            choices.append(
                ChatChoice(
                    index=index,
                    message=message,
                    logprobs=chat_logprobs(state.logprobs, top) if body.logprobs else None,
                    finish_reason=tool_finish_reason(mode, state.finish_reason, called),
                )
            )
        return ChatCompletionResponse(
            id=request_id, created=created, model=model_name, choices=choices, usage=tally.usage()
        )

    tool_outputs = [new_tool_output(body, tool_call_parser) for _ in tally.choices]

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
            delta: dict[str, Any] = {"content": text} if text else {}
            tools = tool_outputs[index]
            if tools is not None:
                delta = tools.feed(text, final=reason is not None).delta()
                reason = tool_finish_reason(mode, reason, bool(tools.calls))
            choice: dict[str, Any] = {
                "index": index,
                "delta": delta,
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
        Observer(request, [prompt], body),
    )
