"""The machine's processes, read from /proc (Linux): the one reader for the model's EngineCore placement, the
launcher, the bench, the soak and the tests.

It lives beside model.py because Triton's Python backend puts only the model's own directory on the stub's sys.path
(the model repository is meant to be copied into any Triton as it is); code outside Triton loads it by file path
through `launcher.model_code`. Standard library only, for that reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

# vLLM's process titles, as /proc's comm keeps them (15 characters: "VLLM::EngineCore" -> "VLLM::EngineCor").
WORKER = "VLLM::Worker"
ENGINE_CORE = "VLLM::EngineCor"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Process:
    """One line of /proc/<pid>/stat, the fields used here."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    cpu_seconds: float  # user + system


def read(pid: int | str, name: str) -> str:
    """The text of /proc/<pid>/<name> (e.g. cmdline, status, maps, environ), or "" where it cannot be read."""
    try:
        with open(f"/proc/{pid}/{name}", encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError:
        return ""


def pids() -> list[int]:
    """Every process id on the machine, now."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def stat(pid: int) -> Process | None:
    """The process's stat line, or None if it is gone."""
    raw = read(pid, "stat")
    if not raw:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    cpu_seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return Process(pid, comm, fields[0], int(fields[1]), int(fields[2]), cpu_seconds)


def processes() -> list[Process]:
    """Every process readable now."""
    return [found for found in map(stat, pids()) if found is not None]


def descendants(roots: int | Iterable[int]) -> dict[int, str]:
    """Every process below `roots` (not the roots themselves): pid -> comm."""
    children: dict[int, list[Process]] = {}
    for process in processes():
        children.setdefault(process.ppid, []).append(process)
    found: dict[int, str] = {}
    frontier = [roots] if isinstance(roots, int) else list(roots)
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if child.pid not in found:
                found[child.pid] = child.comm
                frontier.append(child.pid)
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    found = stat(pid)
    return found is not None and found.state != "Z"


def threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def affinity(pid: int) -> set[int]:
    """The cores any thread of the process may run on."""
    cores: set[int] = set()
    for tid in threads(pid):
        try:
            cores |= os.sched_getaffinity(tid)
        except OSError:  # the thread ended meanwhile
            continue
    return cores


def set_affinity(pids: Iterable[int], cores: set[int]) -> int:
    """Set the affinity of every thread of `pids`; returns how many threads were set."""
    count = 0
    for pid in pids:
        for tid in threads(pid):
            try:
                os.sched_setaffinity(tid, cores)
                count += 1
            except OSError:  # the thread ended meanwhile
                continue
    return count


def set_nice(pids: Iterable[int], nice: int) -> int:
    """Set the nice value of every thread of `pids`; returns how many threads were set."""
    count = 0
    for pid in pids:
        for tid in threads(pid):
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                count += 1
            except ProcessLookupError:  # the thread ended meanwhile
                continue
    return count


def can_renice(pid: int, low: int = 0, high: int = 19) -> bool:
    """Whether this process may move `pid` to nice `high` and back to `low` (raising priority needs CAP_SYS_NICE)."""
    try:
        before = os.getpriority(os.PRIO_PROCESS, pid)
        os.setpriority(os.PRIO_PROCESS, pid, high)
        os.setpriority(os.PRIO_PROCESS, pid, low)
    except OSError:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, before)
        except (OSError, UnboundLocalError):
            pass
        return False
    return True


@dataclass
class EngineProcesses:
    """vLLM's engine processes below a root, found by their process titles."""

    workers: list[int] = field(default_factory=list)
    engine_cores: list[int] = field(default_factory=list)
    worker_cores: set[int] = field(default_factory=set)  # the cores the workers are pinned to, all of them

    @property
    def worker_pinned(self) -> bool:
        """The workers keep to some of this process's cores (vLLM on CPU pins them); False on every core."""
        return bool(self.worker_cores) and not self.worker_cores >= os.sched_getaffinity(0)


def engine_processes(root: int | None = None) -> EngineProcesses:
    """vLLM's workers and EngineCores below `root` (default: this process) and the workers' cores."""
    found = EngineProcesses()
    for pid, comm in descendants(os.getpid() if root is None else root).items():
        if comm.startswith(WORKER):
            found.workers.append(pid)
            found.worker_cores |= affinity(pid)
        elif comm.startswith(ENGINE_CORE):
            found.engine_cores.append(pid)
    return found
