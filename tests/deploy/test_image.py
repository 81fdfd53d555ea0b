"""The CPU image, run as a container: it gets ready, answers the `openai` SDK, and `docker stop` drains it to exit 0.

Slow (an image build and an engine start): runs under `make test-image` (TVO_IMAGE_TEST=1), which builds the
image first; skipped otherwise. The container runs as it would on Kubernetes: read-only root filesystem with
writable scratch mounts, a non-root user, the API key set.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import openai
import pytest

from launcher.triton import free_ports
from tests.deploy.conftest import REPO

IMAGE = os.environ.get("IMAGE", "triton-vllm-openai:cpu")
# The pod's terminationGracePeriodSeconds less its preStop (deploy/kubernetes/base/deployment.yaml).
DRAIN_S = 45
READY_BOUND_S = 900
API_KEY = "image-test-key"
APP = "/opt/triton-vllm-openai"

pytestmark = pytest.mark.skipif(
    os.environ.get("TVO_IMAGE_TEST") != "1", reason="slow (image build + engine start): run `make test-image`"
)


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip()


def status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def state(name: str) -> dict:
    return json.loads(docker("inspect", "-f", "{{json .State}}", name))


@pytest.fixture(scope="module")
def docker_host():
    if "DOCKER_HOST" not in os.environ:
        up = subprocess.run(["bash", str(REPO / "scripts" / "image_docker.sh"), "up"], capture_output=True, text=True)
        assert up.returncode == 0, up.stderr
        os.environ["DOCKER_HOST"] = up.stdout.strip()
    assert docker("image", "inspect", "-f", "{{.Id}}", IMAGE, check=False), f"no image {IMAGE}: run `make image`"
    return os.environ["DOCKER_HOST"]


@pytest.fixture(scope="module")
def container(docker_host):
    """The image started with free host ports; yields (name, port, seconds to ready). Removed afterwards."""
    port, http, grpc, metrics = free_ports(4)
    name = f"tvo-image-test-{os.getpid()}"
    scratch = "rw,exec,uid=1000,gid=1000,size=2g"  # owned by the image's user, as fsGroup makes them on Kubernetes
    started = time.monotonic()
    docker(
        "run", "-d", "--name", name, "--network", "host", "--shm-size", "1g", "--read-only",
        "--tmpfs", f"/tmp:{scratch}", "--tmpfs", f"{APP}/.run:{scratch}", "--tmpfs", f"{APP}/.cache:{scratch}",
        "--tmpfs", f"/home/app:{scratch}",
        "-e", f"PORT={port}", "-e", f"TRITON_HTTP_PORT={http}", "-e", f"TRITON_GRPC_PORT={grpc}",
        "-e", f"TRITON_METRICS_PORT={metrics}", "-e", f"API_KEY={API_KEY}",
        # fp32: SmolLM2 answers correctly in fp32 on CPU (bf16 does not, see shared STACK.md).
        "-e", 'ENGINE_ARGS={"dtype": "float32"}',
        IMAGE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_BOUND_S
        while status(f"http://127.0.0.1:{port}/health/ready") != 200:
            current = state(name)
            assert current["Running"], f"container exited ({current['ExitCode']}):\n{docker('logs', name)[-4000:]}"
            assert time.monotonic() < deadline, f"not ready within {READY_BOUND_S} s"
            time.sleep(2)
        ready_s = time.monotonic() - started
        print(f"\n[image] start to ready: {ready_s:.0f} s")
        yield name, port, ready_s
    finally:
        logs = subprocess.run(["docker", "logs", "--tail", "60", name], capture_output=True, text=True)
        print(f"[image] container log (tail):\n{logs.stdout}{logs.stderr}")
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_runs_as_non_root_with_a_healthcheck(container):
    name, _port, _ = container
    assert docker("exec", name, "id", "-u") == "1000"
    assert docker("inspect", "-f", "{{.Config.User}}", name) == "1000:1000"
    # Docker's own HEALTHCHECK (docker/healthcheck.py) turns healthy once /health/ready answers 200.
    deadline = time.monotonic() + 120
    while state(name)["Health"]["Status"] != "healthy":
        assert time.monotonic() < deadline, f"healthcheck: {state(name)['Health']}"
        time.sleep(2)


def test_answers_the_openai_sdk(container):
    _name, port, _ = container
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, timeout=120)
    model = client.models.list().data[0].id
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=24,
    )
    text = reply.choices[0].message.content
    print(f"[image] {model}: {text!r}")
    assert "Paris" in text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong").models.list()


def test_docker_stop_drains_and_exits_zero(container):
    name, _port, _ = container
    started = time.monotonic()
    # Past DRAIN_S docker sends SIGKILL and the exit code would be 137: exit 0 means it drained in time.
    docker("stop", "-t", str(DRAIN_S), name, timeout=DRAIN_S + 60)
    stop_s = time.monotonic() - started
    final = state(name)
    print(f"[image] docker stop: {stop_s:.1f} s, exit code {final['ExitCode']}")
    assert not final["Running"]
    assert final["ExitCode"] == 0, docker("logs", "--tail", "40", name)
    assert not final["OOMKilled"]
