"""vLLM on CPU: the model gives the EngineCore its worker's cores (model_repository/vllm_model/1/placement.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.cpu import processes


def _processes_in_group(pgid: int) -> dict[int, str]:
    return {pid: comm for pid, comm, pgrp, _ in processes() if pgrp == pgid}


def _affinity(pid: int) -> set[int]:
    cores: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            cores |= os.sched_getaffinity(int(tid))
        except OSError:
            continue
    return cores


def test_engine_core_runs_on_the_cpu_workers_cores(stack):
    processes = _processes_in_group(stack.triton.process.pid)
    workers = [pid for pid, comm in processes.items() if comm.startswith("VLLM::Worker")]
    cores = [pid for pid, comm in processes.items() if comm.startswith("VLLM::EngineCor")]
    assert workers and cores, processes
    worker_cores = set().union(*(_affinity(pid) for pid in workers))
    if worker_cores >= os.sched_getaffinity(0):
        pytest.skip(f"vLLM's worker may use every core here ({sorted(worker_cores)}): nothing to place")
    for pid in cores:
        assert _affinity(pid) == worker_cores
    # The serving processes keep every core (the model only moves its own engine).
    server = stack.triton.process.pid
    assert _affinity(server) == os.sched_getaffinity(0)
    log = (Path(stack.config.log_dir) / "triton.log").read_text(errors="replace")
    assert "EngineCore shares the CPU worker's cores" in log
