"""`make cluster`: N replicas (each its own tritonserver + vLLM + frontend, on ports of their own) behind vLLM's
router (`vllm-router`, the production-stack router from PyPI), until Ctrl-C or SIGTERM.

Environment knobs: REPLICAS (2), MODEL (as `make serve`; `tiny` for the test model in .models/tiny), PORT (the
router's port, 9000), POLICY (round_robin), ENGINE_ARGS (JSON merged over model.json), SHUTDOWN_TIMEOUT (30).
Each replica's frontend and Triton ports are picked free and printed.

Replicas on one machine get disjoint CPU cores for vLLM's CPU workers (`VLLM_CPU_OMP_THREADS_BIND`, unless set):
each engine's autobind sees the whole machine and would pin every replica's worker to the same cores, where a
replica under load starved a quiet one's worker for minutes on this project's 2-core VM (its requests hit the 30 s
drain timeout in a rolling restart). GPUs ignore the variable.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from launcher.stack import REPO, Stack, StackConfig, log
from launcher.triton import TritonPorts, free_port, http_answers, start_group, stop_group, wait_until

# Router settings for replicas that drain: probe /health every second and take a replica out after one failed
# probe; a request refused by a draining replica (503) or a dead one (connection refused) is retried elsewhere.
ROUTER_HEALTH_INTERVAL_S = 1
ROUTER_FLAGS = [
    "--health-check-endpoint",
    "/health",
    "--health-check-interval-secs",
    str(ROUTER_HEALTH_INTERVAL_S),
    "--health-check-timeout-secs",
    "2",
    "--health-failure-threshold",
    "1",
    "--health-success-threshold",
    "1",
    "--retry-max-retries",
    "5",
    "--retry-initial-backoff-ms",
    "100",
    "--retry-max-backoff-ms",
    "2000",
]


OMP_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
MODEL_JSON = REPO / "model_repository" / "vllm_model" / "1" / "model.json"


def engine_workers(engine_args: Mapping | None, model_json: Path = MODEL_JSON) -> int:
    """Worker processes per engine (tensor x pipeline parallel), from model.json with `engine_args` over it."""
    merged = {**json.loads(model_json.read_text()), **(engine_args or {})}
    return int(merged.get("tensor_parallel_size") or 1) * int(merged.get("pipeline_parallel_size") or 1)


def replica_cpu_binds(replicas: int, workers: int, cpus: Sequence[int], environ: Mapping[str, str]) -> list[str | None]:
    """VLLM_CPU_OMP_THREADS_BIND for each replica on this machine: the cores split evenly, in order, one block per
    replica, each block split again between its engine's workers ("0|1" for two). None for every replica where the
    user set the variable, where one replica runs (vLLM's autobind, which keeps a core for the serving processes),
    or where there are fewer cores than workers in all (they then share cores)."""
    if environ.get(OMP_BIND_ENV, "auto") != "auto" or replicas < 2 or len(cpus) < replicas * workers:
        return [None] * replicas
    cpus = sorted(cpus)
    block = len(cpus) // replicas
    binds = []
    for replica in range(replicas):
        mine = cpus[replica * block : (replica + 1) * block]
        size = len(mine) // workers
        groups = [mine[worker * size : (worker + 1) * size] for worker in range(workers)]
        binds.append("|".join(",".join(map(str, group)) for group in groups))
    return binds


def router_binary() -> str:
    """The `vllm-router` next to this interpreter (pip install vllm-router), else on PATH."""
    beside = Path(sys.executable).parent / "vllm-router"
    found = str(beside) if beside.exists() else shutil.which("vllm-router")
    if not found:
        raise RuntimeError("no vllm-router: pip install vllm-router==0.1.17 (the `cluster` extra)")
    return found


@dataclass
class ClusterConfig:
    model: str
    replicas: int = 2
    port: int = 9000  # the router's
    policy: str = "round_robin"
    engine_args: dict | None = None
    loras: dict[str, str] | None = None
    run_dir: Path = REPO / ".run" / "cluster"
    log_dir: Path | None = None
    shutdown_timeout: float = 30.0
    ready_timeout: float = 900.0
    router_args: list[str] = field(default_factory=list)


class Router:
    """vllm-router in its own process group, in front of the replicas' frontends."""

    def __init__(self, port: int, workers: list[str], policy: str, extra: list[str], log_path: Path | None) -> None:
        self.port = port
        self.workers = workers
        self.policy = policy
        self.extra = extra
        self.log_path = log_path
        self.prometheus_port = 0  # its metrics port, chosen at start (the router's process title hides its arguments)
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy_workers(self) -> dict[str, bool]:
        """The router's own view of its workers (`GET /workers`: `is_healthy` per worker URL)."""
        with urllib.request.urlopen(f"{self.base_url}/workers", timeout=5) as response:
            data = json.loads(response.read())
        entries = data.get("workers", data) if isinstance(data, dict) else data
        return {str(e.get("url")).rstrip("/"): bool(e.get("is_healthy")) for e in entries if isinstance(e, dict)}

    def command(self) -> list[str]:
        return [
            router_binary(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--policy",
            self.policy,
            "--worker-urls",
            *self.workers,
            *ROUTER_FLAGS,
            "--prometheus-port",
            str(self.prometheus_port),
            *self.extra,
        ]

    def start(self, timeout: float = 120) -> None:
        self.prometheus_port = free_port()  # just before the start: a port picked earlier may be taken by then
        self.process = start_group(self.command(), self.log_path)
        models = f"{self.base_url}/v1/models"
        wait_until(self.process, lambda: http_answers(models, timeout=5), timeout, "vllm-router", "serve /v1/models")

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, timeout=10)
            self.process = None


class Cluster:
    """Replicas (launcher Stacks on free ports) and the router, started and stopped together."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.cpu_binds = replica_cpu_binds(
            config.replicas, engine_workers(config.engine_args), sorted(os.sched_getaffinity(0)), os.environ
        )
        self.replicas = [self._replica(i) for i in range(config.replicas)]
        self.router = Router(
            config.port,
            [replica.base_url for replica in self.replicas],
            config.policy,
            config.router_args,
            config.log_dir / "router.log" if config.log_dir else None,
        )

    def _replica(self, index: int) -> Stack:
        log_dir = None
        if self.config.log_dir:
            log_dir = self.config.log_dir / f"replica{index}"
            log_dir.mkdir(parents=True, exist_ok=True)
        return Stack(
            StackConfig(
                model=self.config.model,
                port=free_port(),
                triton_ports=TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port()),
                engine_args=self.config.engine_args,
                engine_env={OMP_BIND_ENV: self.cpu_binds[index]} if self.cpu_binds[index] else {},
                loras=self.config.loras,
                run_dir=self.config.run_dir / f"replica{index}",
                log_dir=log_dir,
                ready_timeout=self.config.ready_timeout,
                shutdown_timeout=self.config.shutdown_timeout,
            )
        )

    @property
    def base_url(self) -> str:
        return self.router.base_url

    def start(self) -> None:
        try:
            # Engines start in parallel (on 2 cores each takes longer, but less than one after the other).
            with ThreadPoolExecutor(len(self.replicas)) as pool:
                for result in [pool.submit(replica.start) for replica in self.replicas]:
                    result.result()
            self.router.start()
        except BaseException:
            self.stop()
            raise

    def stop_replica(self, index: int) -> None:
        """As Kubernetes stops a pod: SIGTERM; the frontend drains, then Triton and the engine exit."""
        self.replicas[index].stop()

    def kill_replica(self, index: int) -> None:
        """As a crash: SIGKILL the replica's frontend and Triton process groups at once, then clean up."""
        replica = self.replicas[index]
        for process in (replica.frontend.process if replica.frontend else None, replica.triton.process):
            if process is not None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        replica.stop()  # reaps and removes the shared-memory regions left behind

    def restart_replica(self, index: int) -> None:
        """Start a stopped replica again on the same ports (the router knows it by URL)."""
        self.replicas[index].start()

    def stop(self) -> None:
        self.router.stop()
        with ThreadPoolExecutor(len(self.replicas)) as pool:
            list(pool.map(lambda replica: replica.stop(), self.replicas))

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def config_from_env() -> ClusterConfig:
    from launcher.serve import resolve_model

    if os.environ.get("MODEL") == "tiny":
        os.environ["MODEL"] = str(REPO / ".models" / "tiny")
    engine_args = json.loads(os.environ["ENGINE_ARGS"]) if os.environ.get("ENGINE_ARGS") else None
    return ClusterConfig(
        model=resolve_model(),
        replicas=int(os.environ.get("REPLICAS", "2")),
        port=int(os.environ.get("PORT", "9000")),
        policy=os.environ.get("POLICY", ClusterConfig.policy),
        engine_args=engine_args,
        shutdown_timeout=float(os.environ.get("SHUTDOWN_TIMEOUT", "30")),
    )


def main() -> int:
    config = config_from_env()
    cluster = Cluster(config)
    stopping = False

    def request_stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    log(f"starting {config.replicas} replicas of {config.model} and vllm-router (policy {config.policy})")
    try:
        cluster.start()
    except Exception as exc:  # noqa: BLE001 - reported, then exit non-zero
        log(f"failed to start: {exc}")
        return 1
    for index, replica in enumerate(cluster.replicas):
        ports = replica.config.triton_ports
        cores = f", vLLM CPU workers on cores {cluster.cpu_binds[index]}" if cluster.cpu_binds[index] else ""
        log(f"replica {index}: frontend {replica.base_url} (/metrics, /health), Triton gRPC {ports.grpc}{cores}")
    log(f"OpenAI API    {cluster.base_url}/v1   <- use this one")
    log("Ctrl-C stops everything")
    while not stopping:
        time.sleep(0.5)
    log("stopping the router, then draining the replicas")
    cluster.stop()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
