"""An independent reference: Hugging Face transformers in float32, greedy, with every step's log-softmax.

vLLM's own offline engine checks our plumbing but shares vLLM's kernels; this checks the numbers. Greedy decoding
is a plain loop over the model's raw logits (no generation-config processors), as vLLM computes raw logprobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

# A greedy step whose best two log-probabilities are closer than this is a near tie: float32 implementations that
# sum in a different order may pick either token, and the texts may then part there.
NEAR_TIE = 1e-3


@dataclass
class Step:
    token_id: int
    logprob: float  # of the chosen token
    top_logprobs: list[float]  # the best k, best first
    margin: float  # best minus second best log-probability


@dataclass
class Greedy:
    prompt_ids: list[int]
    steps: list[Step]

    @property
    def token_ids(self) -> list[int]:
        return [s.token_id for s in self.steps]


@cache
def _torch():
    import torch

    torch.set_num_threads(2)
    return torch


@cache
def tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@cache
def model(model_dir: str, adapter: str | None = None):
    """The model in float32 (the checkpoint's bf16/fp32 weights upcast), optionally with a PEFT LoRA adapter."""
    torch = _torch()
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        loaded = PeftModel.from_pretrained(loaded, adapter)
    return loaded.eval()


def chat_prompt_ids(model_dir: str, messages: list[dict]) -> list[int]:
    """The conversation rendered with the model's own chat template, as token ids."""
    text = tokenizer(model_dir).apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(model_dir)(text, add_special_tokens=False)["input_ids"]


def text_prompt_ids(model_dir: str, prompt: str) -> list[int]:
    return tokenizer(model_dir)(prompt)["input_ids"]


def greedy(model_dir: str, prompt_ids: list[int], max_new_tokens: int, top_k: int = 5, adapter: str | None = None):
    """Greedy decoding without stopping at EOS (the served side sets ignore_eos)."""
    torch = _torch()
    net = model(model_dir, adapter)
    steps: list[Step] = []
    with torch.no_grad():
        out = net(torch.tensor([prompt_ids]), use_cache=True)
        for _ in range(max_new_tokens):
            logprobs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            best = torch.topk(logprobs, max(top_k, 2))
            values = [float(v) for v in best.values]
            token = int(best.indices[0])
            steps.append(Step(token, values[0], values[:top_k], values[0] - values[1]))
            out = net(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    return Greedy(list(prompt_ids), steps)


def decode(model_dir: str, token_ids: list[int]) -> str:
    return tokenizer(model_dir).decode(token_ids, skip_special_tokens=True)


def agreeing_prefix(reference: Greedy, served_text: str, model_dir: str) -> int:
    """How many reference tokens the served text agrees with: the longest prefix of the greedy tokens whose decoded
    text begins the served text (a token that ends inside a UTF-8 character counts from the next whole one)."""
    ids = reference.token_ids
    if decode(model_dir, ids) == served_text:
        return len(ids)
    for k in range(len(ids) - 1, -1, -1):
        if served_text.startswith(decode(model_dir, ids[:k])):
            return k
    return 0


def model_path(path: Path | str) -> str:
    return str(Path(path).resolve())
