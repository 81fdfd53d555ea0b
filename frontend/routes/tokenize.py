"""vLLM's utility routes: /tokenize, /detokenize and /version (behind the API key, as the /v1 routes).

Tokenizing runs in the model (a control request): the frontend holds no tokenizer, so counts are the engine's own
and equal usage.prompt_tokens for the same input.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from frontend import __version__
from frontend.auth import require_api_key
from frontend.chat import render_messages
from frontend.generation import api_error_from
from frontend.protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from frontend.triton import TritonError

router = APIRouter(dependencies=[Depends(require_api_key)])


async def _control(request: Request, op: str, **fields) -> dict:
    try:
        return await request.app.state.triton.control(op, **fields)
    except TritonError as exc:
        raise api_error_from(exc) from None


@router.post("/tokenize", response_model=TokenizeResponse, response_model_exclude_none=True)
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    state = request.app.state
    if body.model is not None:
        await state.models.resolve(body.model)
    if body.messages is not None:
        prompt = await render_messages(
            body.messages,
            state.models,
            state.chat_template,
            add_generation_prompt=body.add_generation_prompt,
            continue_final_message=body.continue_final_message,
            chat_template_kwargs=body.chat_template_kwargs,
            tools=[t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None,
        )
        add_special = False if body.add_special_tokens is None else body.add_special_tokens
    else:
        prompt = body.prompt
        add_special = True if body.add_special_tokens is None else body.add_special_tokens
    result = await _control(
        request, "tokenize", prompt=prompt, add_special_tokens=add_special, return_token_strs=body.return_token_strs
    )
    tokens = result["tokens"]
    return TokenizeResponse(
        count=len(tokens),
        max_model_len=await state.models.max_model_len(),
        tokens=tokens,
        token_strs=result.get("token_strs"),
    )


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    if body.model is not None:
        await request.app.state.models.resolve(body.model)
    result = await _control(request, "detokenize", tokens=list(body.tokens))
    return DetokenizeResponse(prompt=result["prompt"])


@router.get("/version")
async def version(request: Request) -> dict[str, str]:
    """vLLM's version (as `vllm serve` reports it), and this frontend's."""
    _, info = await request.app.state.models.resolve_base()
    return {"version": info.get("vllm_version", "unknown"), "frontend_version": __version__}
