"""frontend.protocol: OpenAI request validation and the mapping to the model's sampling_parameters."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from frontend.errors import APIError
from frontend.protocol import CompletionRequest


def request(**fields) -> CompletionRequest:
    return CompletionRequest(**{"model": "m", "prompt": "hi", **fields})


def params(**fields) -> dict:
    return request(**fields).to_sampling_parameters()


# ---- mapping to sampling_parameters ----


def test_defaults_give_only_n_and_open_max_tokens():
    # max_tokens None is kept (as null) and means "the rest of the context" to the model.
    assert params() == {"n": 1, "max_tokens": None}


def test_basic_fields_mapped():
    assert params(
        n=3,
        max_tokens=16,
        temperature=0.7,
        top_p=0.9,
        frequency_penalty=0.5,
        presence_penalty=-1.5,
        seed=42,
    ) == {
        "n": 3,
        "max_tokens": 16,
        "temperature": 0.7,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": -1.5,
        "seed": 42,
    }


def test_zero_values_are_sent_not_dropped():
    # 0 is a real setting (greedy / no penalty / seed 0), not "unset".
    result = params(temperature=0, frequency_penalty=0, presence_penalty=0, seed=0)
    assert result["temperature"] == 0
    assert result["frequency_penalty"] == 0
    assert result["presence_penalty"] == 0
    assert result["seed"] == 0


def test_stop_string_becomes_list():
    assert params(stop="\n")["stop"] == ["\n"]


def test_stop_list_kept():
    assert params(stop=["a", "b"])["stop"] == ["a", "b"]


def test_no_stop_key_without_stop():
    assert "stop" not in params(stop=None)
    assert "stop" not in params(stop=[])


def test_logit_bias_keys_normalised():
    assert params(logit_bias={"007": 5, "42": -100})["logit_bias"] == {"7": 5.0, "42": -100.0}


def test_vllm_extras_only_when_set():
    result = params()
    for key in (
        "ignore_eos",
        "min_tokens",
        "top_k",
        "min_p",
        "repetition_penalty",
        "stop_token_ids",
        "logprobs",
        "logit_bias",
        "stop",
        "structured_outputs",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "include_stop_str_in_output",
        "temperature",
        "top_p",
        "seed",
    ):
        assert key not in result, key


def test_vllm_extras_mapped_when_set():
    result = params(
        ignore_eos=True,
        min_tokens=4,
        top_k=20,
        min_p=0.05,
        repetition_penalty=1.1,
        stop_token_ids=[2, 3],
        skip_special_tokens=False,
        spaces_between_special_tokens=False,
        include_stop_str_in_output=True,
    )
    assert result == {
        "n": 1,
        "max_tokens": None,
        "ignore_eos": True,
        "min_tokens": 4,
        "top_k": 20,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "stop_token_ids": [2, 3],
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
        "include_stop_str_in_output": True,
    }


def test_top_k_minus_one_is_sent():
    assert params(top_k=-1)["top_k"] == -1


@pytest.mark.parametrize("count", [0, 1, 5])
def test_logprobs_mapped(count):
    assert params(logprobs=count)["logprobs"] == count


def test_response_format_text_adds_nothing():
    assert "structured_outputs" not in params(response_format={"type": "text"})


def test_response_format_json_object():
    assert params(response_format={"type": "json_object"})["structured_outputs"] == {"json_object": True}


def test_response_format_json_schema():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    result = params(response_format={"type": "json_schema", "json_schema": {"name": "thing", "schema": schema}})
    assert result["structured_outputs"] == {"json": schema}


@pytest.mark.parametrize(
    "fmt",
    [{"type": "json_schema"}, {"type": "json_schema", "json_schema": {"name": "x"}}, {"type": "xml"}],
)
def test_bad_response_format_rejected(fmt):
    with pytest.raises(ValidationError):
        request(response_format=fmt)


def test_sampling_parameters_parse_back_in_the_model():
    # What the frontend sends must be accepted by the model's strict parser (names and types agree).
    import json

    from sampling_parameters import parse_sampling_parameters

    sent = params(
        n=2,
        max_tokens=5,
        temperature=0.5,
        stop="x",
        logit_bias={"3": 1},
        top_k=5,
        ignore_eos=True,
        logprobs=2,
        response_format={"type": "json_object"},
    )
    sampling, options = parse_sampling_parameters(json.dumps(sent))
    assert options == {}
    assert sampling["logit_bias"] == {3: 1.0}
    assert sampling["stop"] == ["x"]
    assert sampling["structured_outputs"] == {"json_object": True}
    assert sampling["max_tokens"] == 5


# ---- validation ----


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 0}, "n"),
        ({"n": 17}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"logprobs": 6}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"frequency_penalty": 3}, "frequency_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"logit_bias": {"5": 500}}, "logit_bias"),
        ({"logit_bias": {"5": -101}}, "logit_bias"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"-5": 1}}, "logit_bias"),
        ({"top_k": -5}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"stop": [""]}, "stop"),
        ({"stop": ["ok", ""]}, "stop"),
    ],
)
def test_out_of_range_values_rejected(fields, field):
    with pytest.raises(ValidationError) as info:
        request(**fields)
    assert info.value.errors()[0]["loc"][0] == field


def test_empty_stop_plain_string_rejected():
    with pytest.raises(ValidationError):
        request(stop="")


def test_suffix_rejected():
    with pytest.raises(ValidationError, match="suffix"):
        request(suffix="tail")


def test_empty_suffix_tolerated():
    assert request(suffix="").suffix == ""


def test_best_of_other_than_n_rejected():
    with pytest.raises(ValidationError, match="best_of"):
        request(n=1, best_of=2)


def test_best_of_equal_to_n_tolerated():
    assert request(n=2, best_of=2).to_sampling_parameters()["n"] == 2


def test_echo_with_logprobs_rejected():
    with pytest.raises(ValidationError, match="echo"):
        request(echo=True, logprobs=1)


def test_echo_alone_allowed():
    assert request(echo=True).echo is True


def test_missing_model_and_prompt_rejected():
    with pytest.raises(ValidationError):
        CompletionRequest(prompt="x")
    with pytest.raises(ValidationError):
        CompletionRequest(model="m")


def test_extra_unknown_fields_tolerated():
    body = request(some_future_field={"a": 1}, another=3)
    assert body.to_sampling_parameters() == {"n": 1, "max_tokens": None}


def test_stream_options_need_stream():
    with pytest.raises(APIError) as info:
        request(stream_options={"include_usage": True}).check_stream_options()
    assert info.value.status == 400
    assert info.value.param == "stream_options"
    request(stream=True, stream_options={"include_usage": True}).check_stream_options()


def test_include_usage_properties():
    body = request(stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True})
    assert body.include_usage is True
    assert body.continuous_usage is True
    assert request().include_usage is False
    assert request().continuous_usage is False


# ---- prompts() ----


def test_prompt_string():
    assert request(prompt="hello").prompts() == ["hello"]


def test_empty_prompt_string_kept():
    assert request(prompt="").prompts() == [""]


def test_prompt_list_of_strings():
    assert request(prompt=["a", "b"]).prompts() == ["a", "b"]


def test_prompt_token_ids():
    assert request(prompt=[1, 2, 3]).prompts() == [[1, 2, 3]]


def test_prompt_list_of_token_id_lists():
    assert request(prompt=[[1, 2], [3]]).prompts() == [[1, 2], [3]]


@pytest.mark.parametrize("prompt", [[], [[]], [[1], []]])
def test_empty_prompts_are_400(prompt):
    with pytest.raises(APIError) as info:
        request(prompt=prompt).prompts()
    assert info.value.status == 400
    assert info.value.param == "prompt"
    assert info.value.type == "invalid_request_error"


@pytest.mark.parametrize("prompt", [[-1], [[1], [-2]], [1, "a"], [[1], ["a"]], 5, None])
def test_bad_prompts_rejected(prompt):
    with pytest.raises(ValidationError):
        request(prompt=prompt)


def test_repetition_penalty_above_two_is_accepted_as_vllm_does():
    assert request(repetition_penalty=3.5).to_sampling_parameters()["repetition_penalty"] == 3.5


# ---- unknown fields: tolerated, logged once per name ----


def test_unknown_fields_are_ignored_and_logged_once_per_name(caplog, monkeypatch):
    from frontend import protocol
    from frontend.protocol import ChatCompletionRequest

    monkeypatch.setattr(protocol, "_logged_unknown", set())
    caplog.set_level("WARNING", logger="frontend")
    body = {"model": "m", "messages": [{"role": "user", "content": "x", "mood": "sunny"}], "best_guess": 1}
    for _ in range(3):
        parsed = ChatCompletionRequest(**body)
    assert "best_guess" not in parsed.to_sampling_parameters()
    logged = [r.getMessage() for r in caplog.records if "unknown request field" in r.getMessage()]
    assert logged == [
        "ignored unknown request field 'mood' in ChatMessage (logged once per name)",
        "ignored unknown request field 'best_guess' in ChatCompletionRequest (logged once per name)",
    ]
    caplog.clear()
    request(temperature=0.5, top_n=2)
    assert [r.getMessage() for r in caplog.records] == [
        "ignored unknown request field 'top_n' in CompletionRequest (logged once per name)"
    ]
    caplog.clear()
    request(logprobs=1)  # known fields: nothing logged
    assert not caplog.records


def test_unknown_field_names_logged_are_bounded(caplog, monkeypatch):
    from frontend import protocol

    monkeypatch.setattr(protocol, "_logged_unknown", set())
    monkeypatch.setattr(protocol, "MAX_LOGGED_UNKNOWN", 3)
    caplog.set_level("WARNING", logger="frontend")
    request(**{f"field_{i}": i for i in range(10)})
    assert len(caplog.records) == 3 and len(protocol._logged_unknown) == 3
