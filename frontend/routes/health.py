from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from frontend.auth import require_api_key_for_health
from frontend.errors import APIError

router = APIRouter(dependencies=[Depends(require_api_key_for_health)])


async def _check(request: Request) -> None:
    """503 while draining, or unless Triton is reachable, the model ready and its engine healthy."""
    if request.app.state.drain.draining:
        raise APIError(503, "the server is shutting down", code="server_shutting_down", headers={"Retry-After": "1"})
    if not await request.app.state.triton.is_ready():
        raise APIError(
            503,
            "the model is not ready (Triton unreachable, model not loaded, or engine unhealthy)",
            code="service_unavailable",
        )


@router.get("/health")
async def health(request: Request) -> dict[str, str]:
    """As vLLM's /health: 200 only while the engine behind Triton is healthy (the liveness/router probe)."""
    await _check(request)
    return {"status": "ok"}


@router.get("/ping")
async def ping(request: Request) -> dict[str, str]:
    """/health under the name SageMaker-style probes use."""
    return await health(request)


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Triton reachable, the model ready, and its engine healthy; 503 while draining (the readiness probe)."""
    await _check(request)
    return JSONResponse({"status": "ready"})
