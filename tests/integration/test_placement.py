"""vLLM on CPU: the model moves the EngineCore onto its worker's cores while 2+ streamed requests are in flight, and
back when it is quiet (model_repository/vllm_model/1/placement.py, COLOCATE_ENGINE_CORE "auto")."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
import pytest

from launcher.model_code import procs
from tests.conftest import MODEL_NAME, wait_for_idle, wait_until

LONG = {"model": MODEL_NAME, "prompt": "def hello", "max_tokens": 400, "ignore_eos": True, "temperature": 0}


def _processes_in_group(pgid: int) -> dict[int, str]:
    return {process.pid: process.comm for process in procs.processes() if process.pgrp == pgid}


@pytest.fixture
def engine(stack):
    found = _processes_in_group(stack.triton.process.pid)
    workers = [pid for pid, comm in found.items() if comm.startswith(procs.WORKER)]
    cores = [pid for pid, comm in found.items() if comm.startswith(procs.ENGINE_CORE)]
    assert workers and cores, found
    worker_cores = set().union(*(procs.affinity(pid) for pid in workers))
    if worker_cores >= os.sched_getaffinity(0):
        pytest.skip(f"vLLM's worker may use every core here ({sorted(worker_cores)}): nothing to place")
    return worker_cores, cores


def _nice_values(pids) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, tid) for pid in pids for tid in procs.threads(pid)}


def test_engine_core_joins_the_worker_under_load_and_leaves_when_quiet(stack, base_url, triton, engine):
    worker_cores, engine_cores = engine
    everything = os.sched_getaffinity(0)
    assert wait_for_idle(triton) == {"active_requests": 0, "engine_unfinished_requests": 0}
    assert wait_until(lambda: not triton.control("stats")["engine_core_colocated"], 5)
    assert all(procs.affinity(pid) == everything for pid in engine_cores)
    free_nice = _nice_values(engine_cores)  # 19 where the model may renice (root here), else left at 0
    assert free_nice in ({19}, {0}), free_nice

    errors: list[BaseException] = []
    clients = _clients(base_url, 3, stream=True, errors=errors)
    try:
        assert wait_until(lambda: triton.control("stats")["engine_core_colocated"], 30)
        assert all(procs.affinity(pid) == worker_cores for pid in engine_cores)
        assert _nice_values(engine_cores) == {0}  # never at nice 19 on the worker's cores
    finally:
        for client in clients:
            client.join(timeout=120)
    assert not errors, errors
    # Quiet again: back on every core after the model's grace period (half a second).
    assert wait_until(lambda: not triton.control("stats")["engine_core_colocated"], 10)
    assert all(procs.affinity(pid) == everything for pid in engine_cores)
    assert wait_until(lambda: _nice_values(engine_cores) == free_nice, 5)
    # The serving processes keep every core throughout (the model only moves its own engine).
    assert procs.affinity(stack.triton.process.pid) == everything
    log = (Path(stack.config.log_dir) / "triton.log").read_text(errors="replace")
    assert "EngineCore moves onto the CPU worker's cores" in log
    if os.geteuid() == 0:
        assert free_nice == {19} and "runs at nice 19 while free" in log


def _clients(
    base_url: str, count: int, stream: bool, errors: list[BaseException], max_tokens: int = LONG["max_tokens"]
) -> list[threading.Thread]:
    """`count` LONG completions at once, each on a thread of its own (started); failures land in `errors`."""
    request = {**LONG, "stream": stream, "max_tokens": max_tokens}

    def one() -> None:
        try:
            with httpx.stream("POST", f"{base_url}/v1/completions", json=request, timeout=180) as r:
                assert r.status_code == 200, r.read()
                body = "".join(r.iter_text())
            assert ("[DONE]" in body) == stream, body[-200:]
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    clients = [threading.Thread(target=one) for _ in range(count)]
    for client in clients:
        client.start()
    return clients


def test_non_streamed_requests_leave_the_engine_core_free(base_url, triton, engine):
    """Without streamed responses the serving processes have little to do: the EngineCore stays off the worker's
    cores (the worker keeps its core; measured in bench/README.md)."""
    assert wait_for_idle(triton) == {"active_requests": 0, "engine_unfinished_requests": 0}
    assert wait_until(lambda: not triton.control("stats")["engine_core_colocated"], 5)
    switches = triton.control("stats")["engine_core_placement_switches"]
    errors: list[BaseException] = []
    # Long enough (about 8 s each here) that the three are seen in flight together however the polls fall.
    clients = _clients(base_url, 3, stream=False, errors=errors, max_tokens=900)
    seen: list[dict] = []

    def three_in_flight_or_over() -> bool:
        seen.append(triton.control("stats"))
        return seen[-1]["active_requests"] == 3 or bool(errors) or not any(client.is_alive() for client in clients)

    try:
        assert wait_until(three_in_flight_or_over, 60)
        assert not errors, errors
        stats = seen[-1]
        assert stats["active_requests"] == 3, [s["active_requests"] for s in seen]
        assert stats["streaming_requests"] == 0 and stats["engine_core_colocated"] is False, stats
    finally:
        for client in clients:
            client.join(timeout=120)
    assert not errors, errors
    assert triton.control("stats")["engine_core_placement_switches"] == switches


def test_one_stream_at_a_time_leaves_the_engine_core_free(base_url, triton, engine):
    switches = triton.control("stats")["engine_core_placement_switches"]
    for _ in range(3):
        response = httpx.post(f"{base_url}/v1/completions", json={**LONG, "max_tokens": 20}, timeout=60)
        assert response.status_code == 200
    stats = triton.control("stats")
    assert stats["engine_core_colocated"] is False
    assert stats["engine_core_placement_switches"] == switches
