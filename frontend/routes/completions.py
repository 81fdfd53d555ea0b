from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from frontend.auth import require_api_key
from frontend.completions import create_completion
from frontend.protocol import CompletionRequest, CompletionResponse

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/completions", response_model=CompletionResponse, response_model_exclude_none=False)
async def completions(body: CompletionRequest, request: Request):
    state = request.app.state
    return await create_completion(body, request, state.triton, state.models)
