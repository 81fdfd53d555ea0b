"""CPU seconds used per process (from /proc), grouped by role, so each level shows where the cores went.

On a 2-core box every cycle spent outside the engine is taken from the engine; this says which process took it.
"""

from __future__ import annotations

import time
from pathlib import Path

from launcher.model_code import procs

OTHERS = "other processes (noise)"
_TOTAL = "_machine_busy"
# Process names (comm, at most 15 characters) -> role.
_ROLES = {
    "tritonserver": "tritonserver",
    "triton_python_b": "stub (model.py + AsyncLLM client)",
    procs.ENGINE_CORE: "EngineCore",
    procs.WORKER: "Worker",
}


def _role(comm: str, default: str) -> str:
    if comm in _ROLES:
        return _ROLES[comm]
    if comm.startswith("VLLM::"):
        return comm[len("VLLM::") :]
    return default


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (user, nice, system, irq, softirq, steal), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / procs.CLOCK_TICKS


class CpuProbe:
    """Snapshots of CPU seconds per role for the process groups of one system (and this process, if asked)."""

    def __init__(self, groups: dict[str, int], self_label: str | None = None) -> None:
        self.groups = groups  # default role for the group's plain processes -> process group id
        self.self_label = self_label

    def snapshot(self) -> dict[str, float]:
        by_pid: dict[int, tuple[str, float]] = {}
        for process in procs.processes():
            for default, pgid in self.groups.items():
                if process.pgrp == pgid:
                    by_pid[process.pid] = (_role(process.comm, default), process.cpu_seconds)
        totals: dict[str, float] = {}
        for role, seconds in by_pid.values():
            totals[role] = totals.get(role, 0.0) + seconds
        if self.self_label:
            totals[self.self_label] = time.process_time()
        totals[_TOTAL] = machine_busy_seconds()
        return totals

    @staticmethod
    def diff(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """CPU seconds used between two snapshots, per role (processes that exited in between are not counted),
        and by everything else on the machine (`OTHERS`: someone else's work competing for the cores)."""
        used = {role: after[role] - before.get(role, 0.0) for role in sorted(after) if role != _TOTAL}
        machine = after[_TOTAL] - before.get(_TOTAL, after[_TOTAL])
        used = {role: round(seconds, 2) for role, seconds in used.items()}
        used[OTHERS] = round(max(0.0, machine - sum(used.values())), 2)
        return used
