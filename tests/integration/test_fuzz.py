"""Schema-driven fuzzing of the frontend with schemathesis (v4), from the frontend's own OpenAPI schema.

Every route of the schema is fuzzed (schemathesis' examples phase; its coverage phase, positive and negative
values field by field and other HTTP methods on each path; and its fuzzing phase, on valid bodies) against a
second frontend with an API key, on the session's Triton. Properties checked on every response:

- never a 5xx (nor a server_error event inside a stream that answered 200, nor a stream without [DONE]);
- every 4xx has OpenAI's error shape {"error": {"message", "type", "param", "code"}};
- 200 JSON answers conform to the schema's response models;
- the frontend (and the session's) still serve a real completion afterwards, and the session's LoRA adapters
  are still there.

Violations are collected over all cases (no stop at the first, no shrinking: bounded time) and reported
together, each with the exact request that caused it, by the last test. Generated requests are kept cheap:
generation lengths, `n` and prompt lists are clamped where they are valid, and the LoRA routes never name a
real path nor the adapters other tests use. Run with `-s` to see the case count by operation and status.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

from frontend.observability import GENERATION_ROUTES  # noqa: E402
from launcher.stack import FrontendProcess  # noqa: E402
from tests.conftest import LORA_NAMES, MODEL_NAME, free_port  # noqa: E402

API_KEY = "sk-fuzz-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SEED = 20240601
# Fuzzing-phase examples per operation (the examples and coverage phases add their own deterministic cases);
# more for the two routes that reach the engine.
MAX_EXAMPLES = 30
MAX_EXAMPLES_GENERATION = 80
TIME_BUDGET_S = 150.0  # all operations together; cases past it are not sent (and reported as skipped)
REQUEST_TIMEOUT_S = 60
MAX_NEW_TOKENS = 8
MAX_N = 2
MAX_PROMPTS = 4
FOLD_TOKEN_IDS = 100  # the tiny model's vocabulary is larger
NO_SUCH_DIR = "/nonexistent-fuzz-dir"
OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}
LORA_ROUTES = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")

# Filled while fuzzing; reported and checked by the last test of the module.
STATS: dict[str, Any] = {
    "outcomes": Counter(),  # (operation, status) -> count
    "messages": Counter(),  # (operation, status, error message prefix) -> count
    "violations": {},  # (operation, problem, error message) -> [count, first request, first response]
    "started": None,
    "skipped_over_budget": 0,
}


@pytest.fixture(scope="module")
def fuzzed_frontend(triton_grpc_url, tmp_path_factory):
    """A second frontend on the session's Triton, with an API key, so auth is part of every fuzzed request."""
    frontend = FrontendProcess(
        port=free_port(),
        triton_grpc=triton_grpc_url,
        api_key=API_KEY,
        log_path=tmp_path_factory.mktemp("fuzz") / "frontend.log",
    )
    frontend.start()
    yield frontend
    frontend.stop()


# ---- keeping generated requests cheap and harmless ----


def _valid_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fold_ids(ids: Any) -> Any:
    if isinstance(ids, list) and all(_valid_int(i) and i >= 0 for i in ids):
        return [i % FOLD_TOKEN_IDS for i in ids]
    return ids


def tame(path: str, body: Any) -> Any:
    """Clamp the cost of valid generation requests; keep LoRA management away from real paths and adapters.

    Applied to every case just before it is sent: schemathesis' `map_body` hook does not see the cases of its
    coverage phase. Invalid values are left as generated, so negative cases stay negative.
    """
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if path in GENERATION_ROUTES:
        if isinstance(body.get("model"), str):
            # Mostly names that exist (the base model, an adapter), so that valid requests reach the engine.
            body["model"] = (MODEL_NAME, LORA_NAMES[0], body["model"])[len(body["model"]) % 3]
        for key in ("max_tokens", "max_completion_tokens"):
            if _valid_int(body.get(key)) and body[key] > MAX_NEW_TOKENS:
                body[key] = MAX_NEW_TOKENS
        # Absent or null means "the rest of the context window": too long for fuzzing.
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
            body["max_tokens"] = MAX_NEW_TOKENS
        limit = body.get("max_completion_tokens", body.get("max_tokens")) or body.get("max_tokens")
        if _valid_int(body.get("min_tokens")) and _valid_int(limit) and body["min_tokens"] > limit >= 0:
            body["min_tokens"] = limit  # else a 400 for min_tokens > max_tokens, made by the clamping above
        if _valid_int(body.get("n")) and body["n"] > MAX_N:
            body["n"] = MAX_N
        prompt = body.get("prompt")
        if prompt == "" and len(body) % 2:
            # The coverage phase varies one field at a time over a body whose prompt is "" (a 400 before the
            # engine sees the field): give half of those a prompt.
            body["prompt"] = prompt = "x"
        if isinstance(prompt, list) and len(prompt) > MAX_PROMPTS:
            body["prompt"] = prompt = prompt[:MAX_PROMPTS]
        if isinstance(prompt, list) and len(prompt) % 2 == 0:
            # Random token ids are nearly all out of the vocabulary (a 400): fold half of the token-id prompts
            # into it, so those reach the engine; the other half keeps testing the out-of-range paths.
            body["prompt"] = (
                [_fold_ids(p) for p in prompt] if all(isinstance(p, list) for p in prompt) else _fold_ids(prompt)
            )
    if path == "/v1/load_lora_adapter" and isinstance(body.get("lora_path"), str):
        # Under a directory that does not exist (and no "..", so the path cannot climb out of it).
        body["lora_path"] = f"{NO_SUCH_DIR}/{body['lora_path'].replace('..', '__')}"
    if path in LORA_ROUTES and body.get("lora_name") in LORA_NAMES:
        body["lora_name"] = f"fuzz-{body['lora_name']}"
    return body


# ---- checks ----


def _request_text(case) -> str:
    body = "" if case.body is None else " " + json.dumps(case.body, ensure_ascii=True, default=repr)
    query = f" query={case.query}" if case.query else ""
    return f"{case.method} {case.formatted_path}{query}{body}"


def _violation(case, response, problem: str) -> None:
    """Record one; distinct (operation, problem, error message) keep their first request."""
    try:
        message = str(response.json()["error"]["message"])[:80]
    except (ValueError, KeyError, TypeError):
        message = ""
    key = (case.operation.label, problem, message)
    entry = STATS["violations"].setdefault(key, [0, _request_text(case), response.text[:500]])
    entry[0] += 1


def _check_error_shape(payload: Any) -> str | None:
    """None when `payload` is OpenAI's error object, else what is wrong with it."""
    if not isinstance(payload, dict) or set(payload) != {"error"}:
        return f"top level is not exactly {{'error'}}: {str(payload)[:200]}"
    error = payload["error"]
    if not isinstance(error, dict) or set(error) != OPENAI_ERROR_KEYS:
        return f"error keys are not {sorted(OPENAI_ERROR_KEYS)}: {str(error)[:200]}"
    if not isinstance(error["message"], str) or not error["message"]:
        return "error.message is not a non-empty string"
    if not isinstance(error["type"], str) or not error["type"]:
        return "error.type is not a non-empty string"
    for key in ("param", "code"):
        if error[key] is not None and not isinstance(error[key], str):
            return f"error.{key} is neither null nor a string: {error[key]!r}"
    return None


def _stream_problems(text: str) -> list[str]:
    """Problems in an SSE body that answered 200: server errors inside the stream, a missing [DONE]."""
    problems = []
    events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    for event in events:
        if event == "[DONE]":
            continue
        try:
            payload = json.loads(event)
        except ValueError:
            problems.append(f"an SSE event is not JSON: {event[:100]!r}")
            continue
        if isinstance(payload, dict) and "error" in payload:
            shape = _check_error_shape(payload)
            if shape:
                problems.append(f"in-stream error with a bad shape: {shape}")
            elif payload["error"]["type"] == "server_error":
                problems.append(f"in-stream server error: {payload['error']['message'][:100]}")
    if not events or events[-1] != "[DONE]":
        problems.append("the stream does not end with [DONE]")
    return problems


def _content_type(response) -> str:
    values = response.headers.get("content-type") or [""]
    return values[0] if isinstance(values, list) else values


def _load_schema():
    """The frontend's OpenAPI schema, built by the same code that serves /openapi.json (checked equal below).

    Loaded at import because schemathesis' lazy `from_fixture` loader does not work with pytest 9.2 (it sets
    `request.node._nodeid`, which pytest 9.2 no longer has); the requests go to the fuzzed frontend's URL.
    """
    from frontend.app import create_app
    from frontend.settings import Settings

    raw = create_app(Settings(api_key=API_KEY)).openapi()
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": AUTH,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
            # The coverage phase sends positive and negative values field by field; random fuzzing stays on
            # valid bodies, which reach the engine far more often (negative ones mostly stop at validation).
            "phases": {"stateful": {"enabled": False}, "fuzzing": {"generation": {"mode": "positive"}}},
            "operations": [
                {
                    "include-path": list(GENERATION_ROUTES),
                    "phases": {
                        "fuzzing": {"generation": {"mode": "positive", "max-examples": MAX_EXAMPLES_GENERATION}}
                    },
                }
            ],
        }
    )
    return raw, schemathesis.openapi.from_dict(raw, config=config)


RAW_SCHEMA, schema = _load_schema()


# ---- the tests ----


def test_served_schema_is_the_fuzzed_one(fuzzed_frontend):
    served = httpx.get(f"{fuzzed_frontend.base_url}/openapi.json", headers=AUTH, timeout=30)
    assert served.status_code == 200
    assert served.json() == RAW_SCHEMA


@schema.parametrize()
@settings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time; each request is reported as sent
    suppress_health_check=list(HealthCheck),
)
def test_fuzz_every_route(case, fuzzed_frontend):
    if STATS["started"] is None:
        STATS["started"] = time.monotonic()
    if time.monotonic() - STATS["started"] > TIME_BUDGET_S:
        STATS["skipped_over_budget"] += 1
        return
    if case.method.upper() == "POST":
        case.body = tame(case.operation.path, case.body)
    response = case.call(base_url=fuzzed_frontend.base_url, headers=AUTH, timeout=REQUEST_TIMEOUT_S)
    # The coverage phase also sends other methods to each path (expecting 405): counted apart.
    label = case.operation.label if case.method.upper() == case.operation.method.upper() else "other methods"
    status = response.status_code
    streamed = _content_type(response).startswith("text/event-stream")
    STATS["outcomes"][(label, f"{status} SSE" if streamed else str(status))] += 1
    if status >= 500:
        _violation(case, response, f"HTTP {status}")
    elif status == 401:
        _violation(case, response, "the API key was refused")
    elif status >= 400:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        problem = _check_error_shape(payload)
        if problem:
            _violation(case, response, f"HTTP {status} without OpenAI's error shape: {problem}")
        else:
            STATS["messages"][(label, status, payload["error"]["message"][:70])] += 1
    elif status == 200 and streamed:
        for problem in _stream_problems(response.text):
            _violation(case, response, problem)
    elif status == 200 and _content_type(response).startswith("application/json"):
        try:
            case.validate_response(response, checks=[response_schema_conformance])
        except Exception as exc:  # noqa: BLE001 - schemathesis raises its failure group; recorded with the rest
            _violation(case, response, f"response does not conform to the schema: {str(exc)[:300]}")


# Integer boundaries that random generation rarely reaches: JSON integers past int64 / uint64 in every integer
# field must be refused (4xx) or served, never a 5xx.
BIG = 2**64
INTEGER_EDGES = [
    ("/v1/completions", {"prompt": [2**63]}),
    ("/v1/completions", {"prompt": [[1, 2], [BIG]]}),
    ("/v1/completions", {"seed": BIG}),
    ("/v1/completions", {"seed": -(2**63) - 1}),
    ("/v1/completions", {"top_k": BIG}),
    ("/v1/completions", {"max_tokens": BIG}),
    ("/v1/completions", {"min_tokens": BIG}),
    ("/v1/completions", {"n": BIG}),
    ("/v1/completions", {"logprobs": BIG}),
    ("/v1/completions", {"stop_token_ids": [BIG]}),
    ("/v1/completions", {"logit_bias": {str(BIG): 1}}),
    ("/v1/chat/completions", {"seed": BIG}),
    ("/v1/chat/completions", {"max_completion_tokens": BIG}),
    ("/v1/chat/completions", {"logprobs": True, "top_logprobs": BIG}),
]


@pytest.mark.parametrize(
    ("route", "fields"), INTEGER_EDGES, ids=[f"{r.split('/')[2]}-{'-'.join(f)}" for r, f in INTEGER_EDGES]
)
def test_integers_past_64_bits_are_never_a_server_error(fuzzed_frontend, route, fields):
    base = {"model": MODEL_NAME, "max_tokens": 4}
    base.update({"prompt": "hi"} if route == "/v1/completions" else {"messages": [{"role": "user", "content": "hi"}]})
    body = {**base, **fields}
    response = httpx.post(f"{fuzzed_frontend.base_url}{route}", json=body, headers=AUTH, timeout=60)
    assert response.status_code < 500, f"POST {route} {json.dumps(body)} -> {response.status_code} {response.text}"
    if response.status_code >= 400:
        assert _check_error_shape(response.json()) is None, response.text


def test_fuzzing_found_no_5xx_nor_malformed_errors_and_the_stack_still_serves(fuzzed_frontend, base_url):
    outcomes: Counter = STATS["outcomes"]
    total = sum(outcomes.values())
    operations = {label for label, _ in outcomes if label != "other methods"}
    lines = [f"fuzz: {total} cases sent, {STATS['skipped_over_budget']} skipped over the time budget"]
    lines += [f"  {label:<34} {status:>7}  x{count}" for (label, status), count in sorted(outcomes.items())]
    lines.append("most frequent 4xx messages:")
    for (label, status, message), count in STATS["messages"].most_common(15):
        lines.append(f"  {label:<30} {status} x{count:<4} {message}")
    violations = [
        f"{label}: {problem} (x{count})\n    request: {request}\n    response: {response}"
        for (label, problem, _), (count, request, response) in STATS["violations"].items()
    ]
    lines.append(f"violations: {len(violations)}")
    lines += [f"  {violation}" for violation in violations]
    report = "\n".join(lines)
    print("\n" + report)

    body = {"model": MODEL_NAME, "prompt": "def hello", "max_tokens": 4, "ignore_eos": True, "temperature": 0}
    for url, headers in ((fuzzed_frontend.base_url, AUTH), (base_url, {})):
        response = httpx.post(f"{url}/v1/completions", json=body, headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == 4
    # The session's adapters survived the LoRA routes being fuzzed.
    models = httpx.get(f"{base_url}/v1/models", timeout=30).json()
    assert {m["id"] for m in models["data"]} >= {MODEL_NAME, *LORA_NAMES}

    assert total > 0, "no fuzz case ran"
    routes = {f"{method.upper()} {path}" for path, item in RAW_SCHEMA["paths"].items() for method in item}
    assert operations == routes, f"every route is fuzzed: {sorted(operations)} vs {sorted(routes)}"
    assert not violations, report
