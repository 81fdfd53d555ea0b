"""`python -m frontend`: serve the OpenAI API with uvicorn, draining on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import uvicorn

from frontend.app import create_app
from frontend.observability import Drain
from frontend.settings import parse_settings

logger = logging.getLogger("frontend")


class DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM/SIGINT drains: the server keeps listening, probes and new requests get
    503 (so routers and Kubernetes stop sending), requests in flight finish up to `shutdown_timeout`, then it exits.
    A second signal falls through to uvicorn's own shutdown."""

    def __init__(self, config: uvicorn.Config, drain: Drain, shutdown_timeout: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.shutdown_timeout = shutdown_timeout

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain.draining:
            super().handle_exit(sig, frame)
            return
        logger.info("%s: draining for up to %.0f s", signal.Signals(sig).name, self.shutdown_timeout)
        self.drain.start()
        threading.Thread(target=self._finish_drain, name="drain", daemon=True).start()

    def _finish_drain(self) -> None:
        left = self.drain.wait(self.shutdown_timeout)
        if left:
            logger.warning("drain timeout: %d requests still in flight are cut off", left)
        else:
            logger.info("drained; exiting")
        self.should_exit = True


def main() -> None:
    settings = parse_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # After the drain only responses already finishing remain.
        timeout_graceful_shutdown=5,
        access_log=False,
    )
    DrainingServer(config, app.state.drain, settings.shutdown_timeout).run()


if __name__ == "__main__":
    main()
