"""Bearer-token authentication: one dependency, constant-time comparison, the key never logged."""

from __future__ import annotations

import hmac

from fastapi import Request

from frontend.errors import APIError


def _unauthorized(message: str) -> APIError:
    return APIError(
        401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}, type="invalid_request_error"
    )


def check_bearer(request: Request, api_key: str | None) -> None:
    """Raise 401 unless the request carries `Authorization: Bearer <api_key>` (no-op when no key is set)."""
    if api_key is None:
        return
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise _unauthorized("Incorrect API key provided.")


async def require_api_key(request: Request) -> None:
    check_bearer(request, request.app.state.settings.api_key)


async def require_api_key_for_health(request: Request) -> None:
    settings = request.app.state.settings
    if not settings.open_health:
        check_bearer(request, settings.api_key)
