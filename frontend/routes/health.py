from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from frontend.auth import require_api_key_for_health
from frontend.errors import APIError

router = APIRouter(dependencies=[Depends(require_api_key_for_health)])


@router.get("/health")
async def health() -> dict[str, str]:
    """The frontend process is alive."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Triton reachable, the model ready, and its engine healthy."""
    if await request.app.state.triton.is_ready():
        return JSONResponse({"status": "ready"})
    raise APIError(
        503,
        "the model is not ready (Triton unreachable, model not loaded, or engine unhealthy)",
        code="service_unavailable",
    )
