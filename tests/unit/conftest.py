"""Unit-test setup: make the Triton model's pure-logic modules importable (they live beside model.py)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL_VERSION_DIR = REPO / "model_repository" / "vllm_model" / "1"
EMBEDDING_VERSION_DIR = REPO / "model_repository" / "vllm_embedding" / "1"

# Inserted in reverse, so the search order is REPO, vllm_model, vllm_embedding: `import model` is vllm_model's.
for path in (EMBEDDING_VERSION_DIR, MODEL_VERSION_DIR, REPO):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
