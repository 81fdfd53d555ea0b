"""/v1/chat/completions through the real stack: the model's chat template, parity with vLLM's LLM.chat,
streaming shape, structured output, and bad input."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from launcher.stack import FrontendProcess
from tests.conftest import CHAT_MESSAGES, GREEDY, MODEL_NAME, free_port
from tests.integration.test_completions import assert_openai_error

LONG_KW = {"temperature": 0, "max_tokens": 16, "extra_body": {"ignore_eos": True}}


def chat(client, messages=None, **kwargs):
    messages = messages or [{"role": "user", "content": "Hello!"}]
    return client.chat.completions.create(model=MODEL_NAME, messages=messages, **kwargs)


@pytest.mark.parametrize("index", range(len(CHAT_MESSAGES)))
def test_greedy_chat_equals_offline_vllm_chat(openai_client, reference, index):
    result = chat(openai_client, CHAT_MESSAGES[index], temperature=0, max_tokens=GREEDY["max_tokens"])
    expected = reference[f"chat-{index}"]
    assert [c.message.content for c in result.choices] == expected["texts"]
    assert result.usage.prompt_tokens == expected["prompt_tokens"]
    assert result.usage.completion_tokens == expected["token_counts"][0]


def test_response_shape(openai_client):
    result = chat(openai_client, max_tokens=4, **{"extra_body": {"ignore_eos": True}})
    assert result.id.startswith("chatcmpl-")
    assert result.object == "chat.completion"
    assert result.model == MODEL_NAME
    choice = result.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason == "length"
    assert result.usage.completion_tokens == 4


def test_text_parts_equal_a_string(openai_client):
    as_string = chat(openai_client, [{"role": "user", "content": "Hello there"}], **LONG_KW)
    as_parts = chat(
        openai_client,
        [{"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]}],
        **LONG_KW,
    )
    assert as_parts.choices[0].message.content == as_string.choices[0].message.content


def test_stream_role_first_content_joins_and_usage(openai_client):
    whole = chat(openai_client, **LONG_KW)
    chunks = list(chat(openai_client, stream=True, stream_options={"include_usage": True}, **LONG_KW))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    first = chunks[0].choices[0]
    assert first.delta.role == "assistant" and first.delta.content == ""
    content_chunks = [c for c in chunks[1:] if c.choices]
    assert len(content_chunks) > 1
    assert "".join(c.choices[0].delta.content or "" for c in content_chunks) == whole.choices[0].message.content
    assert content_chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in content_chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_n_choices_each_open_with_the_role(openai_client):
    kwargs = {"n": 2, "temperature": 1.0, "max_tokens": 6, "extra_body": {"top_k": 1, "ignore_eos": True}}
    whole = chat(openai_client, **kwargs)
    assert [c.index for c in whole.choices] == [0, 1]
    assert whole.choices[0].message.content == whole.choices[1].message.content
    roles, texts = {}, {0: "", 1: ""}
    for c in chat(openai_client, stream=True, **kwargs):
        for choice in c.choices:
            if choice.delta.role:
                roles[choice.index] = choice.delta.role
            texts[choice.index] += choice.delta.content or ""
    assert roles == {0: "assistant", 1: "assistant"}
    assert texts[0] == whole.choices[0].message.content


def test_max_completion_tokens(openai_client):
    result = chat(openai_client, max_completion_tokens=3, extra_body={"ignore_eos": True})
    assert result.usage.completion_tokens == 3


def test_logprobs_in_the_chat_shape(openai_client):
    result = chat(
        openai_client, temperature=0, max_tokens=5, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True}
    )
    content = result.choices[0].logprobs.content
    assert len(content) == 5
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 2
        assert item.top_logprobs[0].logprob >= item.top_logprobs[1].logprob
        assert item.bytes == list(item.token.encode())
        assert item.logprob == item.top_logprobs[0].logprob  # greedy picks the most likely token


SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["answer"],
    "additionalProperties": False,
}


def whitespace_bias(tokenizer) -> dict[str, int]:
    """The untrained test model, held only by the JSON grammar, fills max_tokens with whitespace the grammar
    allows (disable_any_whitespace has no effect in vLLM 0.32 here); banning whitespace-only tokens lets the
    grammar's own choices show."""
    ids = [i for i in range(len(tokenizer)) if tokenizer.decode([i]).strip() == "" and tokenizer.decode([i])]
    return {str(i): -100 for i in ids}


def test_json_schema_output_validates(openai_client, tokenizer):
    result = chat(
        openai_client,
        [{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
        temperature=0,
        max_tokens=120,
        logit_bias=whitespace_bias(tokenizer),
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}},
    )
    assert result.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(result.choices[0].message.content), SCHEMA)


def test_json_schema_on_completions(openai_client, tokenizer):
    result = openai_client.completions.create(
        model=MODEL_NAME,
        prompt="A JSON answer:",
        temperature=0,
        max_tokens=120,
        logit_bias=whitespace_bias(tokenizer),
        extra_body={"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}},
    )
    assert result.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(result.choices[0].text), SCHEMA)


def test_json_object_on_completions(openai_client, tokenizer):
    result = openai_client.completions.create(
        model=MODEL_NAME,
        prompt="A JSON object:",
        temperature=0,
        max_tokens=60,
        logit_bias=whitespace_bias(tokenizer),
        extra_body={"response_format": {"type": "json_object"}},
    )
    text = result.choices[0].text
    assert text.startswith("{")
    if result.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_without_a_schema_the_same_request_is_not_json(openai_client, tokenizer):
    """The schema, not the prompt, makes the output JSON (so the tests above can fail)."""
    result = chat(
        openai_client,
        [{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
        temperature=0,
        max_tokens=20,
        logit_bias=whitespace_bias(tokenizer),
    )
    with pytest.raises(ValueError):
        json.loads(result.choices[0].message.content)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, None),
        ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, None),
        ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, None),
        ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 50, "logprobs": True}, "top_logprobs"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
    ],
    ids=[
        "missing",
        "empty",
        "string",
        "no-role",
        "image-part",
        "tools",
        "top-logprobs-alone",
        "top-logprobs-50",
        "temperature",
    ],
)
def test_bad_chat_input_is_400(base_url, body, param):
    response = httpx.post(f"{base_url}/v1/chat/completions", json={"model": MODEL_NAME, **body})
    error = assert_openai_error(response, 400)
    if param:
        assert error["param"] == param


def test_unknown_model_is_404(base_url):
    body = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
    assert_openai_error(httpx.post(f"{base_url}/v1/chat/completions", json=body), 404, param="model")


STRICT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('role ' + m['role'] + ' is not allowed') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_chat_template_override_and_a_rejected_role(triton_grpc_url, tmp_path, openai_client):
    template = tmp_path / "strict.jinja"
    template.write_text(STRICT_TEMPLATE)
    frontend = FrontendProcess(
        port=free_port(),
        triton_grpc=triton_grpc_url,
        args=["--chat-template", str(template)],
        log_path=tmp_path / "frontend.log",
    )
    frontend.start()
    try:
        url = f"{frontend.base_url}/v1/chat/completions"
        ok = httpx.post(
            url,
            json={
                "model": MODEL_NAME,
                "messages": [{"role": "user", "content": "Hello!"}],
                "max_tokens": 8,
                "temperature": 0,
            },
            timeout=60,
        )
        assert ok.status_code == 200
        # Same rendering as the model's own ChatML template, so the same text.
        same = chat(openai_client, max_tokens=8, temperature=0)
        assert ok.json()["choices"][0]["message"]["content"] == same.choices[0].message.content
        bad = httpx.post(url, json={"model": MODEL_NAME, "messages": [{"role": "wizard", "content": "hi"}]})
        assert_openai_error(bad, 400, param="messages", contains="role wizard is not allowed")
        assert (
            httpx.post(
                url,
                json={"model": MODEL_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
                timeout=60,
            ).status_code
            == 200
        )
    finally:
        frontend.stop()
