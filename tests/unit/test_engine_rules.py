"""Rules that need the engine's facts: CPU dtype, the model's generation defaults, greedy n > 1, max_tokens room."""

from __future__ import annotations

import pytest
from engine_settings import cpu_safe_dtype
from sampling_parameters import (
    ParameterError,
    apply_generation_defaults,
    check_max_tokens,
    greedy_copies,
    prompt_tokens_at_most,
)

from frontend.generation import api_error_from
from frontend.triton import TritonError

# ---- dtype ----


@pytest.mark.parametrize("configured", [None, "auto", "AUTO", ""])
def test_auto_dtype_is_float32_on_cpu(configured):
    args, note, warn = cpu_safe_dtype({"model": "m", "dtype": configured}, on_cpu=True)
    assert args["dtype"] == "float32"
    assert "float32" in note and not warn


def test_missing_dtype_is_float32_on_cpu():
    args, _, _ = cpu_safe_dtype({"model": "m"}, on_cpu=True)
    assert args == {"model": "m", "dtype": "float32"}


@pytest.mark.parametrize("configured", ["bfloat16", "half", "float16"])
def test_explicit_reduced_precision_is_respected_with_a_warning_on_cpu(configured):
    args, note, warn = cpu_safe_dtype({"dtype": configured}, on_cpu=True)
    assert args["dtype"] == configured
    assert warn and configured in note


@pytest.mark.parametrize("configured", ["auto", "bfloat16", None])
def test_gpu_keeps_what_was_asked(configured):
    args, note, warn = cpu_safe_dtype({"dtype": configured}, on_cpu=False)
    assert args == {"dtype": configured}
    assert note is None and not warn


def test_dtype_choice_does_not_change_the_input():
    original = {"dtype": "auto"}
    cpu_safe_dtype(original, on_cpu=True)
    assert original == {"dtype": "auto"}


# ---- generation defaults ----


def test_defaults_fill_only_what_the_request_left_out():
    defaults = {"temperature": 0.6, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.1, "max_tokens": 64}
    merged = apply_generation_defaults({"temperature": 0.0, "n": 2}, defaults)
    assert merged == {
        "temperature": 0.0,
        "n": 2,
        "top_p": 0.9,
        "top_k": 50,
        "repetition_penalty": 1.1,
        "max_tokens": 64,
    }


def test_null_max_tokens_takes_the_default_and_stays_null_without_one():
    assert apply_generation_defaults({"max_tokens": None}, {"max_tokens": 20})["max_tokens"] == 20
    assert apply_generation_defaults({"max_tokens": None}, {}) == {"max_tokens": None}


def test_no_defaults_change_nothing():
    assert apply_generation_defaults({"top_p": 0.5}, {}) == {"top_p": 0.5}


def test_unknown_default_keys_are_not_applied():
    assert apply_generation_defaults({}, {"stop_token_ids": [3], "temperature": 0.7}) == {"temperature": 0.7}


# ---- greedy n > 1 ----


@pytest.mark.parametrize(
    ("sampling", "copies"),
    [
        ({"n": 3, "temperature": 0.0}, 3),
        ({"n": 3, "temperature": 1e-6}, 3),
        ({"n": 3, "temperature": 0.7}, 1),
        ({"n": 3}, 1),  # vLLM's default temperature is 1.0
        ({"n": 1, "temperature": 0.0}, 1),
        ({"temperature": 0.0}, 1),
    ],
)
def test_greedy_copies(sampling, copies):
    assert greedy_copies(sampling) == copies


# ---- max_tokens ----


def test_prompt_bound_is_never_below_the_token_count():
    assert prompt_tokens_at_most({"prompt_token_ids": [1, 2, 3]}) == 3
    assert prompt_tokens_at_most("héllo") >= len("héllo".encode())


def test_max_tokens_that_fit_pass():
    check_max_tokens(1019, prompt_tokens=5, max_model_len=1024)
    check_max_tokens(None, prompt_tokens=5, max_model_len=1024)


def test_max_tokens_past_the_context_names_every_number():
    with pytest.raises(ParameterError) as caught:
        check_max_tokens(100000, prompt_tokens=5, max_model_len=1024)
    message = str(caught.value)
    assert message.startswith("sampling parameter 'max_tokens'")
    for number in ("1024", "100000", "1019", " 5"):
        assert number in message


def test_a_prompt_that_fills_the_context_is_left_to_the_engine():
    check_max_tokens(10, prompt_tokens=1024, max_model_len=1024)


def test_frontend_names_the_parameter_the_model_refused():
    error = api_error_from(TritonError("sampling parameter 'max_tokens' is too large: ...", "invalid"))
    assert (error.status, error.param) == (400, "max_tokens")
    assert api_error_from(TritonError("input 'text_input' is required", "invalid")).param is None


def test_chat_errors_name_max_completion_tokens_when_the_client_sent_it():
    from frontend.protocol import ChatCompletionRequest

    refused = TritonError("sampling parameter 'max_tokens' is too large: ...", "invalid")
    messages = [{"role": "user", "content": "hi"}]
    newer = ChatCompletionRequest(model="m", messages=messages, max_completion_tokens=9000)
    older = ChatCompletionRequest(model="m", messages=messages, max_tokens=9000)
    assert api_error_from(refused, newer).param == "max_completion_tokens"
    assert api_error_from(refused, older).param == "max_tokens"
