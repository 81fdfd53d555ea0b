"""create_app(settings): the FastAPI application with its routers, error handlers and middleware."""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI

from frontend.engine_metrics import EngineMetricsProxy
from frontend.errors import install_error_handlers
from frontend.generation import ServedModels
from frontend.limits import BodySizeLimit
from frontend.observability import Drain, FrontendMetrics, Observed
from frontend.routes import chat, completions, embeddings, health, lora, metrics, models, tokenize
from frontend.settings import Settings
from frontend.triton import TritonClient

logger = logging.getLogger("frontend")


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.triton = TritonClient(settings.triton_url, settings.triton_model)
        app.state.models = ServedModels(app.state.triton, settings.served_model_name)
        app.state.embedding = None
        if settings.triton_embedding_model:
            embedding_client = TritonClient(settings.triton_url, settings.triton_embedding_model)
            app.state.embedding = ServedModels(embedding_client)
        logger.info(
            "frontend on %s:%s -> Triton %s model '%s' (auth %s)",
            settings.host,
            settings.port,
            settings.triton_url,
            settings.triton_model,
            "on" if settings.api_key else "off",
        )
        yield
        await app.state.triton.close()
        if app.state.embedding is not None:
            await app.state.embedding.client.close()

    app = FastAPI(title="Triton vLLM OpenAI frontend", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.embedding = None  # set at startup when an embedding model is configured
    app.state.chat_template = _read_template(settings.chat_template)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(completions.router)
    app.include_router(chat.router)
    app.include_router(lora.router)
    app.include_router(metrics.router)
    app.include_router(tokenize.router)
    app.include_router(embeddings.router)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.state.metrics = FrontendMetrics()
    app.state.engine_metrics = EngineMetricsProxy(settings.triton_metrics_url)
    app.state.drain = Drain()
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Outermost: counts and logs everything, including 413s, and refuses overload before any work.
    app.add_middleware(Observed, metrics=app.state.metrics, max_inflight=settings.max_inflight, drain=app.state.drain)
    return app


def _read_template(path: str | None) -> str | None:
    """A --chat-template file's text (or the argument itself when it is an inline template)."""
    if not path:
        return None
    if "{" in path and not os.path.exists(path):
        return path
    with open(path, encoding="utf-8") as file:
        return file.read()
