"""vLLM's utility routes through the real stack: /tokenize, /detokenize, /version, /v1/models/{id}, and their auth."""

from __future__ import annotations

import httpx
import pytest

from launcher.stack import FrontendProcess
from tests.conftest import MODEL_NAME, free_port
from tests.integration.test_completions import assert_openai_error

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a prime."},
]


def post(base_url: str, path: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{base_url}{path}", json=body, timeout=60, **kwargs)


def test_tokenize_prompt_count_equals_completion_usage(base_url, openai_client, tokenizer):
    prompt = "def hello(name):\n    return"
    result = post(base_url, "/tokenize", {"model": MODEL_NAME, "prompt": prompt}).json()
    assert set(result) == {"count", "max_model_len", "tokens"}
    assert result["count"] == len(result["tokens"]) > 0
    assert result["max_model_len"] == 1024
    assert result["tokens"] == tokenizer.encode(prompt)
    usage = openai_client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=1).usage
    assert result["count"] == usage.prompt_tokens


def test_tokenize_messages_count_equals_chat_usage(base_url, openai_client):
    result = post(base_url, "/tokenize", {"model": MODEL_NAME, "messages": MESSAGES}).json()
    usage = openai_client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=1).usage
    assert result["count"] == usage.prompt_tokens
    without_prompt = post(base_url, "/tokenize", {"messages": MESSAGES, "add_generation_prompt": False}).json()
    assert without_prompt["count"] < result["count"]


def test_token_strs_and_detokenize_round_trip(base_url, tokenizer):
    text = "import os\nprint(os.getcwd())"
    result = post(base_url, "/tokenize", {"prompt": text, "return_token_strs": True}).json()
    assert result["token_strs"] == tokenizer.convert_ids_to_tokens(result["tokens"])
    assert post(base_url, "/detokenize", {"model": MODEL_NAME, "tokens": result["tokens"]}).json() == {"prompt": text}


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/tokenize", {}, 400, None),
        ("/tokenize", {"prompt": "a", "messages": MESSAGES}, 400, None),
        ("/tokenize", {"prompt": 5}, 400, "prompt"),
        ("/tokenize", {"model": "nope", "prompt": "a"}, 404, "model"),
        ("/detokenize", {"tokens": "abc"}, 400, "tokens"),
        ("/detokenize", {"tokens": [-1]}, 400, "tokens.0"),
        ("/detokenize", {"tokens": [10**9]}, 400, None),
    ],
    ids=["empty", "both", "bad-prompt", "unknown-model", "tokens-string", "negative", "out-of-vocab"],
)
def test_bad_utility_input(base_url, path, body, status, param):
    error = assert_openai_error(post(base_url, path, body), status)
    if param:
        assert error["param"] == param, error
    assert post(base_url, "/tokenize", {"prompt": "still serving"}).status_code == 200


def test_version(base_url):
    import vllm

    result = httpx.get(f"{base_url}/version").json()
    assert result["version"] == vllm.__version__
    assert result["frontend_version"]


def test_model_by_id(openai_client):
    card = openai_client.models.retrieve(MODEL_NAME)
    assert card.id == MODEL_NAME and card.object == "model"
    assert openai_client.models.retrieve("adapter-a").id == "adapter-a"
    import openai

    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("nope")


def test_utility_routes_need_the_key_when_one_is_set(triton_grpc_url, tmp_path):
    frontend = FrontendProcess(
        port=free_port(), triton_grpc=triton_grpc_url, api_key="sesame", log_path=tmp_path / "frontend.log"
    )
    frontend.start()
    try:
        url = frontend.base_url
        for method, path, body in (
            ("POST", "/tokenize", {"prompt": "hi"}),
            ("POST", "/detokenize", {"tokens": [1]}),
            ("GET", "/version", None),
            ("GET", f"/v1/models/{MODEL_NAME}", None),
        ):
            response = httpx.request(method, f"{url}{path}", json=body, timeout=60)
            assert_openai_error(response, 401)
            headers = {"Authorization": "Bearer sesame"}
            assert httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=60).status_code == 200
    finally:
        frontend.stop()


def test_tokenize_control_ops_on_the_contract(triton, tokenizer):
    """The model's side of the contract (docs/CONTRACT.md), spoken with tritonclient."""
    text = "<|im_start|>user\nhi<|im_end|>"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert triton.control("tokenize", prompt=text, add_special_tokens=False) == {"tokens": ids}
    assert triton.control("detokenize", tokens=ids) == {"prompt": text}
    assert triton.control("info")["vllm_version"]
    for fields in ({"prompt": 5}, {"prompt": "a", "add_special_tokens": "yes"}):
        with pytest.raises(RuntimeError, match="tokenize needs"):
            triton.control("tokenize", **fields)
    with pytest.raises(RuntimeError, match="detokenize needs"):
        triton.control("detokenize", tokens=["a"])
