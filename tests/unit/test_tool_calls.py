"""Tool calling's pure logic: the parsers (whole and streamed, in every split), the forced-call schemas, the request
checks, and the example tool template."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from frontend.chat_template import render_chat, template_takes
from frontend.errors import APIError
from frontend.protocol import ChatCompletionRequest
from frontend.tool_calls import CallScanner, ToolOutput, named_schema, parse_whole, required_schema

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TEMPLATE = (REPO / "examples" / "tool_chat_template_chatml.jinja").read_text()
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def stream(text: str, step: int, mode: str = "auto", parser: str | None = "hermes", name: str | None = None):
    """Feed `text` in pieces of `step` characters; return the output and the OpenAI deltas it produced."""
    output = ToolOutput(mode, parser, name)
    deltas = []
    for start in range(0, len(text), step):
        delta = output.feed(text[start : start + step], final=start + step >= len(text)).delta()
        if delta:
            deltas.append(delta)
    return output, deltas


def joined(deltas: list[dict]) -> tuple[str, list[dict]]:
    """Content and calls as a client accumulates them from deltas (checking OpenAI's order: id and name first)."""
    content, calls = "", {}
    for delta in deltas:
        content += delta.get("content", "")
        for entry in delta.get("tool_calls", ()):
            if entry["index"] not in calls:
                assert entry["id"].startswith("call_") and entry["type"] == "function" and entry["function"]["name"]
                calls[entry["index"]] = {"name": entry["function"]["name"], "arguments": ""}
            else:
                assert "id" not in entry and "name" not in entry["function"]
            calls[entry["index"]]["arguments"] += entry["function"]["arguments"]
    return content, [calls[i] for i in sorted(calls)]


HERMES = (
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "nested": [1, {"s": "}]"}]}}'
    '\n</tool_call>\n<tool_call>\n{"arguments": {"zone": "CET"}, "name": "get_time"}\n</tool_call>'
)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_hermes_calls_and_content_in_any_split(step):
    output, deltas = stream(HERMES, step)
    content, calls = joined(deltas)
    assert content == "Let me check.\n\n"
    assert calls == [
        {"name": "get_weather", "arguments": '{"city": "Paris", "nested": [1, {"s": "}]"}]}'},
        {"name": "get_time", "arguments": '{"zone": "CET"}'},  # arguments before the name: held, then sent
    ]
    assert [(c.name, c.arguments) for c in output.calls] == [(c["name"], c["arguments"]) for c in calls]


def test_hermes_whole_output():
    parsed = parse_whole(HERMES, "auto", "hermes")
    assert parsed.text_content == "Let me check.\n\n"
    assert [json.loads(c.arguments) for c in parsed.calls] == [
        {"city": "Paris", "nested": [1, {"s": "}]"}]},
        {"zone": "CET"},
    ]
    assert len({c.id for c in parsed.calls}) == 2


def test_hermes_only_calls_means_no_content():
    parsed = parse_whole('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n', "auto", "hermes")
    assert parsed.text_content is None and parsed.calls[0].arguments == "{}"


@pytest.mark.parametrize(
    "text",
    [
        "Just an answer, no tools.",
        "a < b and <tool is not a tag",
        '<tool_call>{"name": "f", "arguments": {"x": </tool_call>',  # broken JSON
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
    ],
)
def test_hermes_text_without_a_complete_call_is_content(text):
    parsed = parse_whole(text, "auto", "hermes")
    assert parsed.calls == [] and parsed.text_content == text


def test_hermes_streamed_block_without_a_call_comes_back_as_content():
    text = "a <tool_call>not json</tool_call> b"
    _, deltas = stream(text, 2)
    assert joined(deltas) == (text, [])


def test_hermes_holds_back_a_partial_tag_then_releases_it():
    output = ToolOutput("auto", "hermes")
    assert output.feed("Hi <tool").delta() == {"content": "Hi "}
    assert output.feed("box> there").delta() == {"content": "<toolbox> there"}
    assert output.feed(" <tool_c", final=True).delta() == {"content": " <tool_c"}


def test_hermes_string_arguments_are_decoded():
    parsed = parse_whole('<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>', "auto", "hermes")
    assert parsed.calls[0].arguments == '{"x": 1}'


LLAMA = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}'


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_llama3_json_calls_in_any_split(step):
    output, deltas = stream(LLAMA, step, parser="llama3_json")
    content, calls = joined(deltas)
    assert content == ""
    assert calls == [
        {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"name": "get_time", "arguments": "{}"},
    ]
    assert output.text_content is None


def test_llama3_json_without_the_tag():
    parsed = parse_whole(' {"name": "f", "parameters": {"a": [1, 2]}}', "auto", "llama3_json")
    assert [(c.name, c.arguments) for c in parsed.calls] == [("f", '{"a": [1, 2]}')]


@pytest.mark.parametrize("text", ["Paris is sunny.", 'I would call {"name": "f", "parameters": {}}', "<|python"])
def test_llama3_json_text_is_content(text):
    parsed = parse_whole(text, "auto", "llama3_json")
    assert parsed.calls == [] and parsed.text_content == text
    _, deltas = stream(text, 1, parser="llama3_json")
    assert joined(deltas) == (text, [])


def test_required_array_streamed():
    text = '[{"name": "get_weather", "parameters": {"city": "Tokyo"}}, {"name": "get_time", "parameters": {"z": 1}}]'
    output, deltas = stream(text, 1, mode="required", parser=None)
    assert joined(deltas) == (
        "",
        [
            {"name": "get_weather", "arguments": '{"city": "Tokyo"}'},
            {"name": "get_time", "arguments": '{"z": 1}'},
        ],
    )
    assert len(output.calls) == 2


def test_named_output_is_the_arguments():
    output, deltas = stream('{"city": "Paris"}', 3, mode="named", parser=None, name="get_weather")
    assert joined(deltas) == ("", [{"name": "get_weather", "arguments": '{"city": "Paris"}'}])
    assert parse_whole('{"city": "Paris"}', "named", None, "get_weather").calls[0].name == "get_weather"


def test_scanner_events_name_first():
    events = CallScanner(call_depth=1).feed('{"arguments": {"a": 1}, "name": "f"}')
    assert events[0] == ("start", "f")
    assert "".join(v for k, v in events if k == "args") == '{"a": 1}'
    assert events[-1] == ("end", "")


# ---- schemas for forced calls ----


def test_required_schema_accepts_calls_and_rejects_others():
    schema = required_schema([("get_weather", WEATHER), ("noop", None)], parallel=True)
    jsonschema.Draft202012Validator.check_schema(schema)
    good = [{"name": "get_weather", "parameters": {"city": "Paris"}}, {"name": "noop", "parameters": {}}]
    jsonschema.validate(good, schema)
    for bad in ([], [{"name": "other", "parameters": {}}], [{"name": "get_weather", "parameters": {}}]):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    single = required_schema([("get_weather", WEATHER)], parallel=False)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(good[:1] * 2, single)


def test_named_schema_is_the_parameters_or_any_object():
    assert named_schema(WEATHER) == WEATHER
    assert named_schema(None) == {"type": "object", "properties": {}}


def body(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]


def test_tool_modes_and_their_sampling_parameters():
    assert body().tool_mode is None
    assert body(tools=TOOLS, tool_choice="none").tool_mode is None
    assert body(tools=TOOLS).tool_mode == "auto"
    assert "structured_outputs" not in body(tools=TOOLS).to_sampling_parameters()
    named = body(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert named.tool_mode == "named"
    assert named.to_sampling_parameters()["structured_outputs"] == {"json": WEATHER}
    required = body(tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    schema = required.to_sampling_parameters()["structured_outputs"]["json"]
    assert schema["type"] == "array" and schema["maxItems"] == 1


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS * 2}, "tools"),
        ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_tool_checks_name_the_field(fields, param):
    with pytest.raises(APIError) as raised:
        body(**fields).check_tools()
    assert raised.value.status == 400 and raised.value.param == param


@pytest.mark.parametrize(
    "function",
    [{"parameters": WEATHER}, {"name": ""}, {"name": "f", "parameters": {"type": 5}}, {"name": "f", "parameters": []}],
)
def test_bad_function_definitions_are_rejected(function):
    with pytest.raises(ValueError):
        body(tools=[{"type": "function", "function": function}])


def test_assistant_tool_calls_reach_the_template_with_parsed_arguments():
    request = body(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ]
    )
    assistant, tool = (m.template_dict() for m in request.messages[1:])
    assert assistant["tool_calls"][0]["function"] == {"name": "f", "arguments": {"a": 1}}
    assert assistant["content"] == "" and tool["tool_call_id"] == "c1"


# ---- the example template ----

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_example_template_takes_tools_and_is_plain_chatml_without_them():
    assert template_takes(EXAMPLE_TEMPLATE, "tools") and not template_takes(CHATML, "tools")
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
    assert render_chat(messages, EXAMPLE_TEMPLATE, {}) == render_chat(messages, CHATML, {})


def test_example_template_renders_calls_as_the_hermes_parser_reads_them():
    tools = [t["function"] for t in TOOLS]
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "P"}}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "sunny"},
    ]
    prompt = render_chat(messages, EXAMPLE_TEMPLATE, {}, tools=tools)
    assert json.loads(prompt.split("<tools>\n")[1].split("\n</tools>")[0]) == tools[0]
    assistant_turn = prompt.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    parsed = parse_whole(assistant_turn, "auto", "hermes")
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [("get_weather", {"city": "P"})]
    assert "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_tool_call_parser_setting():
    from frontend.settings import parse_settings

    assert parse_settings([], env={}).tool_call_parser is None
    assert parse_settings(["--tool-call-parser", "hermes"], env={}).tool_call_parser == "hermes"
    assert parse_settings([], env={"TOOL_CALL_PARSER": "llama3_json"}).tool_call_parser == "llama3_json"
    with pytest.raises(SystemExit):
        parse_settings(["--tool-call-parser", "mistral"], env={})
