"""The whole stack as one object: tritonserver (with vLLM inside) plus the OpenAI frontend, started and stopped
together. `make serve` and the integration tests both use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from launcher.triton import TritonPorts, TritonProcess, http_answers, start_group, stop_group, wait_until

REPO = Path(__file__).resolve().parent.parent
GENERATION_MODEL = "vllm_model"
EMBEDDING_MODEL = "vllm_embedding"


def log(message: str) -> None:
    print(f"==> [serve {time.strftime('%H:%M:%S')}] {message}", flush=True)


def engine_environment(cache_dir: Path) -> dict[str, str]:
    """Environment for vLLM inside the Triton stub; values already set by the user win."""
    defaults = {
        # vLLM on CPU must be told its KV cache size (GiB); the default asks for most of NUMA node 0.
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_CACHE_ROOT": str(cache_dir / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "inductor"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    return {key: os.environ.get(key, value) for key, value in defaults.items()}


@dataclass
class StackConfig:
    model: str
    port: int = 9000
    triton_ports: TritonPorts = field(default_factory=TritonPorts)
    api_key: str | None = None
    engine_args: dict | None = None  # merged over model.json (TRITON_VLLM_ENGINE_ARGS)
    # Environment for tritonserver and the engine inside it, over the user's (e.g. VLLM_CPU_OMP_THREADS_BIND).
    engine_env: dict[str, str] = field(default_factory=dict)
    loras: dict[str, str] | None = None  # name -> path (TRITON_VLLM_LORAS)
    # An embedding model (local path or hub id) for /v1/embeddings: loads model_repository/vllm_embedding too.
    embedding_model: str | None = None
    embedding_engine_args: dict | None = None  # merged over vllm_embedding/1/model.json
    model_repository: Path = REPO / "model_repository"
    run_dir: Path = REPO / ".run"
    log_dir: Path | None = None  # None: both servers log to this terminal
    frontend_args: list[str] = field(default_factory=list)
    frontend_env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 900.0
    # Seconds the frontend lets requests in flight finish after SIGTERM (its --shutdown-timeout).
    shutdown_timeout: float = 30.0


class Stack:
    """tritonserver + frontend, each in its own process group, stopped cleanly together."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        config.run_dir.mkdir(parents=True, exist_ok=True)
        triton_env = {"TRITON_VLLM_MODEL": config.model, **engine_environment(REPO / ".cache"), **config.engine_env}
        if config.engine_args:
            triton_env["TRITON_VLLM_ENGINE_ARGS"] = json.dumps(config.engine_args)
        if config.loras:
            triton_env["TRITON_VLLM_LORAS"] = json.dumps(config.loras)
        # Only the models asked for are loaded (the embedding model is off unless configured).
        self.models = [GENERATION_MODEL]
        if config.embedding_model:
            self.models.append(EMBEDDING_MODEL)
            triton_env["TRITON_VLLM_EMBEDDING_MODEL"] = config.embedding_model
            if config.embedding_engine_args:
                triton_env["TRITON_VLLM_EMBEDDING_ENGINE_ARGS"] = json.dumps(config.embedding_engine_args)
        self.triton = TritonProcess(
            str(config.model_repository),
            config.triton_ports,
            config.run_dir,
            env=triton_env,
            log_path=str(config.log_dir / "triton.log") if config.log_dir else None,
            extra_args=["--model-control-mode=explicit", *(f"--load-model={name}" for name in self.models)],
        )
        self.frontend: FrontendProcess | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    def start_triton(self) -> None:
        started = time.monotonic()
        log(f"starting tritonserver (model {self.config.model}); the engine start takes a while on CPU")
        self.triton.start()
        for model in self.models:
            self.triton.wait_ready(self.config.ready_timeout, model=model, progress=log)
        log(f"Triton ready in {time.monotonic() - started:.0f} s")

    def start_frontend(self) -> None:
        self.frontend = FrontendProcess(
            port=self.config.port,
            triton_grpc=f"127.0.0.1:{self.config.triton_ports.grpc}",
            api_key=self.config.api_key,
            args=self.config.frontend_args,
            env={
                "TRITON_METRICS_URL": f"http://127.0.0.1:{self.config.triton_ports.metrics}/metrics",
                "SHUTDOWN_TIMEOUT": str(self.config.shutdown_timeout),
                **({"TRITON_EMBEDDING_MODEL": EMBEDDING_MODEL} if self.config.embedding_model else {}),
                **self.config.frontend_env,
            },
            log_path=self.config.log_dir / "frontend.log" if self.config.log_dir else None,
        )
        self.frontend.start()

    def start(self) -> None:
        try:
            self.start_triton()
            self.start_frontend()
        except BaseException:
            self.stop()
            raise

    def stop_frontend(self) -> None:
        if self.frontend is not None:
            self.frontend.stop()
            self.frontend = None

    def stop(self) -> None:
        """Drain and stop the frontend first (Triton keeps serving the requests it lets finish), then Triton."""
        self.stop_frontend()
        self.triton.stop()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class FrontendProcess:
    """`python -m frontend` in its own process group, pointed at a Triton gRPC address."""

    def __init__(
        self,
        port: int,
        triton_grpc: str,
        api_key: str | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port
        self.triton_grpc = triton_grpc
        self.api_key = api_key
        self.args = args or []
        self.env = env or {}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def start(self, timeout: float = 60) -> None:
        env = {**os.environ, "PORT": str(self.port), "TRITON_URL": self.triton_grpc, **self.env}
        env.pop("API_KEY", None)
        if self.api_key:
            env["API_KEY"] = self.api_key
        command = [sys.executable, "-m", "frontend", *self.args]
        self.process = start_group(command, self.log_path, cwd=str(REPO), env=env)
        # Any answer will do (e.g. 401 with closed health routes).
        health = f"{self.base_url}/health"
        answers = lambda: http_answers(health, any_status=True)  # noqa: E731
        wait_until(self.process, answers, timeout, "frontend", "answer /health", poll=0.2)

    def stop(self) -> None:
        """SIGTERM (the frontend drains: requests in flight finish, up to its shutdown timeout), then end what is
        left of the group."""
        if self.process is None:
            return
        stop_group(self.process, timeout=self.shutdown_timeout + 10)
        self.process = None

    @property
    def shutdown_timeout(self) -> float:
        return float(self.env.get("SHUTDOWN_TIMEOUT", 30))
