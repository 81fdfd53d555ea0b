from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from frontend.auth import require_api_key
from frontend.errors import model_not_found
from frontend.protocol import ModelCard, ModelList

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    cards = await request.app.state.models.cards()
    if request.app.state.embedding is not None:
        cards.data += (await request.app.state.embedding.cards()).data
    return cards


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, request: Request) -> ModelCard:
    for card in (await list_models(request)).data:
        if card.id == model_id:
            return card
    raise model_not_found(model_id)
