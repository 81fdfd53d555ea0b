"""Tool calling on /v1/chat/completions through the real stack, with the openai SDK.

The tiny test model has random weights: left alone ("auto") it practically never writes a tool call. So:
- named and "required" calls are checked for real: the engine's structured outputs force valid arguments;
- "auto" is checked end to end where it is deterministic: plain answers come back as content, and the llama3_json
  parser reads a call that the engine was made to write (a response_format schema of a llama3 call object);
- the parsers themselves are unit-tested on real model formats (tests/unit/test_tool_calls.py).
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from launcher.stack import FrontendProcess
from tests.conftest import MODEL_NAME, REPO, free_port
from tests.integration.test_chat import whitespace_bias
from tests.integration.test_completions import assert_openai_error

TEMPLATE = str(REPO / "examples" / "tool_chat_template_chatml.jinja")
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Tokyo"]},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def frontends(triton_grpc_url, tmp_path_factory):
    """Extra frontends on the session's Triton, each with its own tool settings; started on first use."""
    started: dict[str, FrontendProcess] = {}
    log_dir = tmp_path_factory.mktemp("tool-frontends")

    def get(name: str, *args: str, api_key: str | None = None) -> str:
        if name not in started:
            process = FrontendProcess(
                port=free_port(), triton_grpc=triton_grpc_url, api_key=api_key, args=list(args), log_path=log_dir / name
            )
            process.start()
            started[name] = process
        return started[name].base_url

    yield get
    for process in started.values():
        process.stop()


@pytest.fixture(scope="module")
def hermes_url(frontends):
    return frontends("hermes", "--chat-template", TEMPLATE, "--tool-call-parser", "hermes")


@pytest.fixture(scope="module")
def hermes_client(hermes_url):
    import openai

    return openai.OpenAI(base_url=f"{hermes_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def forced(tokenizer):
    """Greedy settings for forced calls: whitespace banned (the untrained model would fill max_tokens with the
    whitespace JSON allows; see test_chat.whitespace_bias)."""
    return {"temperature": 0, "max_tokens": 200, "logit_bias": whitespace_bias(tokenizer)}


def create(client, messages=None, **kwargs):
    return client.chat.completions.create(model=MODEL_NAME, messages=messages or QUESTION, **kwargs)


def streamed(client, **kwargs) -> tuple[list[dict], list]:
    """The stream's tool calls joined by index (each {id, name, arguments}), and its chunks."""
    chunks = list(create(client, stream=True, **kwargs))
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                if delta.index not in calls:
                    # OpenAI's shape: a call's first delta carries its id, type and name.
                    assert delta.id and delta.type == "function" and delta.function.name
                    calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
                else:
                    assert delta.id is None and not delta.function.name
                calls[delta.index]["arguments"] += delta.function.arguments or ""
    return [calls[i] for i in sorted(calls)], chunks


def finish_reasons(chunks) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


def assert_valid_call(name: str, arguments: str) -> dict:
    parsed = json.loads(arguments)
    jsonschema.validate(parsed, SCHEMAS[name])
    return parsed


# ---- named function: guaranteed-valid arguments ----

NAMED = {"type": "function", "function": {"name": "get_weather"}}


def test_named_function_returns_valid_arguments(openai_client, forced):
    result = create(openai_client, tools=TOOLS, tool_choice=NAMED, **forced)
    choice = result.choices[0]
    assert choice.finish_reason == "stop"  # OpenAI's (and vLLM's) finish reason for a named call
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert_valid_call("get_weather", call.function.arguments)


def test_named_function_streamed_equals_whole(openai_client, forced):
    whole = create(openai_client, tools=TOOLS, tool_choice=NAMED, **forced).choices[0].message.tool_calls[0]
    calls, chunks = streamed(openai_client, tools=TOOLS, tool_choice=NAMED, **forced)
    assert [(c["name"], c["arguments"]) for c in calls] == [("get_weather", whole.function.arguments)]
    assert finish_reasons(chunks) == ["stop"]
    assert not any(c.choices[0].delta.content for c in chunks if c.choices)


def test_without_tool_choice_the_same_request_is_not_a_call(openai_client, forced):
    """The schema from the tool, not the prompt, makes the output valid arguments (so the tests above can fail)."""
    result = create(openai_client, **{**forced, "max_tokens": 20})
    with pytest.raises(ValueError):
        assert_valid_call("get_weather", result.choices[0].message.content)


# ---- "required": an anyOf over the tools ----


def test_required_returns_one_valid_call(openai_client, forced):
    result = create(openai_client, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, **forced)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name in SCHEMAS
    assert_valid_call(call.function.name, call.function.arguments)


def test_required_streamed_equals_whole(openai_client, forced):
    kwargs = {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False, **forced}
    whole = create(openai_client, **kwargs).choices[0].message.tool_calls
    calls, chunks = streamed(openai_client, **kwargs)
    assert [c["name"] for c in calls] == [c.function.name for c in whole]
    assert [json.loads(c["arguments"]) for c in calls] == [json.loads(c.function.arguments) for c in whole]
    assert finish_reasons(chunks) == ["tool_calls"]


def test_required_parallel_calls_are_each_valid(openai_client, forced):
    """With parallel_tool_calls (the default) the model may write several calls; each complete one is valid."""
    result = create(openai_client, tools=TOOLS, tool_choice="required", **forced)
    choice = result.choices[0]
    assert choice.message.tool_calls
    complete = choice.message.tool_calls if choice.finish_reason == "tool_calls" else choice.message.tool_calls[:-1]
    for call in complete:
        assert_valid_call(call.function.name, call.function.arguments)


# ---- "none" ----


def test_none_is_a_plain_answer_and_tools_reach_the_template(openai_client, hermes_client):
    plain = create(openai_client, temperature=0, max_tokens=12)
    none = create(openai_client, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=12)
    # The model's own ChatML template ignores tools: the same prompt, the same answer.
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].message.content == plain.choices[0].message.content
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens
    # The tool template shows them to the model (as vLLM does, for tool_choice "none" too).
    with_template = create(hermes_client, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=12)
    assert with_template.usage.prompt_tokens > plain.usage.prompt_tokens + 50
    assert with_template.choices[0].message.tool_calls is None


def test_none_streamed_is_plain_content(hermes_client):
    kwargs = {"tools": TOOLS, "tool_choice": "none", "temperature": 0, "max_tokens": 12}
    whole = create(hermes_client, **kwargs).choices[0]
    calls, chunks = streamed(hermes_client, **kwargs)
    assert calls == []
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.message.content
    assert finish_reasons(chunks) == [whole.finish_reason]


# ---- "auto" ----


def test_auto_without_a_parser_is_400_naming_the_flag(base_url):
    for extra in ({"tool_choice": "auto"}, {}):  # tools without tool_choice mean "auto", as in OpenAI's API
        body = {"model": MODEL_NAME, "messages": QUESTION, "tools": TOOLS, **extra}
        response = httpx.post(f"{base_url}/v1/chat/completions", json=body)
        assert_openai_error(response, 400, param="tool_choice", contains="--tool-call-parser")


def test_auto_with_a_template_without_tools_is_400_naming_the_fix(frontends):
    url = frontends("parser-only", "--tool-call-parser", "hermes")
    body = {"model": MODEL_NAME, "messages": QUESTION, "tools": TOOLS}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert_openai_error(response, 400, param="tool_choice", contains="--chat-template")
    # Forced calls do not need the model to see the tools, so they still work there.
    forced = {**body, "tool_choice": "required", "max_tokens": 2}
    assert httpx.post(f"{url}/v1/chat/completions", json=forced, timeout=60).status_code == 200


def test_auto_plain_answer_is_content(hermes_client):
    """What the tiny model does in auto mode: it writes no <tool_call>, so its answer is content."""
    kwargs = {"tools": TOOLS, "temperature": 0, "max_tokens": 24}
    auto = create(hermes_client, tool_choice="auto", **kwargs)
    # The same generation without parsing (hermes mode keeps special tokens, as vLLM's hermes parser).
    none = create(hermes_client, tool_choice="none", extra_body={"skip_special_tokens": False}, **kwargs)
    choice = auto.choices[0]
    assert "<tool_call>" not in none.choices[0].message.content
    assert choice.message.tool_calls is None
    assert choice.message.content == none.choices[0].message.content
    assert choice.finish_reason == none.choices[0].finish_reason
    calls, chunks = streamed(hermes_client, tool_choice="auto", **kwargs)
    assert calls == []
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == choice.message.content


LLAMA_CALL = {
    "type": "object",
    "properties": {"name": {"type": "string", "enum": ["get_weather"]}, "parameters": WEATHER},
    "required": ["name", "parameters"],
    "additionalProperties": False,
}


def test_auto_llama3_json_parser_reads_a_call(frontends, forced):
    """The llama3_json parser in auto mode, end to end: the engine is made to write a llama3 call object (a
    response_format schema), and the parser turns that text into a tool call, streamed and not."""
    import openai

    url = frontends("llama3", "--chat-template", TEMPLATE, "--tool-call-parser", "llama3_json")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    kwargs = {
        "tools": TOOLS,
        "response_format": {"type": "json_schema", "json_schema": {"name": "call", "schema": LLAMA_CALL}},
        **forced,
    }
    result = create(client, **kwargs)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    arguments = assert_valid_call("get_weather", call.function.arguments)
    calls, chunks = streamed(client, **kwargs)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", arguments)]
    assert finish_reasons(chunks) == ["tool_calls"]


# ---- a full round trip: call, tool result, final answer ----


def test_round_trip_call_tool_result_answer(hermes_client, hermes_url, forced):
    first = create(hermes_client, tools=TOOLS, tool_choice=NAMED, **forced)
    message = first.choices[0].message
    call = message.tool_calls[0]
    messages = [
        *QUESTION,
        message.model_dump(exclude_none=True),  # the assistant message as the SDK gives it back
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    final = create(hermes_client, messages, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=16)
    answer = final.choices[0]
    assert isinstance(answer.message.content, str) and answer.message.content
    assert answer.message.tool_calls is None
    # The template rendered the call and its result into the prompt: /tokenize counts the same prompt.
    tokenized = httpx.post(f"{hermes_url}/tokenize", json={"model": MODEL_NAME, "messages": messages, "tools": TOOLS})
    assert tokenized.status_code == 200, tokenized.text
    assert tokenized.json()["count"] == final.usage.prompt_tokens
    prompt = httpx.post(f"{hermes_url}/detokenize", json={"tokens": tokenized.json()["tokens"]}).json()["prompt"]
    arguments = json.dumps(json.loads(call.function.arguments), ensure_ascii=False)
    assert f'<tool_call>\n{{"name": "get_weather", "arguments": {arguments}}}\n</tool_call>' in prompt
    assert '<tool_response>\n{"temperature": 21}\n</tool_response>' in prompt


# ---- bad tools: 400 naming the field, and the server keeps serving ----


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"parameters": WEATHER}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools.0.function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]},
            "tools.0.function.parameters",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": "not a schema"}}]},
            "tools.0.function.parameters",
        ),
        ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools.0.type"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, None),
        ({"tools": [TOOLS[0], TOOLS[0]], "tool_choice": "required"}, "tools"),
        (
            {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
        ),
    ],
    ids=[
        "no-name",
        "empty-name",
        "bad-schema",
        "schema-not-object",
        "not-function",
        "unknown-named",
        "required-no-tools",
        "bad-choice",
        "duplicate",
        "with-format",
    ],
)
def test_bad_tools_are_400_naming_the_field(base_url, extra, param):
    body = {"model": MODEL_NAME, "messages": QUESTION, "max_tokens": 2, **extra}
    error = assert_openai_error(httpx.post(f"{base_url}/v1/chat/completions", json=body), 400)
    if param:
        assert error["param"] == param, error
    else:
        assert (error["param"] or "").startswith("tool_choice"), error
    ok = {"model": MODEL_NAME, "messages": QUESTION, "max_tokens": 2}
    assert httpx.post(f"{base_url}/v1/chat/completions", json=ok).status_code == 200
