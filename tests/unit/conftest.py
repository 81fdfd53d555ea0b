"""Unit-test setup: make the Triton model's pure-logic modules importable (they live beside model.py)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL_VERSION_DIR = REPO / "model_repository" / "vllm_model" / "1"
EMBEDDING_VERSION_DIR = REPO / "model_repository" / "vllm_embedding" / "1"

for path in (REPO, MODEL_VERSION_DIR, EMBEDDING_VERSION_DIR):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
