"""frontend.generation.Tally: folding model chunks into choices and usage."""

from __future__ import annotations

from frontend.generation import Tally
from frontend.triton import GenerationChunk


def chunk(prompt_index, texts, reasons, num_input, num_output, logprobs=None) -> GenerationChunk:
    return GenerationChunk(
        texts=texts,
        finish_reasons=reasons,
        num_input_tokens=num_input,
        num_output_tokens=num_output,
        logprobs=logprobs,
        prompt_index=prompt_index,
    )


def test_two_prompts_two_samples_streaming():
    tally = Tally(n=2, num_prompts=2)
    assert len(tally.choices) == 4

    parts = tally.add(chunk(0, ["A", "B"], [None, None], 5, [1, 1]))
    assert parts == [(0, "A", None, []), (1, "B", None, [])]
    parts = tally.add(chunk(1, ["C", "D"], [None, None], 9, [1, 1]))
    assert parts == [(2, "C", None, []), (3, "D", None, [])]
    parts = tally.add(chunk(1, ["c", ""], ["length", "length"], 9, [2, 0]))
    assert parts == [(2, "c", "length", []), (3, "", "length", [])]
    parts = tally.add(chunk(0, ["a", "b"], ["stop", "stop"], 5, [1, 3]))
    assert parts == [(0, "a", "stop", []), (1, "b", "stop", [])]

    assert ["".join(c.text) for c in tally.choices] == ["Aa", "Bb", "Cc", "D"]
    assert [c.finish_reason for c in tally.choices] == ["stop", "stop", "length", "length"]
    assert [c.tokens for c in tally.choices] == [2, 4, 3, 1]

    usage = tally.usage()
    # Prompt tokens once per prompt, not once per chunk or per sample.
    assert usage.prompt_tokens == 5 + 9
    assert usage.completion_tokens == 2 + 4 + 3 + 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_finish_reason_reported_once():
    tally = Tally(n=1, num_prompts=1)
    assert tally.add(chunk(0, ["x"], ["stop"], 3, [1])) == [(0, "x", "stop", [])]
    # A repeated reason (e.g. an empty final response) is not reported again, and yields no part.
    assert tally.add(chunk(0, [""], ["stop"], 3, [0])) == []
    assert tally.add(chunk(0, ["y"], ["length"], 3, [1])) == [(0, "y", None, [])]
    assert tally.choices[0].finish_reason == "stop"


def test_empty_parts_skipped():
    tally = Tally(n=2, num_prompts=1)
    assert tally.add(chunk(0, ["", "z"], [None, None], 2, [0, 1])) == [(1, "z", None, [])]


def test_logprobs_collected():
    entry = {"5": {"logprob": -0.5, "rank": 1, "decoded_token": "a"}}
    tally = Tally(n=1, num_prompts=1)
    parts = tally.add(chunk(0, ["a"], [None], 2, [1], logprobs=[[entry]]))
    assert parts == [(0, "a", None, [entry])]
    tally.add(chunk(0, ["a"], ["stop"], 2, [1], logprobs=[[entry]]))
    assert tally.choices[0].logprobs == [entry, entry]


def test_short_reason_and_count_lists_tolerated():
    tally = Tally(n=2, num_prompts=1)
    parts = tally.add(chunk(0, ["a", "b"], [], 4, []))
    assert parts == [(0, "a", None, []), (1, "b", None, [])]
    assert tally.usage().completion_tokens == 0
    assert tally.usage().prompt_tokens == 4


def test_non_streaming_single_response_per_prompt():
    tally = Tally(n=1, num_prompts=3)
    for index, (text, n_in, n_out) in enumerate([("one", 2, 1), ("two two", 3, 2), ("", 4, 0)]):
        tally.add(chunk(index, [text], ["stop"], n_in, [n_out]))
    assert [c.finish_reason for c in tally.choices] == ["stop", "stop", "stop"]
    usage = tally.usage()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (9, 3, 12)
