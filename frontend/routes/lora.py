"""vLLM's run-time LoRA routes: load and unload adapters by name on the running engine (behind the API key)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from frontend.auth import require_api_key
from frontend.errors import bad_request
from frontend.generation import api_error_from
from frontend.protocol import LoadLoraRequest, UnloadLoraRequest
from frontend.triton import TritonError

router = APIRouter(dependencies=[Depends(require_api_key)])


async def _control(request: Request, op: str, **fields: str) -> None:
    client = request.app.state.triton
    try:
        await client.control(op, **fields)
    except TritonError as exc:
        raise api_error_from(exc) from None
    finally:
        try:
            await client.info(refresh=True)
        except TritonError:
            pass  # refreshed on the next request that needs it


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
async def load_lora_adapter(body: LoadLoraRequest, request: Request) -> str:
    base, _ = await request.app.state.models.resolve_base()
    if body.lora_name == base:
        raise bad_request(f"'{body.lora_name}' is the base model's name", param="lora_name")
    await _control(request, "load_lora", lora_name=body.lora_name, lora_path=body.lora_path)
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
async def unload_lora_adapter(body: UnloadLoraRequest, request: Request) -> str:
    await _control(request, "unload_lora", lora_name=body.lora_name)
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully."
