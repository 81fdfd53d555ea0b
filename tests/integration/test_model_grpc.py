"""The Triton model itself, through tritonclient gRPC streaming (as vllm_backend clients call it)."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import GREEDY, PARITY_PROMPTS, wait_for_idle
from tests.integration.triton_client import TritonTestClient, make_inputs

PROMPTS = PARITY_PROMPTS


def generate(triton: TritonTestClient, prompt: str, **kwargs):
    outcome = triton.infer(make_inputs(prompt, **kwargs))
    assert outcome.error is None, outcome.error
    return outcome


@pytest.mark.parametrize("index", range(len(PROMPTS)))
def test_greedy_text_equals_offline_vllm(triton, reference, index):
    outcome = generate(triton, PROMPTS[index], params=GREEDY, exclude_input=True)
    expected = reference[f"prompt-{index}"]
    assert outcome.texts() == expected["texts"]
    assert outcome.responses[-1]["num_output_tokens"] == expected["token_counts"]


def test_stream_pieces_join_to_the_non_streamed_text(triton):
    whole = generate(triton, PROMPTS[0], params=GREEDY, exclude_input=True)
    pieces = generate(triton, PROMPTS[0], params=GREEDY, stream=True)
    assert len(whole.responses) == 1
    assert len(pieces.responses) > 1, "streaming should give one response per engine step"
    assert pieces.texts() == whole.texts()
    assert sum(r["num_output_tokens"][0] for r in pieces.responses) == GREEDY["max_tokens"]
    assert pieces.responses[-1]["finish_reason"] == ["length"]
    assert all(r["finish_reason"] == ["None"] for r in pieces.responses[:-1])  # as vllm_backend


def test_n2_returns_two_sequences(triton):
    params = {"n": 2, "temperature": 1.0, "seed": 7, "max_tokens": 8, "ignore_eos": True}
    whole = generate(triton, PROMPTS[1], params=params, exclude_input=True)
    response = whole.responses[0]
    assert len(response["text_output"]) == 2
    assert response["num_output_tokens"] == [8, 8]
    assert response["finish_reason"] == ["length", "length"]
    streamed = generate(triton, PROMPTS[1], params=params, stream=True)
    assert all(len(r["text_output"]) == 2 for r in streamed.responses)
    assert [sum(r["num_output_tokens"][i] for r in streamed.responses) for i in range(2)] == [8, 8]


def test_exclude_input_in_output(triton):
    excluded = generate(triton, PROMPTS[2], params=GREEDY, exclude_input=True).texts()[0]
    included = generate(triton, PROMPTS[2], params=GREEDY, exclude_input=False).texts()[0]
    default = generate(triton, PROMPTS[2], params=GREEDY).texts()[0]
    assert included == PROMPTS[2] + excluded
    assert default == included, "as vllm_backend: the prompt is included by default when not streaming"
    streamed = generate(triton, PROMPTS[2], params=GREEDY, stream=True, exclude_input=False).texts()[0]
    assert streamed == included


def test_token_counts_match_the_tokenizer(triton, tokenizer):
    prompt = "Hello there, tokenizer"
    response = generate(triton, prompt, params={"max_tokens": 5, "ignore_eos": True}).responses[0]
    assert response["num_input_tokens"] == [len(tokenizer(prompt)["input_ids"])]
    assert response["num_output_tokens"] == [5]


def test_cumulative_logprob_is_real_without_asking_for_logprobs(triton):
    """vLLM V1 keeps cumulative_logprob only while it computes logprobs; vllm_backend's clients ask for the running
    sum alone and must still get it (not 0), while the logprobs output stays null as they asked for none."""
    plain = generate(triton, PROMPTS[0], params=GREEDY, stream=True)
    detailed = generate(triton, PROMPTS[0], params={**GREEDY, "logprobs": 0}, stream=True)
    assert plain.texts() == detailed.texts()
    assert all(r["logprobs"] == ["null"] for r in plain.responses)
    running = [r["cumulative_logprob"][0] for r in plain.responses]
    assert running[0] < 0 and running == sorted(running, reverse=True), running
    entries = [entry for r in detailed.responses for entry in json.loads(r["logprobs"][0])]
    sampled = [next(iter(entry.values()))["logprob"] for entry in entries]  # the sampled token comes first
    assert len(sampled) == GREEDY["max_tokens"]
    assert running[-1] == pytest.approx(sum(sampled), rel=1e-4)
    whole = generate(triton, PROMPTS[0], params=GREEDY).responses[0]
    assert whole["cumulative_logprob"][0] == pytest.approx(running[-1], rel=1e-4)
    assert whole["logprobs"] == ["null"]


def test_prompt_token_ids_input(triton, tokenizer):
    ids = tokenizer(PROMPTS[0])["input_ids"]
    by_ids = triton.infer(make_inputs(token_ids=ids, params=GREEDY, exclude_input=True))
    by_text = generate(triton, PROMPTS[0], params=GREEDY, exclude_input=True)
    assert by_ids.error is None
    assert by_ids.texts() == by_text.texts()
    echoed = triton.infer(make_inputs(token_ids=ids, params=GREEDY, exclude_input=False))
    assert echoed.texts()[0] == tokenizer.decode(ids) + by_text.texts()[0]


def test_string_values_are_parsed_by_value(triton):
    """vllm_backend clients send strings; "false" must be False and "5" must be 5."""
    as_strings = generate(triton, PROMPTS[3], params={"temperature": "0", "max_tokens": "5", "ignore_eos": "false"})
    as_values = generate(triton, PROMPTS[3], params={"temperature": 0, "max_tokens": 5, "ignore_eos": False})
    assert as_strings.texts() == as_values.texts()
    assert as_strings.responses[0]["num_output_tokens"] == [5]


def test_cancellation_aborts_the_engine_request(triton):
    params = {"max_tokens": 900, "ignore_eos": True, "temperature": 0}
    started = time.monotonic()
    outcome = triton.infer(make_inputs(PROMPTS[0], stream=True, params=params), stop_after=3)
    assert len(outcome.responses) == 3
    stats = wait_for_idle(triton)
    assert stats == {"active_requests": 0, "engine_unfinished_requests": 0}
    # 900 tokens take far longer than this on 2 cores: the request was cut short, not run to the end.
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (make_inputs(None, params={"max_tokens": 4}), "text_input"),
        (make_inputs("hi", params="{not json"), "not valid JSON"),
        (make_inputs("hi", params={"max_tokens": 4, "best_of": 2}), "unknown sampling parameter 'best_of'"),
        (make_inputs("hi", params={"temperature": -1}), "temperature"),
        (make_inputs("hi", params={"max_tokens": "lots"}), "max_tokens"),
        (make_inputs("hi", params={"ignore_eos": "maybe"}), "ignore_eos"),
        (make_inputs("word " * 1100, params={"max_tokens": 4}), "maximum context length"),
        (make_inputs("hi", params={"lora_name": "no-such-adapter"}), "unknown LoRA adapter 'no-such-adapter'"),
        (make_inputs(control={"op": "explode"}), "unknown control op"),
    ],
    ids=[
        "missing-text",
        "bad-json",
        "unknown-key",
        "negative-temperature",
        "bad-int",
        "bad-bool",
        "too-long",
        "unknown-lora",
        "unknown-control",
    ],
)
def test_bad_input_is_an_error_naming_the_problem_and_the_model_keeps_serving(triton, inputs, expected):
    outcome = triton.infer(inputs)
    assert outcome.error is not None and expected in outcome.error
    assert outcome.responses == []
    assert generate(triton, "still serving?", params={"max_tokens": 2}).responses[0]["num_output_tokens"] == [2]
