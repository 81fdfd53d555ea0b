"""The tiny test model's stack as the tests run it: one place for its engine arguments and prompts, shared by the
integration tests (tests/conftest.py), the soak (tools/soak.py) and the benchmark (bench/run.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = REPO / ".models" / "tiny"
TINY_LORAS = REPO / ".models" / "tiny-lora"
MODEL_NAME = "tiny"
LORA_NAMES = ("adapter-a", "adapter-b")
LORA_ENGINE_ARGS: dict[str, Any] = {"enable_lora": True, "max_lora_rank": 8}
# The engine without LoRA: the soak's and the benchmark's.
BASE_ENGINE_ARGS: dict[str, Any] = {
    "enforce_eager": True,
    "dtype": "float32",
    "max_model_len": 1024,
    "max_num_seqs": 32,
}
# Engine arguments for every integration test and for the offline reference: same engine, same output.
ENGINE_ARGS: dict[str, Any] = {**BASE_ENGINE_ARGS, **LORA_ENGINE_ARGS}
# Prompts whose greedy outputs the tests compare with offline vLLM and the soak checks under load.
PROMPTS = ("def hello", "import os\nimport sys\n", "The quick brown fox", "class Parser:")
