"""OpenAI's semantics where vLLM's server deviates: n > 1 at temperature 0, max_tokens past the context."""

from __future__ import annotations

import time

import openai
import pytest
import requests

from tests.conftest import ENGINE_ARGS, MODEL_NAME

MAX_MODEL_LEN = ENGINE_ARGS["max_model_len"]


# ---- n > 1 with greedy sampling ----


def test_completion_n_greedy_gives_n_copies_of_the_greedy_text(openai_client):
    single = openai_client.completions.create(model=MODEL_NAME, prompt="def hello", temperature=0, max_tokens=10)
    many = openai_client.completions.create(model=MODEL_NAME, prompt="def hello", temperature=0, max_tokens=10, n=3)
    assert [c.index for c in many.choices] == [0, 1, 2]
    assert [c.text for c in many.choices] == [single.choices[0].text] * 3
    assert [c.finish_reason for c in many.choices] == [single.choices[0].finish_reason] * 3
    # Usage counts what was returned, as OpenAI does: n completions.
    assert many.usage.completion_tokens == 3 * single.usage.completion_tokens
    assert many.usage.prompt_tokens == single.usage.prompt_tokens


def test_completion_n_greedy_with_prompt_list_keeps_openai_order(openai_client):
    prompts = ["def alpha", "import beta"]
    singles = [
        openai_client.completions.create(model=MODEL_NAME, prompt=p, temperature=0, max_tokens=6).choices[0].text
        for p in prompts
    ]
    many = openai_client.completions.create(model=MODEL_NAME, prompt=prompts, temperature=0, max_tokens=6, n=2)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert [c.text for c in many.choices] == [singles[0], singles[0], singles[1], singles[1]]


def test_streamed_completion_n_greedy(openai_client):
    single = openai_client.completions.create(model=MODEL_NAME, prompt="class A:", temperature=0, max_tokens=8)
    stream = openai_client.completions.create(
        model=MODEL_NAME,
        prompt="class A:",
        temperature=0,
        max_tokens=8,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts, finishes, usage = ["", ""], [None, None], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            finishes[choice.index] = choice.finish_reason or finishes[choice.index]
    assert texts == [single.choices[0].text] * 2
    assert finishes == [single.choices[0].finish_reason] * 2
    assert usage.completion_tokens == 2 * single.usage.completion_tokens


def test_chat_n_greedy(openai_client):
    messages = [{"role": "user", "content": "Say something about Python."}]
    single = openai_client.chat.completions.create(model=MODEL_NAME, messages=messages, temperature=0, max_tokens=8)
    many = openai_client.chat.completions.create(
        model=MODEL_NAME, messages=messages, temperature=0, max_tokens=8, n=2, logprobs=True
    )
    assert [c.index for c in many.choices] == [0, 1]
    assert [c.message.content for c in many.choices] == [single.choices[0].message.content] * 2
    assert many.choices[0].logprobs.content == many.choices[1].logprobs.content
    assert many.usage.completion_tokens == 2 * single.usage.completion_tokens


def test_sampled_n_still_gives_different_samples(openai_client):
    many = openai_client.completions.create(
        model=MODEL_NAME, prompt="def hello", temperature=1.0, max_tokens=12, n=4, seed=5
    )
    assert len({c.text for c in many.choices}) > 1


# ---- max_tokens larger than the context allows ----


def _error(exc: openai.APIStatusError) -> dict:
    return exc.response.json()["error"]


def test_completion_max_tokens_past_the_context_is_a_400_at_once(openai_client):
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.completions.create(model=MODEL_NAME, prompt="def hello", max_tokens=100000)
    elapsed = time.monotonic() - started
    error = _error(caught.value)
    assert error["param"] == "max_tokens" and error["type"] == "invalid_request_error"
    assert str(MAX_MODEL_LEN) in error["message"] and "100000" in error["message"]
    assert elapsed < 30  # not a generation to the end of the context (a failure here is a hang, not a timing)


def test_max_tokens_error_names_the_prompt_tokens(openai_client, tokenizer):
    prompt = "import os\nimport sys\n"
    count = len(tokenizer(prompt)["input_ids"])
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=MAX_MODEL_LEN - count + 1)
    message = _error(caught.value)["message"]
    assert f"the prompt has {count}" in message and f"at most {MAX_MODEL_LEN - count}" in message


def test_max_tokens_that_exactly_fill_the_context_are_served(openai_client, tokenizer):
    ids = tokenizer("def hello")["input_ids"]
    result = openai_client.completions.create(model=MODEL_NAME, prompt=ids, max_tokens=MAX_MODEL_LEN - len(ids))
    assert result.usage.prompt_tokens == len(ids)


def test_token_id_prompt_past_the_context(openai_client):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.completions.create(model=MODEL_NAME, prompt=[5] * 1000, max_tokens=100)
    assert _error(caught.value)["param"] == "max_tokens"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_chat_max_tokens_past_the_context(openai_client, field):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(
            model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], **{field: 5000}
        )
    assert _error(caught.value)["param"] == field  # the field the client sent
    assert str(MAX_MODEL_LEN) in _error(caught.value)["message"]


def test_streamed_request_past_the_context_gets_the_400_status(base_url):
    response = requests.post(
        f"{base_url}/v1/completions",
        json={"model": MODEL_NAME, "prompt": "def hello", "max_tokens": 50000, "stream": True},
        timeout=60,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"


def test_server_keeps_serving_after_the_refusals(openai_client):
    result = openai_client.completions.create(model=MODEL_NAME, prompt="def hello", temperature=0, max_tokens=4)
    assert result.usage.completion_tokens >= 1
