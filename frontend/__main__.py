"""`python -m frontend`: serve the OpenAI API with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from frontend.app import create_app
from frontend.settings import parse_settings


def main() -> None:
    settings = parse_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        access_log=False,
    )


if __name__ == "__main__":
    main()
