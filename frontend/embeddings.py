"""/v1/embeddings: OpenAI's embeddings shape over the embedding model (model_repository/vllm_embedding).

Each input is one Triton request (vllm_backend's `embedding_request`), sent concurrently; vLLM batches them.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from frontend.errors import APIError, bad_request
from frontend.generation import ServedModels, api_error_from
from frontend.protocol import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from frontend.triton import TritonError


def encode_base64(vector: list[float]) -> str:
    """OpenAI's (and vLLM's) base64 encoding: the vector's little-endian float32 bytes."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def check_dimensions(dimensions: int | None, facts: dict[str, Any], model: str) -> None:
    """400 naming `dimensions` unless the model can return vectors of that size (matryoshka models only)."""
    if dimensions is None:
        return
    if not facts.get("is_matryoshka"):
        raise bad_request(
            f"model '{model}' does not support matryoshka embeddings: dimensions must be unset", param="dimensions"
        )
    size = int(facts["embedding_size"])
    allowed = facts.get("matryoshka_dimensions")
    if not 1 <= dimensions <= size:
        raise bad_request(f"dimensions must be in [1, {size}] for model '{model}'", param="dimensions")
    if allowed and dimensions not in allowed:
        raise bad_request(f"model '{model}' supports dimensions {allowed}, got {dimensions}", param="dimensions")


def embedding_error(exc: TritonError) -> APIError:
    error = api_error_from(exc)
    if error.status == 400 and "dimensions" in exc.message:
        error.param = "dimensions"
    return error


def shape_response(
    vectors: list[tuple[list[float], int]], model: str, encoding_format: str = "float"
) -> EmbeddingResponse:
    """The response body: one entry per input in order, usage summed over the inputs' prompt tokens."""
    data = [
        Embedding(index=i, embedding=encode_base64(vector) if encoding_format == "base64" else vector)
        for i, (vector, _) in enumerate(vectors)
    ]
    tokens = sum(count for _, count in vectors)
    return EmbeddingResponse(data=data, model=model, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))


async def create_embeddings(body: EmbeddingRequest, models: ServedModels) -> EmbeddingResponse:
    """Validate, embed every input (concurrently), shape the response."""
    name, _ = await models.resolve(body.model)
    _, facts = await models.resolve_base()
    inputs = body.inputs()
    check_dimensions(body.dimensions, facts, name)
    try:
        vectors = await asyncio.gather(*(models.client.embed(item, body.dimensions) for item in inputs))
    except TritonError as exc:
        raise embedding_error(exc) from None
    return shape_response(list(vectors), name, body.encoding_format)
