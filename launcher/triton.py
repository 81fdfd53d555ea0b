"""Find a `tritonserver`, lay out its Python backend, and run it as a supervised process group.

Two sources for the server: one already on PATH (NVIDIA's Triton container), or the complete Triton 2.51 that
ships inside the `nvidia-pytriton` wheel (CPU boxes; see shared STACK.md §1).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.model_code import procs


@dataclass
class TritonLayout:
    """Where the server binary is and which flags/environment it needs."""

    binary: str
    backend_dir: str | None = None
    cache_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def _pytriton_root() -> Path | None:
    # Only the package's files are used; importing it would need its own dependencies.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    return root if (root / "bin" / "tritonserver").exists() else None


def prepare_layout(work_dir: Path) -> TritonLayout:
    """Return how to start tritonserver here, laying out a backend directory for the pytriton build."""
    on_path = shutil.which("tritonserver")
    root = _pytriton_root()
    if on_path and (root is None or Path(on_path).resolve() != (root / "bin" / "tritonserver").resolve()):
        return TritonLayout(binary=on_path)
    if root is None:
        raise RuntimeError(
            "no tritonserver: install the CPU stack (make setup) or run inside NVIDIA's Triton container"
        )
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"nvidia-pytriton has no Python backend stub for Python {version}")
    backend = work_dir / "backends" / "python"
    backend.mkdir(parents=True, exist_ok=True)
    # The server looks for the stub only next to libtriton_python.so.
    for source in (
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        target = backend / source.name
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            shutil.copy2(source, target)
    libs = root.parent.parent / "nvidia_pytriton.libs"
    python_lib = sysconfig.get_config_var("LIBDIR") or ""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "LD_LIBRARY_PATH": os.pathsep.join(
            p for p in (str(libs), python_lib, os.environ.get("LD_LIBRARY_PATH", "")) if p
        ),
        # The stub finds its Python environment through `python3` on PATH.
        "PATH": os.pathsep.join((venv_bin, os.environ.get("PATH", ""))),
    }
    return TritonLayout(
        binary=str(root / "bin" / "tritonserver"),
        backend_dir=str(work_dir / "backends"),
        cache_dir=str(root / "caches"),
        env=env,
    )


@dataclass
class TritonPorts:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


class TritonProcess:
    """A tritonserver and everything it spawns (stub, EngineCore, workers), in one process group."""

    EXIT_TIMEOUT_S = 30

    def __init__(
        self,
        model_repository: str,
        ports: TritonPorts,
        work_dir: Path,
        env: dict[str, str] | None = None,
        log_path: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.model_repository = model_repository
        self.ports = ports
        self.work_dir = work_dir
        self.extra_env = env or {}
        self.log_path = log_path
        self.extra_args = extra_args or []
        self.process: subprocess.Popen | None = None
        # A prefix of our own for the Python backend's /dev/shm regions, so leftovers can be removed.
        self.shm_prefix = f"tvo{os.getpid()}x{int(time.time())}_"
        self.engine_regions: set[str] = set()

    def command(self, layout: TritonLayout) -> list[str]:
        cmd = [
            layout.binary,
            f"--model-repository={self.model_repository}",
            f"--http-port={self.ports.http}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}",
            f"--exit-timeout-secs={self.EXIT_TIMEOUT_S}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            # The frontend pings its channel every 30 s, idle or not (to notice a dead Triton); Triton's defaults
            # count pings without data less than 5 min apart as bad and close the connection after two
            # ("Too many pings": a request then fails with 503).
            "--grpc-keepalive-permit-without-calls=1",
            "--grpc-http2-min-recv-ping-interval-without-data=10000",
        ]
        if layout.backend_dir:
            cmd.append(f"--backend-directory={layout.backend_dir}")
        if layout.cache_dir:
            cmd.append(f"--cache-directory={layout.cache_dir}")
        return cmd + self.extra_args

    def start(self) -> None:
        layout = prepare_layout(self.work_dir)
        env = {**os.environ, **layout.env, **self.extra_env}
        self.process = start_group(self.command(layout), self.log_path, env=env)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    def is_ready(self, model: str = "vllm_model") -> bool:
        return http_answers(f"{self.http_url}/v2/models/{model}/ready")

    def wait_ready(self, timeout: float, model: str = "vllm_model", progress=None) -> None:
        """Block until the model is ready; raise if the server exits or the time runs out."""
        deadline = time.monotonic() + timeout
        last_report = time.monotonic()
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"tritonserver exited with code {code} before '{model}' was ready")
            if self.is_ready(model):
                # Remembered now, so they can be removed even if the whole group is later killed at once.
                self.engine_regions |= shm_regions_of_group(self.process.pid)
                return
            if progress and time.monotonic() - last_report > 10:
                progress(f"waiting for '{model}' (engine start) ... {int(time.monotonic() - deadline + timeout)} s")
                last_report = time.monotonic()
            time.sleep(0.5)
        raise TimeoutError(f"'{model}' was not ready within {timeout:.0f} s")

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, wait for a clean exit, then kill whatever is left of the group and its shm regions."""
        if self.process is None:
            return
        # vLLM's own shared memory (psm_*) outlives its processes when they are killed; note what the group maps.
        engine_regions = self.engine_regions | shm_regions_of_group(self.process.pid)
        stop_group(self.process, self.EXIT_TIMEOUT_S + 15 if timeout is None else timeout)
        mapped_now = shm_regions_of_group(None)
        for path in [*glob.glob(f"/dev/shm/{self.shm_prefix}*"), *(engine_regions - mapped_now)]:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.process = None
        self.engine_regions = set()


def shm_regions_of_group(pgid: int | None) -> set[str]:
    """The /dev/shm files mapped by the processes of a process group (by every process when pgid is None)."""
    regions: set[str] = set()
    for process in procs.processes():
        if pgid is not None and process.pgrp != pgid:
            continue
        for line in procs.read(process.pid, "maps").splitlines():
            path = line.rsplit(" ", 1)[-1]
            if path.startswith("/dev/shm/"):
                regions.add(path)
    return regions


EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
_handed_out: set[int] = set()  # ports this process has given out (not yet bound, maybe)


def _ephemeral_low(path: str = EPHEMERAL_RANGE_FILE) -> int:
    """The first port of the kernel's ephemeral range (Linux default 32768)."""
    try:
        with open(path, encoding="ascii") as file:
            return int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))  # tritonserver binds its ports on all addresses
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that are free now and that the kernel will not hand to anyone else.

    Picked below the kernel's ephemeral range: a port from bind(0) stays free only until some other process is given
    it, and tritonserver binds its ports only after the model has loaded, a minute in which vLLM's engines (ZMQ,
    torch.distributed) take dozens of ephemeral ports ("Socket '0.0.0.0:34289' already in use" in a 2-replica run).
    """
    low = _ephemeral_low()
    pool = range(max(1024, low - 12000), low) if low > 2048 else range(49152, 65535)
    chosen: list[int] = []
    for port in random.sample(pool, len(pool)):
        if port in _handed_out or not _bindable(port):
            continue
        chosen.append(port)
        _handed_out.add(port)
        if len(chosen) == count:
            return chosen
    raise RuntimeError(f"no {count} free TCP ports in {pool.start}-{pool.stop - 1}")


def free_port() -> int:
    """A TCP port free now, outside the kernel's ephemeral range (free_ports)."""
    return free_ports(1)[0]


def start_group(
    command: Sequence[str], log_path: str | os.PathLike[str] | None = None, **popen: Any
) -> subprocess.Popen:
    """Start `command` as the leader of a process group of its own (stop it with stop_group); its output is
    appended to `log_path`, or goes where ours goes."""
    output = open(log_path, "ab") if log_path else None  # noqa: SIM115 - closed below; the child keeps its copy
    try:
        return subprocess.Popen(
            list(command), stdout=output, stderr=subprocess.STDOUT if output else None, start_new_session=True, **popen
        )
    finally:
        if output is not None:
            output.close()


def http_answers(url: str, timeout: float = 2.0, any_status: bool = False) -> bool:
    """Whether `url` answers 200 (any_status: answers at all, an error status included)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return any_status
    except (urllib.error.URLError, OSError):
        return False


def wait_until(
    process: subprocess.Popen, ready: Callable[[], bool], timeout: float, name: str, waiting_for: str, poll: float = 0.5
) -> None:
    """Poll `ready()` until it holds; RuntimeError if `process` exits first, TimeoutError after `timeout` seconds
    ("{name} did not {waiting_for} within ...")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}")
        if ready():
            return
        time.sleep(poll)
    raise TimeoutError(f"{name} did not {waiting_for} within {timeout:.0f} s")


def stop_group(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the group leader, give it `timeout` seconds to exit cleanly, then end whatever is left of its group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    kill_group(process.pid)


def kill_group(pgid: int, grace: float = 5.0) -> None:
    """Terminate, then kill, every process left in a process group; reap the leader if it is ours."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        try:
            os.waitpid(pgid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
