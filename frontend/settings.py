"""All frontend configuration in one typed place: command-line flags, with environment variables as defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from frontend.tool_calls import TOOL_CALL_PARSERS
from launcher.model_code import model_module

# The one boolean parser, shared with the model (model_repository/vllm_model/1/booleans.py).
booleans = model_module("booleans")


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 9000
    # Triton's gRPC endpoint and the model that wraps vLLM there.
    triton_url: str = "localhost:8001"
    triton_model: str = "vllm_model"
    # The Triton model that serves /v1/embeddings (model_repository/vllm_embedding); None: the route answers 404.
    triton_embedding_model: str | None = None
    # Overrides the name the model reports (its served_model_name).
    served_model_name: str | None = None
    # None: no authentication. Never logged.
    api_key: str | None = field(default=None, repr=False)
    # Health routes (and /metrics) answer without a key unless closed.
    open_health: bool = True
    open_metrics: bool = True
    max_body_bytes: int = 4 * 1024 * 1024
    # Most requests in flight at once; past it, 429 with Retry-After. 0 = no limit.
    max_inflight: int = 0
    cors_origins: tuple[str, ...] = ()
    log_level: str = "info"
    # Log prompt and completion text (off by default).
    log_text: bool = False
    chat_template: str | None = None
    # Parser for tool_choice "auto" (frontend/tool_calls.py TOOL_CALL_PARSERS); None: "auto" is refused.
    tool_call_parser: str | None = None
    # Triton's Prometheus endpoint: its vllm:* families are re-exported on this server's /metrics.
    triton_metrics_url: str = "http://localhost:8002/metrics"
    # On SIGTERM: seconds to let requests in flight finish (a 60 s grace period minus a 15 s preStop, minus
    # Triton's own exit) before the server exits.
    shutdown_timeout: float = 30.0


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    parsed = booleans.parse_bool(raw)
    if parsed is None:
        raise ValueError(f"{name} must be true or false ({booleans.SPELLINGS}), got {raw!r}")
    return parsed


def _read_key_file(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        key = file.read().strip()
    if not key:
        raise ValueError(f"API key file {path} is empty")
    return key


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from flags; each flag's default comes from the environment variable named in its help."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="python -m frontend", description="OpenAI-compatible API over Triton")
    parser.add_argument("--host", default=env.get("HOST", Settings.host), help="listen address (HOST)")
    parser.add_argument("--port", type=int, default=int(env.get("PORT", Settings.port)), help="port (PORT)")
    parser.add_argument(
        "--triton-url",
        default=env.get("TRITON_URL") or f"localhost:{env.get('TRITON_GRPC_PORT', '8001')}",
        help="Triton gRPC address host:port (TRITON_URL, or localhost:TRITON_GRPC_PORT)",
    )
    parser.add_argument("--triton-model", default=env.get("TRITON_MODEL", Settings.triton_model), help="(TRITON_MODEL)")
    parser.add_argument(
        "--triton-embedding-model",
        default=env.get("TRITON_EMBEDDING_MODEL") or None,
        help="Triton model serving /v1/embeddings, e.g. vllm_embedding (TRITON_EMBEDDING_MODEL); unset: not served",
    )
    parser.add_argument(
        "--served-model-name",
        default=env.get("SERVED_MODEL_NAME") or None,
        help="name clients use for the base model; default: the model's own (SERVED_MODEL_NAME)",
    )
    parser.add_argument(
        "--api-key-file",
        default=env.get("API_KEY_FILE") or None,
        help="file holding the API key (API_KEY_FILE); API_KEY in the environment also works",
    )
    parser.add_argument("--api-key", default=None, help="API key (prefer API_KEY or --api-key-file: flags show in ps)")
    parser.add_argument(
        "--closed-health",
        action="store_true",
        default=not _env_bool(env, "OPEN_HEALTH", True),
        help="require the key on /health routes (OPEN_HEALTH=false)",
    )
    parser.add_argument(
        "--closed-metrics",
        action="store_true",
        default=not _env_bool(env, "OPEN_METRICS", True),
        help="require the key on /metrics (OPEN_METRICS=false)",
    )
    parser.add_argument("--max-body-bytes", type=int, default=int(env.get("MAX_BODY_BYTES", Settings.max_body_bytes)))
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=int(env.get("MAX_INFLIGHT", Settings.max_inflight)),
        help="requests in flight before 429 (MAX_INFLIGHT; 0 = no limit)",
    )
    parser.add_argument(
        "--cors-origins", default=env.get("CORS_ORIGINS", ""), help="comma-separated origins (CORS_ORIGINS)"
    )
    parser.add_argument("--log-level", default=env.get("LOG_LEVEL", Settings.log_level))
    parser.add_argument(
        "--log-text",
        action="store_true",
        default=_env_bool(env, "LOG_TEXT", False),
        help="log prompt and completion text (LOG_TEXT; debugging only)",
    )
    parser.add_argument(
        "--chat-template",
        default=env.get("CHAT_TEMPLATE") or None,
        help="Jinja chat template file overriding the model's own (CHAT_TEMPLATE)",
    )
    parser.add_argument(
        "--tool-call-parser",
        default=env.get("TOOL_CALL_PARSER") or None,
        choices=TOOL_CALL_PARSERS,
        help="how to find tool calls in output for tool_choice 'auto' (TOOL_CALL_PARSER); unset: 'auto' is refused",
    )
    parser.add_argument(
        "--triton-metrics-url",
        default=env.get("TRITON_METRICS_URL") or f"http://localhost:{env.get('TRITON_METRICS_PORT', '8002')}/metrics",
        help="Triton metrics endpoint re-exported on /metrics (TRITON_METRICS_URL, or localhost:TRITON_METRICS_PORT)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=float(env.get("SHUTDOWN_TIMEOUT", Settings.shutdown_timeout)),
        help="seconds in-flight requests may take to finish after SIGTERM (SHUTDOWN_TIMEOUT)",
    )
    args = parser.parse_args(argv)
    # Precedence: --api-key, then the key file (flag or API_KEY_FILE), then API_KEY.
    api_key = args.api_key or (_read_key_file(args.api_key_file) if args.api_key_file else None)
    api_key = api_key or env.get("API_KEY") or None
    return Settings(
        host=args.host,
        port=args.port,
        triton_url=args.triton_url,
        triton_model=args.triton_model,
        triton_embedding_model=args.triton_embedding_model,
        served_model_name=args.served_model_name,
        api_key=api_key,
        open_health=not args.closed_health,
        open_metrics=not args.closed_metrics,
        max_body_bytes=args.max_body_bytes,
        max_inflight=args.max_inflight,
        cors_origins=tuple(o.strip() for o in args.cors_origins.split(",") if o.strip()),
        log_level=args.log_level,
        log_text=args.log_text,
        chat_template=args.chat_template,
        tool_call_parser=args.tool_call_parser,
        triton_metrics_url=args.triton_metrics_url,
        shutdown_timeout=args.shutdown_timeout,
    )
