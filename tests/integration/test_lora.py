"""LoRA adapters by name: declared at start-up (multi_lora via the launcher) and loaded/unloaded at run time."""

from __future__ import annotations

import asyncio
import json
import shutil

import httpx
import pytest

from tests.conftest import GREEDY, LORA_NAMES, MODEL_NAME, PARITY_PROMPTS, TINY_LORAS
from tests.integration.test_completions import assert_openai_error


def greedy(client, model: str, prompt: str) -> str:
    result = client.completions.create(model=model, prompt=prompt, **GREEDY)
    assert result.model == model
    return result.choices[0].text


@pytest.mark.parametrize("name", LORA_NAMES)
@pytest.mark.parametrize("index", [0, 1])
def test_adapter_output_equals_offline_vllm_with_the_same_lora_request(openai_client, reference, name, index):
    assert [greedy(openai_client, name, PARITY_PROMPTS[index])] == reference[f"{name}-{index}"]["texts"]


def test_adapters_differ_from_the_base_and_from_each_other(openai_client):
    outputs = {model: greedy(openai_client, model, PARITY_PROMPTS[0]) for model in (MODEL_NAME, *LORA_NAMES)}
    assert len(set(outputs.values())) == 3, outputs


async def test_mixed_concurrent_base_and_adapter_traffic(async_openai_client, reference):
    """Base, A and B requests interleaved in the same batches each get their own output."""
    expected = {(MODEL_NAME, i): reference[f"prompt-{i}"]["texts"][0] for i in (0, 1)}
    expected.update({(name, i): reference[f"{name}-{i}"]["texts"][0] for name in LORA_NAMES for i in (0, 1)})
    jobs = [key for _ in range(3) for key in expected]  # 18 requests, all in flight together

    async def run(model: str, index: int) -> str:
        result = await async_openai_client.completions.create(model=model, prompt=PARITY_PROMPTS[index], **GREEDY)
        return result.choices[0].text

    results = await asyncio.gather(*[run(*key) for key in jobs])
    wrong = [(key, text) for key, text in zip(jobs, results, strict=True) if text != expected[key]]
    assert wrong == []


def test_models_list_base_and_adapters_with_parent(openai_client):
    cards = {m.id: m for m in openai_client.models.list().data}
    assert set(cards) == {MODEL_NAME, *LORA_NAMES}
    for name in LORA_NAMES:
        card = cards[name].model_dump()
        assert card["parent"] == MODEL_NAME and card["root"] == name
    assert cards[MODEL_NAME].model_dump()["parent"] is None


def test_unknown_adapter_is_404(base_url):
    body = {"model": "adapter-z", "prompt": "hi", "max_tokens": 2}
    error = assert_openai_error(httpx.post(f"{base_url}/v1/completions", json=body), 404, param="model")
    assert error["code"] == "model_not_found"


def load(base_url: str, name: str, path) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}, timeout=120)


def unload(base_url: str, name: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=120)


def test_load_at_run_time_use_at_once_then_unload(base_url, openai_client, tmp_path):
    copy = tmp_path / "adapter-c"
    shutil.copytree(TINY_LORAS / "adapter-a", copy)
    response = load(base_url, "adapter-c", copy)
    assert response.status_code == 200, response.text
    assert "adapter-c" in [m.id for m in openai_client.models.list().data]
    # The same weights as adapter-a under another name: the same text.
    assert greedy(openai_client, "adapter-c", PARITY_PROMPTS[0]) == greedy(
        openai_client, "adapter-a", PARITY_PROMPTS[0]
    )
    assert unload(base_url, "adapter-c").status_code == 200
    body = {"model": "adapter-c", "prompt": "hi", "max_tokens": 2}
    assert_openai_error(httpx.post(f"{base_url}/v1/completions", json=body), 404, param="model")
    assert "adapter-c" not in [m.id for m in openai_client.models.list().data]
    assert_openai_error(unload(base_url, "adapter-c"), 404)


def test_bad_adapters_are_400_and_the_server_keeps_serving(base_url, openai_client, tmp_path):
    assert_openai_error(load(base_url, "ghost", tmp_path / "does-not-exist"), 400, contains="not a directory")
    # Rank 16 > the engine's max_lora_rank of 8: the engine refuses it.
    big = tmp_path / "too-big"
    shutil.copytree(TINY_LORAS / "adapter-a", big)
    config = json.loads((big / "adapter_config.json").read_text())
    config["r"] = 16
    (big / "adapter_config.json").write_text(json.dumps(config))
    error = assert_openai_error(load(base_url, "too-big", big), 400)
    assert "too-big" in error["message"]
    assert_openai_error(load(base_url, MODEL_NAME, TINY_LORAS / "adapter-a"), 400, param="lora_name")
    assert_openai_error(load(base_url, "adapter-a", TINY_LORAS / "adapter-a"), 400, contains="already loaded")
    assert_openai_error(httpx.post(f"{base_url}/v1/load_lora_adapter", json={"lora_name": "x"}), 400)
    assert {m.id for m in openai_client.models.list().data} == {MODEL_NAME, *LORA_NAMES}
    assert greedy(openai_client, "adapter-b", PARITY_PROMPTS[1])


def test_the_adapter_limit_is_enforced(base_url, tmp_path):
    names = ["extra-1", "extra-2"]
    try:
        for name in names:  # 2 declared + 2 = the capacity
            shutil.copytree(TINY_LORAS / "adapter-b", tmp_path / name)
            assert load(base_url, name, tmp_path / name).status_code == 200
        shutil.copytree(TINY_LORAS / "adapter-b", tmp_path / "extra-3")
        assert_openai_error(load(base_url, "extra-3", tmp_path / "extra-3"), 400, contains="unload one first")
    finally:
        for name in names:
            unload(base_url, name)


def test_unloading_while_a_request_uses_the_adapter_is_safe(base_url, tmp_path, openai_client):
    copy = tmp_path / "adapter-d"
    shutil.copytree(TINY_LORAS / "adapter-a", copy)
    assert load(base_url, "adapter-d", copy).status_code == 200
    stream = openai_client.completions.create(
        model="adapter-d",
        prompt="def hello",
        max_tokens=120,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = [next(stream), next(stream)]
    assert unload(base_url, "adapter-d").status_code == 200
    assert_openai_error(
        httpx.post(f"{base_url}/v1/completions", json={"model": "adapter-d", "prompt": "x", "max_tokens": 2}), 404
    )
    chunks += list(stream)
    assert chunks[-1].usage.completion_tokens == 120
    assert chunks[-2].choices[0].finish_reason == "length"
