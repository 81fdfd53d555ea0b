"""The SSE framing of /v1/completions and /v1/chat/completions, end to end through the real app, without a stack:
a fake Triton client plays hand-built generation chunks (tests/unit/fake_triton.py)."""

from __future__ import annotations

import pytest

from frontend.triton import TritonError
from tests.unit.fake_triton import MODEL, FakeTriton, chunk, client_for, entry, model_error, sse_events

MESSAGES = [{"role": "user", "content": "hi"}]
BOTH_ROUTES = [("/v1/completions", {"prompt": "p"}), ("/v1/chat/completions", {"messages": MESSAGES})]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
# Two samples: "Hello" (stops) and "Hi" (runs out of tokens), the last response carrying no text.
TWO = [
    chunk(["Hel", "H"]),
    chunk(["lo", "i"], ["stop", None], [1, 1]),
    chunk(["", ""], ["stop", "length"], [0, 0]),
]


async def stream(fake: FakeTriton, path: str, body: dict, **settings) -> list:
    async with client_for(fake, **settings) as http:
        response = await http.post(path, json={"model": MODEL, "stream": True, **body})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return sse_events(response.content)


def choice_events(events: list) -> list[dict]:
    return [(e, c) for e in events if isinstance(e, dict) and "choices" in e for c in e["choices"]]


async def test_chat_role_first_finish_last_then_done():
    events = await stream(FakeTriton(TWO), "/v1/chat/completions", {"messages": MESSAGES, "n": 2})
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == MODEL for e in events[:-1])
    assert len({e["id"] for e in events[:-1]}) == 1, "one id for the whole stream"
    for index in (0, 1):
        mine = [c for _, c in choice_events(events) if c["index"] == index]
        # The role opens each choice, with empty content, before any text.
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert all("role" not in c["delta"] for c in mine[1:])
        # The finish reason comes once, on the choice's last event.
        assert [c["finish_reason"] for c in mine][:-1] == [None] * (len(mine) - 1)
        assert mine[-1]["finish_reason"] == ("stop", "length")[index]
        assert "".join(c["delta"].get("content", "") for c in mine) == ("Hello", "Hi")[index]
    assert all("usage" not in e for e in events[:-1]), "no usage unless asked for"


async def test_chat_usage_chunk_last_before_done():
    body = {"messages": MESSAGES, "n": 2, "stream_options": {"include_usage": True}}
    events = await stream(FakeTriton(TWO), "/v1/chat/completions", body)
    *chunks, usage, done = events
    assert done == "[DONE]"
    assert usage["choices"] == [] and usage["object"] == "chat.completion.chunk"
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert all("usage" not in e for e in chunks), "only the last chunk has usage without continuous_usage_stats"


async def test_continuous_usage_on_every_content_chunk():
    options = {"include_usage": True, "continuous_usage_stats": True}
    events = await stream(FakeTriton(TWO), "/v1/completions", {"prompt": "p", "n": 2, "stream_options": options})
    *chunks, final, done = events
    totals = [e["usage"]["completion_tokens"] for e in chunks]
    assert totals == sorted(totals) and totals[-1] == final["usage"]["completion_tokens"] == 4
    assert done == "[DONE]"


async def test_completion_chunks_finish_last_and_done():
    events = await stream(FakeTriton(TWO), "/v1/completions", {"prompt": "p", "n": 2})
    assert events[-1] == "[DONE]"
    assert all(e["object"] == "text_completion" for e in events[:-1])
    for index, (text, reason) in enumerate((("Hello", "stop"), ("Hi", "length"))):
        mine = [c for _, c in choice_events(events) if c["index"] == index]
        assert "".join(c["text"] for c in mine) == text
        assert [c["finish_reason"] for c in mine] == [None] * (len(mine) - 1) + [reason]
        assert all(set(c) == {"index", "text", "logprobs", "finish_reason"} for c in mine)


async def test_completion_logprob_offsets_run_on_across_chunks():
    script = [
        chunk(["Hel"], logprobs=[[entry((5, -0.1, 1, "Hel"))]]),
        chunk(["lo"], ["stop"], logprobs=[[entry((9, -0.5, 1, "lo"))]]),
    ]
    events = await stream(FakeTriton(script), "/v1/completions", {"prompt": "p", "logprobs": 0})
    logprobs = [c["logprobs"] for _, c in choice_events(events)]
    assert [lp["text_offset"] for lp in logprobs] == [[0], [3]]
    assert [lp["tokens"] for lp in logprobs] == [["Hel"], ["lo"]]


@pytest.mark.parametrize("path,body", BOTH_ROUTES)
@pytest.mark.parametrize("include_usage", [False, True])
async def test_error_mid_stream_is_an_openai_error_event(path, body, include_usage):
    fake = FakeTriton([chunk(["Hel"]), TritonError("engine is dead", "unavailable"), chunk(["never"])])
    body = {**body, "stream_options": {"include_usage": include_usage}}
    events = await stream(fake, path, body)
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert errors == [
        {
            "error": {
                "message": "the model is not available: engine is dead",
                "type": "server_error",
                "param": None,
                "code": "service_unavailable",
            }
        }
    ]
    after = events[events.index(errors[0]) + 1 :]
    # After the error: the usage so far when asked for, then [DONE]; no more text.
    assert after == ([events[-2]] if include_usage else []) + ["[DONE]"]
    if include_usage:
        assert after[0]["choices"] == [] and after[0]["usage"]["completion_tokens"] == 1
    assert "never" not in str(events)
    assert fake.closed == 1, "the generation is closed"


@pytest.mark.parametrize("path,body", BOTH_ROUTES)
async def test_error_before_the_first_chunk_is_an_http_status(path, body):
    async with client_for(FakeTriton([model_error()])) as http:
        response = await http.post(path, json={"model": MODEL, "stream": True, **body})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"


async def test_streamed_tool_call_deltas():
    pieces = ['<tool_call>{"name": "get_weather", ', '"arguments": {"city": "Pa', 'ris"}}</tool_call>']
    script = [chunk([p]) for p in pieces] + [chunk([""], ["stop"], [0])]
    events = await stream(
        FakeTriton(script), "/v1/chat/completions", {"messages": MESSAGES, "tools": TOOLS}, tool_call_parser="hermes"
    )
    calls = [call for _, c in choice_events(events) for call in c["delta"].get("tool_calls", [])]
    first, *rest = calls
    assert set(first) == {"index", "id", "type", "function"} and first["id"].startswith("call_")
    assert first["function"]["name"] == "get_weather"
    assert all(set(call) == {"index", "function"} and set(call["function"]) == {"arguments"} for call in rest)
    assert "".join(call["function"]["arguments"] for call in calls) == '{"city": "Paris"}'
    assert choice_events(events)[-1][1]["finish_reason"] == "tool_calls"
    assert events[-1] == "[DONE]"


async def test_not_streamed_is_one_response_from_the_same_path():
    async with client_for(FakeTriton(TWO)) as http:
        response = await http.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "n": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert [c["message"]["content"] for c in body["choices"]] == ["Hello", "Hi"]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length"]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


async def test_two_prompts_stream_as_one():
    scripts = {"a": [chunk(["A"], ["stop"])], "b": [chunk(["B"]), chunk(["b"], ["stop"])]}
    fake = FakeTriton(lambda request: scripts[request.prompt])
    options = {"include_usage": True}
    events = await stream(fake, "/v1/completions", {"prompt": ["a", "b"], "stream_options": options})
    texts = {0: "", 1: ""}
    for _, c in choice_events(events):
        texts[c["index"]] += c["text"]
    assert texts == {0: "A", 1: "Bb"}
    assert events[-2]["usage"]["prompt_tokens"] == 6, "prompt tokens once per prompt"
