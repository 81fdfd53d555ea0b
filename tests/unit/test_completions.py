"""frontend.completions.completion_logprobs: the model's per-token logprob dicts in OpenAI's completions shape."""

from __future__ import annotations

from frontend.completions import completion_logprobs


def entry(*tokens: tuple[int, float, int, str]) -> dict:
    return {str(tid): {"logprob": lp, "rank": rank, "decoded_token": text} for tid, lp, rank, text in tokens}


def test_single_token_with_alternatives():
    entries = [entry((5, -0.1, 1, "a"), (7, -2.0, 2, "b"))]
    result = completion_logprobs(entries, 0)
    assert result.tokens == ["a"]
    assert result.token_logprobs == [-0.1]
    assert result.top_logprobs == [{"a": -0.1, "b": -2.0}]
    assert result.text_offset == [0]


def test_offsets_accumulate_from_start():
    entries = [
        entry((5, -0.1, 1, "He")),
        entry((9, -0.5, 2, "llo"), (3, -0.3, 1, "y")),
        entry((1, -1.0, 1, " world")),
    ]
    result = completion_logprobs(entries, 10)
    assert result.tokens == ["He", "llo", " world"]
    # The first entry of each dict is the sampled token, even when it is not the top-ranked one.
    assert result.token_logprobs == [-0.1, -0.5, -1.0]
    assert result.text_offset == [10, 12, 15]
    assert result.top_logprobs[1] == {"llo": -0.5, "y": -0.3}


def test_empty_entries():
    result = completion_logprobs([], 3)
    assert (result.tokens, result.token_logprobs, result.top_logprobs, result.text_offset) == ([], [], [], [])


def test_empty_position_dict():
    result = completion_logprobs([{}], 0)
    assert result.tokens == [""]
    assert result.token_logprobs == [None]
    assert result.top_logprobs == [{}]
    assert result.text_offset == [0]


def test_missing_decoded_token_is_empty_string():
    entries = [{"4": {"logprob": -0.2, "rank": 1, "decoded_token": None}}, entry((6, -0.4, 1, "x"))]
    result = completion_logprobs(entries, 0)
    assert result.tokens == ["", "x"]
    assert result.top_logprobs[0] == {"": -0.2}
    assert result.text_offset == [0, 0]


def test_dump_shape():
    dumped = completion_logprobs([entry((5, -0.1, 1, "a"))], 0).model_dump()
    assert dumped == {"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": [{"a": -0.1}], "text_offset": [0]}
