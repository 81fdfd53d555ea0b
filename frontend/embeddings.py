"""/v1/embeddings: OpenAI's embeddings shape over the embedding model (model_repository/vllm_embedding).

Each input is one Triton request (vllm_backend's `embedding_request`), sent concurrently; vLLM batches them.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np

from frontend.errors import APIError, bad_request, model_not_found
from frontend.generation import api_error_from
from frontend.protocol import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, ModelCard
from frontend.triton import TritonClient, TritonError


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


class EmbeddingModel:
    """The embedding model as clients name it, and its facts (cached after the first ask)."""

    def __init__(self, client: TritonClient, name_override: str | None = None) -> None:
        self.client = client
        self.name_override = name_override

    async def info(self, refresh: bool = False) -> dict[str, Any]:
        try:
            return await self.client.info(refresh=refresh)
        except TritonError as exc:
            raise api_error_from(exc) from None

    def name(self, info: dict[str, Any]) -> str:
        return self.name_override or info["served_model_name"]

    async def card(self) -> ModelCard:
        info = await self.info(refresh=True)
        return ModelCard(
            id=self.name(info),
            created=int(info.get("created", 0)),
            root=info.get("model"),
            max_model_len=info.get("max_model_len"),
        )

    async def resolve(self, name: str) -> tuple[str, dict[str, Any]]:
        for refresh in (False, True):
            info = await self.info(refresh)
            if name in (self.name(info), info.get("model")):
                return self.name(info), info
        raise model_not_found(name)

    async def create(self, body: EmbeddingRequest) -> EmbeddingResponse:
        name, info = await self.resolve(body.model)
        inputs = body.inputs()
        check_dimensions(body.dimensions, info, name)
        try:
            vectors = await asyncio.gather(*(self.client.embed(item, body.dimensions) for item in inputs))
        except TritonError as exc:
            raise embedding_error(exc) from None
        return shape_response(list(vectors), name, body.encoding_format)
