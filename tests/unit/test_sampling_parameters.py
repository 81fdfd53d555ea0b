"""parse_sampling_parameters: the model's strict parser for the `sampling_parameters` JSON input."""

from __future__ import annotations

import json

import pytest
import sampling_parameters
from sampling_parameters import ParameterError, parse_sampling_parameters


def parse(params: dict) -> tuple[dict, dict]:
    return parse_sampling_parameters(json.dumps(params))


# ---- empty input ----


@pytest.mark.parametrize("raw", [None, "", "   ", b"", b"  \n"])
def test_empty_input_gives_nothing(raw):
    assert parse_sampling_parameters(raw) == ({}, {})


def test_empty_object_gives_nothing():
    assert parse_sampling_parameters("{}") == ({}, {})


def test_bytes_input_is_decoded():
    assert parse_sampling_parameters(b'{"temperature": 0.5}') == ({"temperature": 0.5}, {})


# ---- string coercion by value ----


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("ignore_eos", "false", False),
        ("ignore_eos", "False", False),
        ("ignore_eos", " FALSE ", False),
        ("ignore_eos", "0", False),
        ("ignore_eos", "true", True),
        ("ignore_eos", "True", True),
        ("ignore_eos", "1", True),
        ("ignore_eos", 0, False),
        ("ignore_eos", 1, True),
        ("skip_special_tokens", "false", False),
        ("include_stop_str_in_output", "true", True),
        ("temperature", "0.5", 0.5),
        ("top_p", " 0.9 ", 0.9),
        ("temperature", 1, 1.0),
        ("max_tokens", "16", 16),
        ("max_tokens", 16.0, 16),
        ("n", "2", 2),
        ("seed", "-3", -3),
        ("top_k", "40", 40),
    ],
)
def test_strings_and_numbers_coerce_by_value(key, raw, expected):
    sampling, options = parse({key: raw})
    assert sampling == {key: expected}
    assert type(sampling[key]) is type(expected)
    assert options == {}


def test_string_false_is_false_unlike_vllm_backend():
    # vllm_backend did bool("false") == True; here "false" must really be False.
    sampling, _ = parse({"ignore_eos": "false", "skip_special_tokens": "false"})
    assert sampling["ignore_eos"] is False
    assert sampling["skip_special_tokens"] is False


@pytest.mark.parametrize("raw", ["nope", "", "t", "y", "enabled", 2, -1, 0.5, [], {}])
def test_bad_booleans_name_the_key(raw):
    with pytest.raises(ParameterError, match="'ignore_eos'"):
        parse({"ignore_eos": raw})


def test_optional_values_accept_null():
    sampling, _ = parse({"max_tokens": None, "seed": None, "logprobs": None, "prompt_logprobs": None})
    assert sampling == {"max_tokens": None, "seed": None, "logprobs": None, "prompt_logprobs": None}


@pytest.mark.parametrize("key", ["n", "temperature", "ignore_eos", "top_k"])
def test_non_optional_values_reject_null(key):
    with pytest.raises(ParameterError, match=f"'{key}'"):
        parse({key: None})


# ---- errors name the key ----


def test_unknown_key_is_named():
    with pytest.raises(ParameterError, match="unknown sampling parameter 'best_of_luck'"):
        parse({"temperature": 0.1, "best_of_luck": 3})


def test_unknown_keys_are_logged_once_per_name(monkeypatch):
    monkeypatch.setattr(sampling_parameters, "_logged_unknown", set())
    logged: list[str] = []
    for key in ("colour", "colour", "flavour", "colour"):
        with pytest.raises(ParameterError):
            parse_sampling_parameters(json.dumps({key: 1}), logged.append)
    assert logged == [
        "[vllm_model] refused unknown sampling parameter 'colour' (logged once per name)",
        "[vllm_model] refused unknown sampling parameter 'flavour' (logged once per name)",
    ]


def test_unknown_key_names_logged_are_bounded(monkeypatch):
    monkeypatch.setattr(sampling_parameters, "_logged_unknown", set())
    monkeypatch.setattr(sampling_parameters, "MAX_LOGGED_UNKNOWN", 2)
    logged: list[str] = []
    for key in ("a1", "a2", "a3"):
        with pytest.raises(ParameterError):
            parse_sampling_parameters(json.dumps({key: 1}), logged.append)
    assert len(logged) == 2 and "a3" not in logged[-1]


def test_repetition_penalty_is_not_capped_as_vllm_takes_any_value_above_zero():
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import SamplingParams

    sampling, _ = parse({"repetition_penalty": "3.5"})
    assert sampling == {"repetition_penalty": 3.5}
    assert SamplingParams(**sampling).repetition_penalty == 3.5
    with pytest.raises(VLLMValidationError, match="repetition_penalty must be greater than zero"):
        SamplingParams(**parse({"repetition_penalty": 0})[0])  # vLLM's own bound: the model answers 400


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"max_tokens": "lots"}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": "1.5"}, "max_tokens"),
        ({"n": [1]}, "n"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": ""}, "top_p"),
        ({"min_p": {}}, "min_p"),
        ({"stop_token_ids": 7}, "stop_token_ids"),
        ({"stop_token_ids": [1, "x"]}, "stop_token_ids"),
        ({"stop": [1, 2]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"bad_words": [None]}, "bad_words"),
        ({"logit_bias": [1, 2]}, "logit_bias"),
        ({"logit_bias": {"abc": 1.0}}, "logit_bias"),
        ({"logit_bias": {"5": "big"}}, "logit_bias"),
    ],
)
def test_bad_values_name_the_key(params, key):
    with pytest.raises(ParameterError, match=f"'{key}'"):
        parse(params)


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "Infinity", float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_rejected(raw):
    # json.dumps writes float nan/inf as NaN/Infinity, which json.loads accepts: both routes must fail.
    with pytest.raises(ParameterError, match="'temperature'.*finite"):
        parse({"temperature": raw})


def test_non_finite_literal_in_json_text_rejected():
    with pytest.raises(ParameterError, match="'top_p'"):
        parse_sampling_parameters('{"top_p": NaN}')


@pytest.mark.parametrize("key", ["n", "max_tokens", "top_k", "seed", "min_tokens"])
@pytest.mark.parametrize("value", [True, False])
def test_bools_rejected_as_ints(key, value):
    with pytest.raises(ParameterError, match=f"'{key}'.*integer"):
        parse({key: value})


@pytest.mark.parametrize("key", ["temperature", "top_p", "presence_penalty"])
def test_bools_rejected_as_floats(key):
    with pytest.raises(ParameterError, match=f"'{key}'"):
        parse({key: True})


def test_bool_rejected_inside_int_list():
    with pytest.raises(ParameterError, match="'stop_token_ids'"):
        parse({"stop_token_ids": [1, True]})


# ---- shapes ----


def test_stop_string_becomes_list():
    assert parse({"stop": "\n"})[0] == {"stop": ["\n"]}


def test_stop_list_kept():
    assert parse({"stop": ["a", "b"]})[0] == {"stop": ["a", "b"]}


def test_bad_words_string_becomes_list():
    assert parse({"bad_words": "x"})[0] == {"bad_words": ["x"]}


def test_token_id_lists_coerced():
    sampling, _ = parse({"stop_token_ids": [1, "2", 3.0], "allowed_token_ids": []})
    assert sampling == {"stop_token_ids": [1, 2, 3], "allowed_token_ids": []}


def test_logit_bias_keys_become_ints_and_values_floats():
    sampling, _ = parse({"logit_bias": {"5": 1, "17": "-2.5"}})
    assert sampling == {"logit_bias": {5: 1.0, 17: -2.5}}
    assert all(isinstance(k, int) for k in sampling["logit_bias"])
    assert all(isinstance(v, float) for v in sampling["logit_bias"].values())


def test_logit_bias_rejects_non_finite_bias():
    with pytest.raises(ParameterError, match="'logit_bias'"):
        parse({"logit_bias": {"5": "inf"}})


def test_many_keys_together():
    sampling, options = parse(
        {
            "n": 2,
            "max_tokens": "8",
            "temperature": "0.7",
            "top_p": 1,
            "stop": "END",
            "ignore_eos": "false",
            "lora_name": "adapter-a",
        }
    )
    assert sampling == {"n": 2, "max_tokens": 8, "temperature": 0.7, "top_p": 1.0, "stop": ["END"], "ignore_eos": False}
    assert options == {"lora_name": "adapter-a"}


# ---- structured outputs ----


def test_structured_outputs_passed_through():
    sampling, _ = parse({"structured_outputs": {"regex": "[0-9]+"}})
    assert sampling == {"structured_outputs": {"regex": "[0-9]+"}}


def test_structured_outputs_json_object_form_kept():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    sampling, _ = parse({"structured_outputs": {"json": schema}})
    assert sampling["structured_outputs"]["json"] == schema


def test_structured_outputs_json_string_is_parsed():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    sampling, _ = parse({"structured_outputs": {"json": json.dumps(schema), "disable_any_whitespace": True}})
    assert sampling["structured_outputs"] == {"json": schema, "disable_any_whitespace": True}


def test_structured_outputs_bad_json_string_named():
    with pytest.raises(ParameterError, match=r"'structured_outputs\.json' is not valid JSON"):
        parse({"structured_outputs": {"json": "{not json"}})


def test_structured_outputs_unknown_key_named():
    with pytest.raises(ParameterError, match="unknown key 'jsonn'"):
        parse({"structured_outputs": {"jsonn": {}}})


@pytest.mark.parametrize("value", [{}, "regex", ["json"], None])
def test_structured_outputs_must_be_non_empty_object(value):
    with pytest.raises(ParameterError, match="'structured_outputs'"):
        parse({"structured_outputs": value})


def test_guided_decoding_alias():
    sampling, _ = parse({"guided_decoding": {"choice": ["yes", "no"]}})
    assert sampling == {"structured_outputs": {"choice": ["yes", "no"]}}


def test_guided_decoding_alias_errors_name_the_alias():
    with pytest.raises(ParameterError, match="'guided_decoding'.*unknown key 'bogus'"):
        parse({"guided_decoding": {"bogus": 1}})


# ---- request options ----


def test_lora_name_goes_to_options_not_sampling():
    sampling, options = parse({"lora_name": "adapter-a", "temperature": 0})
    assert options == {"lora_name": "adapter-a"}
    assert "lora_name" not in sampling
    assert sampling == {"temperature": 0.0}


def test_lora_name_null_allowed():
    assert parse({"lora_name": None}) == ({}, {"lora_name": None})


@pytest.mark.parametrize("value", [1, ["a"], {"a": 1}, True])
def test_lora_name_must_be_string(value):
    with pytest.raises(ParameterError, match="'lora_name'"):
        parse({"lora_name": value})


# ---- whole-document errors ----


@pytest.mark.parametrize("raw", ["[]", '["temperature"]', "1", '"text"', "null", "true"])
def test_non_object_json_rejected(raw):
    with pytest.raises(ParameterError, match="must be a JSON object"):
        parse_sampling_parameters(raw)


@pytest.mark.parametrize("raw", ["{", "{'temperature': 1}", "temperature=1", '{"a": }'])
def test_invalid_json_rejected(raw):
    with pytest.raises(ParameterError, match="not valid JSON"):
        parse_sampling_parameters(raw)


def test_parameter_error_is_value_error():
    # model.py and callers may catch ValueError broadly.
    assert issubclass(ParameterError, ValueError)


@pytest.mark.parametrize(("raw", "expected"), [(False, False), ("false", False), (True, True), ("1", True)])
def test_add_special_tokens_is_a_request_option_parsed_by_value(raw, expected):
    sampling, options = parse_sampling_parameters(json.dumps({"add_special_tokens": raw, "max_tokens": 2}))
    assert options == {"add_special_tokens": expected}
    assert sampling == {"max_tokens": 2}


def test_add_special_tokens_rejects_non_booleans():
    with pytest.raises(ParameterError, match="add_special_tokens"):
        parse_sampling_parameters('{"add_special_tokens": "perhaps"}')


def test_structured_outputs_as_a_json_string_like_vllm_backend():
    """vllm_backend's accuracy_test sends json.dumps({"choice": [...]}) as the value."""
    sampling, _ = parse_sampling_parameters(json.dumps({"structured_outputs": json.dumps({"choice": ["a", "b"]})}))
    assert sampling == {"structured_outputs": {"choice": ["a", "b"]}}
    with pytest.raises(ParameterError, match="'structured_outputs' is not valid JSON"):
        parse_sampling_parameters(json.dumps({"structured_outputs": "{choice"}))


def test_request_parameters_drop_triton_keys():
    from sampling_parameters import request_parameters_json

    raw = json.dumps({"temperature": "0", "triton_enable_empty_final_response": True})
    assert json.loads(request_parameters_json(raw)) == {"temperature": "0"}
    assert request_parameters_json("{}") is None
    assert request_parameters_json(json.dumps({"triton_enable_empty_final_response": True})) is None
    assert request_parameters_json("") is None
