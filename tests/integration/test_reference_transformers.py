"""The numbers: served greedy text and logprobs equal an independent implementation (transformers, float32).

The parity tests against vLLM's offline engine check our plumbing; they share vLLM's kernels, so a wrong kernel
(vLLM-CPU's bf16 path on Intel AMX answered "What is the capital of France?" with "L'Étoile, la Marseillaise, ...")
passes them. These compare with Hugging Face transformers in float32: for the tiny test model (on the session
stack), its LoRA adapters (transformers + PEFT), and the default model SmolLM2-135M-Instruct served with the
engine settings `make serve` uses (model.json, dtype left to the model's CPU default).

Every case asks for N_TOKENS greedy tokens with ignore_eos and top-5 logprobs. Served and reference tokens must
agree token for token; the only divergence allowed is at a near tie (reference margin below NEAR_TIE) and only after
MIN_AGREE tokens. Logprobs of the agreeing tokens, and the sorted top-5 values, must be within LOGPROB_ATOL.
"""

from __future__ import annotations

import math

import pytest

from tests import reference_hf as hf
from tests.conftest import LORA_NAMES, MODEL_NAME, TINY_LORAS, TINY_MODEL, ensure_default_model, running_stack

N_TOKENS = 16
MIN_AGREE = 12
TOP_K = 5
# Both sides compute float32 log-softmax over the same weights; they differ only in summation order and kernels
# (oneDNN/vLLM's CPU attention vs torch eager). Measured on an AMD EPYC: max |Δ| 1.8e-5 (tiny), 2.7e-4 (LoRA),
# 5.3e-5 (SmolLM2, 30 layers). 5e-3 is ~20x the worst seen, and far below what reduced precision gives (bf16 moves
# logprobs by tenths of a nat and flips greedy tokens).
LOGPROB_ATOL = 5e-3

TINY_PROMPTS = [
    "def hello",
    "import os\nimport sys\n",
    "The quick brown fox",
    "class Parser:",
    "for i in range(",
    "    return self.",
    "# Copyright",
    "if __name__ ==",
]
TINY_CHATS = [
    [{"role": "user", "content": "Say something about Python."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a prime."}],
    [
        {"role": "user", "content": "def f(x):"},
        {"role": "assistant", "content": "return x"},
        {"role": "user", "content": "And g?"},
    ],
    [{"role": "user", "content": "import json"}],
]
DEFAULT_PROMPTS = [
    "The capital of France is",
    "Water boils at a temperature of",
    "The first president of the United States was",
    "def fibonacci(n):",
    "The three primary colors are",
    "Once upon a time, there was a",
    "The largest planet in our solar system is",
    "To make a cup of tea, first",
]
DEFAULT_CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Give me three tips for staying healthy."}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is 2 + 2?"},
    ],
    [
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "Apple."},
        {"role": "user", "content": "Name another one."},
    ],
]
GREEDY = {"temperature": 0, "max_tokens": N_TOKENS}
EXTRA = {"ignore_eos": True}


def served_completion(client, model: str, prompt: str) -> dict:
    result = client.completions.create(model=model, prompt=prompt, logprobs=TOP_K, extra_body=EXTRA, **GREEDY)
    lp = result.choices[0].logprobs
    return {
        "text": result.choices[0].text,
        "logprobs": lp.token_logprobs,
        "top": [sorted(top.values(), reverse=True) for top in lp.top_logprobs],
        "all_k": False,
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
    }


def served_chat(client, model: str, messages: list[dict]) -> dict:
    result = client.chat.completions.create(
        model=model, messages=messages, logprobs=True, top_logprobs=TOP_K, extra_body=EXTRA, **GREEDY
    )
    content = result.choices[0].logprobs.content
    return {
        "text": result.choices[0].message.content,
        "logprobs": [c.logprob for c in content],
        "top": [sorted((t.logprob for t in c.top_logprobs), reverse=True) for c in content],
        "all_k": True,
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
    }


def cases(prompts: list[str], chats: list[list[dict]]) -> list:
    """One ("completion", prompt) case per prompt and one ("chat", messages) case per conversation."""
    return [pytest.param("completion", prompt, id=f"completion-{i}") for i, prompt in enumerate(prompts)] + [
        pytest.param("chat", messages, id=f"chat-{i}") for i, messages in enumerate(chats)
    ]


def check_greedy_equals_transformers(client, model: str, model_dir: str, kind: str, case) -> None:
    """Serve one completion or chat case greedily and compare it with transformers fp32 on the same prompt ids."""
    if kind == "completion":
        ids, served, label = hf.text_prompt_ids(model_dir, case), served_completion(client, model, case), repr(case)
    else:
        ids, served, label = hf.chat_prompt_ids(model_dir, case), served_chat(client, model, case), f"chat {case!r}"
    assert_matches_reference(served, hf.greedy(model_dir, ids, N_TOKENS, TOP_K), model_dir, label)


def _assert_top_values(served: list[float], reference: list[float], label: str, all_k: bool) -> float:
    """Served top-k values (best first) against the reference's. OpenAI's completions shape is a dict keyed by the
    token's text, so tokens that decode alike (bytes of one UTF-8 character) collapse into one entry there: each
    served value must then be one of the reference's, in order. Chat's list keeps all k."""
    assert served and all(math.isfinite(v) for v in served), label
    if all_k:
        assert len(served) == len(reference), label
    worst, j = 0.0, 0
    for got in served:
        while j < len(reference) and abs(got - reference[j]) > LOGPROB_ATOL:
            j += 1
        assert j < len(reference), f"{label}: {served} vs {reference}"
        worst = max(worst, abs(got - reference[j]))
        j += 1
    return worst


def assert_matches_reference(served: dict, reference: hf.Greedy, model_dir: str, label: str) -> float:
    """Token-for-token and logprob agreement; returns the largest logprob difference seen."""
    assert served["prompt_tokens"] == len(reference.prompt_ids), f"{label}: prompt tokenized differently"
    assert served["completion_tokens"] == len(served["logprobs"]) == N_TOKENS, label
    agree = hf.agreeing_prefix(reference, served["text"], model_dir)
    expected_text = hf.decode(model_dir, reference.token_ids)
    if agree < N_TOKENS:
        margin = reference.steps[agree].margin
        assert agree >= MIN_AGREE and margin < hf.NEAR_TIE, (
            f"{label}: served text parts from transformers fp32 at token {agree} (reference margin {margin:.4f}):\n"
            f"served:    {served['text']!r}\nreference: {expected_text!r}"
        )
    else:
        assert served["text"] == expected_text, label
    worst = 0.0
    for i in range(agree):
        step = reference.steps[i]
        worst = max(worst, abs(served["logprobs"][i] - step.logprob))
        assert served["logprobs"][i] == pytest.approx(step.logprob, abs=LOGPROB_ATOL), f"{label}: token {i}"
        worst = max(
            worst,
            _assert_top_values(served["top"][i], step.top_logprobs, f"{label}: top of token {i}", served["all_k"]),
        )
    print(f"[reference] {label}: {agree} tokens agree, max |logprob difference| {worst:.2e}")
    return worst


# ---- the tiny test model (session stack, float32) ----


@pytest.mark.parametrize("kind,case", cases(TINY_PROMPTS, TINY_CHATS))
def test_tiny_model_equals_transformers(openai_client, kind, case):
    check_greedy_equals_transformers(openai_client, MODEL_NAME, str(TINY_MODEL), kind, case)


@pytest.mark.parametrize("adapter", LORA_NAMES)
@pytest.mark.parametrize("index", range(4))
def test_lora_completion_equals_transformers_with_peft(openai_client, adapter, index):
    model_dir = str(TINY_MODEL)
    prompt = TINY_PROMPTS[index]
    ids = hf.text_prompt_ids(model_dir, prompt)
    reference = hf.greedy(model_dir, ids, N_TOKENS, TOP_K, adapter=str(TINY_LORAS / adapter))
    base = hf.greedy(model_dir, ids, N_TOKENS, TOP_K)
    assert reference.token_ids != base.token_ids, "the adapter should change the greedy text (else nothing is tested)"
    served = served_completion(openai_client, adapter, prompt)
    assert_matches_reference(served, reference, model_dir, f"{adapter} {prompt!r}")


# ---- the default model, as `make serve` runs it ----

# vLLM's override_generation_config stands in for a model whose generation_config.json sets sampling defaults
# (SmolLM2-135M-Instruct's sets none): requests that leave these out get them, as `vllm serve` applies them.
GENERATION_DEFAULTS = {"temperature": 0.0, "max_new_tokens": 12}


@pytest.fixture(scope="module")
def default_stack(tmp_path_factory):
    model_dir = ensure_default_model()
    engine_args = {"override_generation_config": GENERATION_DEFAULTS}
    with running_stack(tmp_path_factory, str(model_dir), engine_args) as running:
        yield running


@pytest.fixture(scope="module")
def default_client(default_stack):
    import openai

    return openai.OpenAI(base_url=f"{default_stack.base_url}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def default_model(default_client) -> tuple[str, str]:
    """(served name, model directory)."""
    return default_client.models.list().data[0].id, str(ensure_default_model())


def test_default_model_runs_float32_on_cpu(default_stack):
    log = (default_stack.config.log_dir / "triton.log").read_text(errors="replace")
    assert "dtype auto -> float32 on the CPU platform" in log


def test_readme_first_question_is_answered_as_transformers_does(default_client, default_model):
    name, model_dir = default_model
    messages = DEFAULT_CHATS[0]
    reply = default_client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=32)
    reference = hf.greedy(model_dir, hf.chat_prompt_ids(model_dir, messages), 32, 2)
    eos = hf.tokenizer(model_dir).eos_token_id
    ids = reference.token_ids
    expected = hf.decode(model_dir, ids[: ids.index(eos)] if eos in ids else ids)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == ("stop" if eos in ids else "length")
    assert "Paris" in expected  # what the README promises: transformers fp32 says so


@pytest.mark.parametrize("kind,case", cases(DEFAULT_PROMPTS, DEFAULT_CHATS))
def test_default_model_equals_transformers(default_client, default_model, kind, case):
    name, model_dir = default_model
    check_greedy_equals_transformers(default_client, name, model_dir, kind, case)


# ---- the model's generation config supplies defaults ----


def test_generation_defaults_apply_to_fields_left_out(default_client, default_model):
    name, _ = default_model
    prompt = "Once upon a time, there was a"
    implicit = default_client.completions.create(model=name, prompt=prompt)
    explicit = default_client.completions.create(model=name, prompt=prompt, temperature=0, max_tokens=12)
    assert implicit.usage.completion_tokens <= 12 and implicit.choices[0].finish_reason in ("length", "stop")
    assert implicit.choices[0].text == explicit.choices[0].text
    # A request's own value wins over the model's default.
    short = default_client.completions.create(model=name, prompt=prompt, max_tokens=3)
    assert short.usage.completion_tokens == 3
    # Greedy by the model's default, so n > 1 gives n copies of the greedy text.
    copies = default_client.completions.create(model=name, prompt=prompt, n=2)
    assert [c.text for c in copies.choices] == [explicit.choices[0].text] * 2


def test_generation_defaults_are_reported(default_stack):
    from tests.integration.triton_client import TritonTestClient

    info = TritonTestClient(f"127.0.0.1:{default_stack.config.triton_ports.grpc}").control("info")
    assert info["generation_defaults"] == {"temperature": 0.0, "max_tokens": 12}
    log = (default_stack.config.log_dir / "triton.log").read_text(errors="replace")
    assert "sampling defaults from the model's generation config" in log
