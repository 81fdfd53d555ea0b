from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from frontend.auth import require_api_key
from frontend.embeddings import create_embeddings
from frontend.errors import APIError
from frontend.generation import cancel_on_disconnect
from frontend.protocol import EmbeddingRequest, EmbeddingResponse

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    model = request.app.state.embedding
    if model is None:
        raise APIError(
            404,
            "embeddings are not served: start with an embedding model (make serve EMBEDDING_MODEL=PATH)",
            param="model",
            code="model_not_found",
        )
    return await cancel_on_disconnect(request, create_embeddings(body, model))
