from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from frontend.auth import check_bearer
from frontend.errors import APIError

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The frontend's own metrics, then the engine's `vllm:*` series (from Triton's metrics port, at most 0.5 s old)."""
    state = request.app.state
    if not state.settings.open_metrics:
        check_bearer(request, state.settings.api_key)
    engine = await state.engine_metrics.collector(await _served_name(request))
    return Response(generate_latest(state.metrics.registry) + generate_latest(engine), media_type=CONTENT_TYPE_LATEST)


async def _served_name(request: Request) -> str | None:
    """The base model's served name for vLLM's `model_name` label; None while Triton does not answer."""
    try:
        name, _ = await request.app.state.models.resolve_base()
        return name
    except APIError:
        return None
