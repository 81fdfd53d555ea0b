"""/v1/completions through the real stack, with the official openai client and raw HTTP."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from tests.conftest import GREEDY, MODEL_NAME, PARITY_PROMPTS


def complete(client, prompt="def hello", **kwargs):
    return client.completions.create(model=MODEL_NAME, prompt=prompt, **kwargs)


def extra(**fields):
    """vLLM's extra sampling fields go in the body via the SDK's extra_body."""
    return {"extra_body": fields}


@pytest.mark.parametrize("index", range(len(PARITY_PROMPTS)))
def test_greedy_text_equals_offline_vllm(openai_client, reference, index):
    result = complete(openai_client, PARITY_PROMPTS[index], temperature=0, max_tokens=GREEDY["max_tokens"])
    expected = reference[f"prompt-{index}"]
    assert [c.text for c in result.choices] == expected["texts"]
    assert result.usage.completion_tokens == expected["token_counts"][0]
    assert result.usage.prompt_tokens == expected["prompt_tokens"]
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_response_shape(openai_client):
    result = complete(openai_client, max_tokens=3, **extra(ignore_eos=True))
    assert result.id.startswith("cmpl-")
    assert result.object == "text_completion"
    assert result.model == MODEL_NAME
    assert result.created > 0
    assert result.choices[0].index == 0
    assert result.choices[0].finish_reason == "length"


def test_stream_joins_to_the_non_streamed_text_and_usage(openai_client):
    whole = complete(openai_client, **LONG_KW)
    chunks = list(complete(openai_client, stream=True, stream_options={"include_usage": True}, **LONG_KW))
    text_chunks = [c for c in chunks if c.choices]
    assert len(text_chunks) > 1, "tokens should arrive as they are generated"
    assert "".join(c.choices[0].text for c in text_chunks) == whole.choices[0].text
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.model_dump() == whole.usage.model_dump()


LONG_KW = {"temperature": 0, "max_tokens": 16, "extra_body": {"ignore_eos": True}}


def test_continuous_usage_stats(openai_client):
    chunks = list(
        complete(
            openai_client,
            stream=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},
            **LONG_KW,
        )
    )
    counts = [c.usage.completion_tokens for c in chunks if c.choices]
    assert counts == sorted(counts) and counts[-1] == 16


def test_prompt_list_times_n_in_openai_order(openai_client):
    prompts = ["def alpha", "import beta"]
    singles = [complete(openai_client, p, temperature=0, max_tokens=6).choices[0].text for p in prompts]
    # vLLM refuses n > 1 at temperature 0; top_k=1 is greedy sampling that it accepts.
    greedy_n2 = {"n": 2, "temperature": 1.0, "max_tokens": 6, "extra_body": {"top_k": 1}}
    result = complete(openai_client, prompts, **greedy_n2)
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert [c.text for c in result.choices] == [singles[0], singles[0], singles[1], singles[1]]
    streamed: dict[int, str] = {}
    for chunk in complete(openai_client, prompts, stream=True, **greedy_n2):
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
    assert [streamed[i] for i in range(4)] == [c.text for c in result.choices]


def test_token_id_prompts(openai_client, tokenizer):
    ids = [tokenizer(p)["input_ids"] for p in PARITY_PROMPTS[:2]]
    by_text = complete(openai_client, PARITY_PROMPTS[:2], temperature=0, max_tokens=8)
    by_ids = complete(openai_client, ids, temperature=0, max_tokens=8)
    one = complete(openai_client, ids[0], temperature=0, max_tokens=8)
    assert [c.text for c in by_ids.choices] == [c.text for c in by_text.choices]
    assert one.choices[0].text == by_text.choices[0].text


def test_seed_is_reproducible_at_temperature_one(openai_client):
    runs = [complete(openai_client, temperature=1.0, max_tokens=12, seed=s).choices[0].text for s in (11, 11, 12)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_stop_cuts_the_text(openai_client):
    full = complete(openai_client, **LONG_KW).choices[0].text
    stop = full[6:9]
    assert stop.strip(), "need a visible stop string"
    cut = complete(openai_client, stop=[stop], **LONG_KW)
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_ignore_eos_and_max_tokens_give_exactly_k_tokens(openai_client):
    result = complete(openai_client, max_tokens=7, **extra(ignore_eos=True))
    assert result.usage.completion_tokens == 7
    assert result.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    "change",
    [{"frequency_penalty": 2.0}, {"presence_penalty": 2.0}, {"extra_body": {"repetition_penalty": 2.0}}],
    ids=["frequency", "presence", "repetition"],
)
def test_penalties_change_greedy_output(openai_client, tokenizer, change):
    # A small bias makes the (near-uniform) tiny model repeat a token; a penalty must break the repetition.
    bias = {str(tokenizer(" value")["input_ids"][-1]): 3}
    plain = complete(openai_client, temperature=0, max_tokens=12, logit_bias=bias).choices[0].text
    penalised = complete(openai_client, temperature=0, max_tokens=12, logit_bias=bias, **change).choices[0].text
    assert plain.startswith(" value value")
    assert penalised != plain


def test_logit_bias_forces_a_token(openai_client, tokenizer):
    token_id = tokenizer(" value")["input_ids"][-1]
    result = complete(openai_client, max_tokens=5, logit_bias={str(token_id): 100}, **extra(ignore_eos=True))
    assert result.choices[0].text == tokenizer.decode([token_id] * 5)


def test_min_tokens_holds_back_stop_tokens(openai_client, tokenizer):
    token_id = tokenizer(" value")["input_ids"][-1]
    forced = {"logit_bias": {str(token_id): 100}}
    stopped = complete(openai_client, max_tokens=10, **forced, **extra(stop_token_ids=[token_id]))
    assert stopped.usage.completion_tokens == 1 and stopped.choices[0].finish_reason == "stop"
    held = complete(openai_client, max_tokens=10, **forced, **extra(stop_token_ids=[token_id], min_tokens=4))
    assert held.usage.completion_tokens == 5 and held.choices[0].finish_reason == "stop"


def test_top_k_one_is_greedy(openai_client):
    greedy = complete(openai_client, temperature=0, max_tokens=12).choices[0].text
    top1 = complete(openai_client, temperature=1.0, max_tokens=12, seed=3, **extra(top_k=1)).choices[0].text
    assert top1 == greedy


def test_echo_prepends_the_prompt(openai_client):
    plain = complete(openai_client, temperature=0, max_tokens=6).choices[0].text
    echoed = complete(openai_client, temperature=0, max_tokens=6, echo=True).choices[0].text
    assert echoed == "def hello" + plain


def test_logprobs_shape(openai_client):
    result = complete(openai_client, temperature=0, max_tokens=6, logprobs=2, **extra(ignore_eos=True))
    choice = result.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    # Tokens that end inside a UTF-8 character decode to U+FFFD alone; the text joins their bytes.
    assert "".join(lp.tokens).replace("\ufffd", "") == choice.text.replace("\ufffd", "")
    assert all(isinstance(x, float) and x <= 0 for x in lp.token_logprobs)
    assert all(1 <= len(top) <= 3 for top in lp.top_logprobs)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    # Greedy: the sampled token is the most likely one.
    assert all(lp.token_logprobs[i] == max(top.values()) for i, top in enumerate(lp.top_logprobs))


def test_user_and_unknown_extra_fields_are_accepted(openai_client):
    result = complete(openai_client, max_tokens=2, user="someone", **extra(some_future_field=True))
    assert result.choices[0].text is not None


async def test_async_client_concurrent_requests(async_openai_client):
    prompts = PARITY_PROMPTS
    results = await asyncio.gather(
        *[
            async_openai_client.completions.create(model=MODEL_NAME, prompt=p, temperature=0, max_tokens=8)
            for p in prompts
        ]
    )
    assert len({r.id for r in results}) == len(prompts)
    sequential = [
        (await async_openai_client.completions.create(model=MODEL_NAME, prompt=p, temperature=0, max_tokens=8))
        .choices[0]
        .text
        for p in prompts
    ]
    assert [r.choices[0].text for r in results] == sequential


async def test_async_streaming(async_openai_client):
    stream = await async_openai_client.completions.create(
        model=MODEL_NAME, prompt="def hello", temperature=0, max_tokens=8, stream=True
    )
    texts = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert len(texts) >= 2


def test_default_max_tokens_is_the_rest_of_the_context(base_url, tokenizer):
    """Without max_tokens, generation may run to the end of the context window (not OpenAI's 16)."""
    prompt = "word " * 990
    body = {"model": MODEL_NAME, "prompt": prompt, "temperature": 0, "ignore_eos": True}
    result = httpx.post(f"{base_url}/v1/completions", json=body, timeout=300).json()
    assert result["usage"]["total_tokens"] == 1024
    assert result["choices"][0]["finish_reason"] == "length"


def test_models_list(openai_client):
    models = openai_client.models.list()
    ids = [m.id for m in models.data]
    assert ids[0] == MODEL_NAME
    assert "/" not in ids[0]


def test_health_routes(base_url):
    assert httpx.get(f"{base_url}/health").status_code == 200
    ready = httpx.get(f"{base_url}/health/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


# ---- bad input: the right 4xx in OpenAI's shape, and the server keeps serving ----


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None, contains: str = "") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param, error
    assert contains in error["message"], error
    return error


BAD_BODIES = [
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"n": 0}, "n"),
    ({"n": 1000}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "many"}, "max_tokens"),
    ({"frequency_penalty": 2.5}, "frequency_penalty"),
    ({"presence_penalty": -3}, "presence_penalty"),
    ({"logprobs": 6}, "logprobs"),
    ({"min_p": 1.5}, "min_p"),
    ({"top_k": -5}, "top_k"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 500}}, "logit_bias.5"),
    ({"stream": "yes please"}, "stream"),
    ({"prompt": {"text": "hi"}}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": None}, "prompt"),
]


@pytest.mark.parametrize(("change", "param"), BAD_BODIES, ids=[p + str(i) for i, (_, p) in enumerate(BAD_BODIES)])
def test_out_of_range_and_wrong_type_values_are_400(base_url, change, param):
    body = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2, **change}
    assert_openai_error(httpx.post(f"{base_url}/v1/completions", json=body), 400, param=param)


def test_missing_prompt_and_model_are_400(base_url):
    assert_openai_error(httpx.post(f"{base_url}/v1/completions", json={"model": MODEL_NAME}), 400, param="prompt")
    assert_openai_error(httpx.post(f"{base_url}/v1/completions", json={"prompt": "x"}), 400, param="model")


def test_malformed_json_is_400(base_url):
    response = httpx.post(
        f"{base_url}/v1/completions",
        content=b'{"model": "tiny", "prompt": ',
        headers={"content-type": "application/json"},
    )
    assert_openai_error(response, 400)


@pytest.mark.parametrize("field", ["suffix", "best_of"])
def test_unsupported_fields_are_400_naming_them(base_url, field):
    body = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 2, field: "x" if field == "suffix" else 3}
    error = assert_openai_error(httpx.post(f"{base_url}/v1/completions", json=body), 400)
    assert field in error["message"]


def test_stream_options_without_stream_is_400(base_url):
    body = {"model": MODEL_NAME, "prompt": "hi", "stream_options": {"include_usage": True}}
    assert_openai_error(httpx.post(f"{base_url}/v1/completions", json=body), 400, param="stream_options")


def test_unknown_model_is_404(openai_client, base_url):
    body = {"model": "gpt-17", "prompt": "hi"}
    error = assert_openai_error(httpx.post(f"{base_url}/v1/completions", json=body), 404, param="model")
    assert error["code"] == "model_not_found" and "gpt-17" in error["message"]
    with pytest.raises(openai.NotFoundError):
        openai_client.completions.create(model="gpt-17", prompt="hi")


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_over_the_context_is_400_with_the_engine_message(base_url, stream):
    body = {"model": MODEL_NAME, "prompt": "word " * 1100, "max_tokens": 4, "stream": stream}
    assert_openai_error(httpx.post(f"{base_url}/v1/completions", json=body), 400, contains="maximum context length")


def test_oversized_body_is_413(base_url):
    body = {"model": MODEL_NAME, "prompt": "x" * (5 * 1024 * 1024)}
    assert_openai_error(httpx.post(f"{base_url}/v1/completions", json=body), 413)


def test_the_server_still_serves_after_bad_input(openai_client):
    assert complete(openai_client, max_tokens=3, **extra(ignore_eos=True)).usage.completion_tokens == 3


def test_openai_client_raises_bad_request(openai_client):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.completions.create(model=MODEL_NAME, prompt="hi", temperature=9)
    assert caught.value.status_code == 400
    assert json.loads(caught.value.response.text)["error"]["param"] == "temperature"
