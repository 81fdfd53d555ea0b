from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from frontend.auth import check_bearer

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The frontend's Prometheus metrics (Triton's and the engine's are on Triton's metrics port)."""
    settings = request.app.state.settings
    if not settings.open_metrics:
        check_bearer(request, settings.api_key)
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
