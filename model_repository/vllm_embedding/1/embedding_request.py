"""vllm_backend's `embedding_request` JSON, parsed and checked (pure logic: no vLLM, no Triton).

{"input": "text" | [token ids], "pooling_params": {"dimensions": [d]}} -- one prompt per request, as vllm_backend
and Triton's OpenAI frontend send it (`dimensions` is a one-element list there; a plain integer is accepted too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Environment overrides for this model (the generation model's names would reach this stub too: same server).
ENV_EMBEDDING_MODEL = "TRITON_VLLM_EMBEDDING_MODEL"
ENV_EMBEDDING_ENGINE_ARGS = "TRITON_VLLM_EMBEDDING_ENGINE_ARGS"
ENV_EMBEDDING_SERVED_NAME = "TRITON_VLLM_EMBEDDING_SERVED_MODEL_NAME"


class EmbeddingRequestError(ValueError):
    """The embedding_request is malformed; the message names the field."""


@dataclass
class EmbeddingRequest:
    prompt: str | dict[str, list[int]]
    dimensions: int | None


def parse_embedding_request(raw: str) -> EmbeddingRequest:
    try:
        message = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EmbeddingRequestError(f"embedding_request is not valid JSON: {exc}") from None
    if not isinstance(message, dict) or "input" not in message:
        raise EmbeddingRequestError("embedding_request must be a JSON object with 'input'")
    value = message["input"]
    if isinstance(value, str):
        if not value:
            raise EmbeddingRequestError("embedding_request 'input' must not be empty")
        prompt: str | dict[str, list[int]] = value
    elif isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        if any(t < 0 for t in value):
            raise EmbeddingRequestError("embedding_request 'input' token ids must not be negative")
        prompt = {"prompt_token_ids": list(value)}
    else:
        raise EmbeddingRequestError("embedding_request 'input' must be a non-empty string or list of token ids")
    pooling = message.get("pooling_params")
    pooling = {} if pooling is None else pooling
    if not isinstance(pooling, dict):
        raise EmbeddingRequestError("embedding_request 'pooling_params' must be a JSON object")
    dims = pooling.get("dimensions")
    if isinstance(dims, list):
        dims = dims[0] if len(dims) == 1 else dims
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise EmbeddingRequestError("pooling parameter 'dimensions' must be a positive integer")
    return EmbeddingRequest(prompt, dims)


def embedding_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """This model's overrides under the names engine_settings reads (the generation model's are dropped)."""
    from engine_settings import ENV_ENGINE_ARGS, ENV_MODEL, ENV_SERVED_NAME

    mapping = {
        ENV_MODEL: ENV_EMBEDDING_MODEL,
        ENV_ENGINE_ARGS: ENV_EMBEDDING_ENGINE_ARGS,
        ENV_SERVED_NAME: ENV_EMBEDDING_SERVED_NAME,
    }
    return {ours: environ[theirs] for ours, theirs in mapping.items() if environ.get(theirs)}


def embedding_facts(model_config: Any) -> dict[str, Any]:
    """What a client needs to validate `dimensions`: the vector size and the matryoshka sizes, if any."""
    return {
        "embedding_size": int(model_config.embedding_size),
        "is_matryoshka": bool(model_config.is_matryoshka),
        "matryoshka_dimensions": list(model_config.matryoshka_dimensions or []) or None,
        "max_model_len": int(model_config.max_model_len),
    }
