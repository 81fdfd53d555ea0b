"""CPU placement of vLLM's engine processes when vLLM runs on CPU.

vLLM on CPU binds its model worker (`VLLM::Worker`) to some cores and leaves the rest for everything else, but its
scheduler process (`VLLM::EngineCore`) stays free to run anywhere. The two take turns (the core schedules a step,
the worker computes it, the core turns its output into results) and each busy-polls while the other works, so a free
EngineCore spends a core of its own mostly spinning, taken from tritonserver, this stub and the frontend. Giving the
EngineCore the worker's cores makes it spin on a core that is waiting anyway: measured on a 2-core box (tiny model,
32 streams), the EngineCore used 0.07 instead of 0.52 ms of CPU per token and the stack's throughput rose ~35%.

Nothing happens when no worker is pinned (vLLM on GPU, or a worker allowed on every core).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WORKER = "VLLM::Worker"
ENGINE_CORE = "VLLM::EngineCor"  # /proc comm keeps 15 characters of "VLLM::EngineCore"


@dataclass
class Placement:
    """What `colocate_engine_core` did."""

    cores: list[int]
    engine_core_pids: list[int]
    threads: int


def _stat(pid: int) -> tuple[str, int] | None:
    """(comm, parent pid) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    return comm, int(raw[raw.rindex(")") + 2 :].split()[1])


def descendants(root: int) -> dict[int, str]:
    """Every process below `root`: pid -> comm."""
    parents: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)] = stat
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (comm, ppid) in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = comm
                frontier.append(pid)
    return found


def _threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def colocate_engine_core(root: int | None = None) -> Placement | None:
    """Pin the EngineCore processes below `root` (default: this process) to their worker's cores."""
    processes = descendants(os.getpid() if root is None else root)
    worker_cores: set[int] = set()
    for pid, comm in processes.items():
        if comm.startswith(WORKER):
            for tid in _threads(pid):
                try:
                    worker_cores |= os.sched_getaffinity(tid)
                except OSError:
                    continue
    if not worker_cores or worker_cores >= os.sched_getaffinity(0):
        return None
    engine_cores = [pid for pid, comm in processes.items() if comm.startswith(ENGINE_CORE)]
    threads = 0
    for pid in engine_cores:
        for tid in _threads(pid):
            try:
                os.sched_setaffinity(tid, worker_cores)
                threads += 1
            except OSError:  # the thread ended meanwhile
                continue
    return Placement(sorted(worker_cores), engine_cores, threads) if threads else None
