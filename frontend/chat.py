"""/v1/chat/completions: render the messages with the model's chat template, then the shared generation path."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from frontend.chat_template import render_chat, template_takes
from frontend.errors import bad_request
from frontend.generation import Part, ServedModels, Tally, build_requests, serve
from frontend.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    ChatMessage,
    ChatResponseMessage,
    ChatTokenLogprob,
    ChatTopLogprob,
    ToolCallDelta,
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


class ChatRenderer:
    """/v1/chat/completions' shapes: chat.completion.chunk events while streaming (the role first, tool-call
    deltas as the parser finds them), one ChatCompletionResponse otherwise."""

    def __init__(self, model: str, num_choices: int, body: ChatCompletionRequest, parser: str | None) -> None:
        self.id = new_id("chatcmpl")
        self.created = now()
        self.model = model
        self.num_choices = num_choices
        self.body = body
        self.parser = parser
        self.mode = body.tool_mode
        self.top = body.top_logprobs or 0
        self.tool_outputs = [new_tool_output(body, parser) for _ in range(num_choices)] if body.stream else []

    def _chunk(self, choices: list[ChatChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)

    def open(self) -> list[ChatCompletionChunk]:
        # The stream opens with the role, once per choice.
        return [
            self._chunk([ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))])
            for index in range(self.num_choices)
        ]

    def delta(self, parts: list[Part], usage: Usage | None) -> ChatCompletionChunk:
        choices = []
        for index, text, reason, logprobs in parts:
            tools = self.tool_outputs[index]
            if tools is None:
                delta = ChatDelta(content=text or None)
            else:
                found = tools.feed(text, final=reason is not None)
                calls = [ToolCallDelta.model_validate(call) for call in found.tool_calls] or None
                delta = ChatDelta(content=found.content or None, tool_calls=calls)
                reason = tool_finish_reason(self.mode, reason, bool(tools.calls))
            choices.append(
                ChatChunkChoice(
                    index=index,
                    delta=delta,
                    logprobs=chat_logprobs(logprobs, self.top) if self.body.logprobs else None,
                    finish_reason=reason,
                )
            )
        return self._chunk(choices, usage)

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        return self._chunk([], usage)

    def final(self, tally: Tally) -> ChatCompletionResponse:
        choices = []
        for index, state in enumerate(tally.choices):
            message, called = response_message("".join(state.text), self.body, self.parser)
            choices.append(
                ChatChoice(
                    index=index,
                    message=message,
                    logprobs=chat_logprobs(state.logprobs, self.top) if self.body.logprobs else None,
                    finish_reason=tool_finish_reason(self.mode, state.finish_reason, called),
                )
            )
        return ChatCompletionResponse(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=tally.usage()
        )


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
    prompt = await render_prompt(body, models, template_override)
    requests = build_requests(body, [prompt], lora_name, logprobs=body.logprobs)
    tally = Tally(n=body.n, num_prompts=1)
    renderer = ChatRenderer(model_name, len(tally.choices), body, tool_call_parser)
    return await serve(request, client, requests, tally, renderer, body, [prompt])
