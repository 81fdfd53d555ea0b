from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from frontend.auth import require_api_key
from frontend.chat import create_chat_completion
from frontend.protocol import ChatCompletionRequest, ChatCompletionResponse

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    state = request.app.state
    return await create_chat_completion(
        body, request, state.triton, state.models, state.chat_template, state.settings.tool_call_parser
    )
