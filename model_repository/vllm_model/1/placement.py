"""Where vLLM's EngineCore runs, when vLLM runs on the CPU platform (COLOCATE_ENGINE_CORE: auto, always, never).

vLLM on CPU pins its model worker (`VLLM::Worker`) to some cores but leaves its scheduler process
(`VLLM::EngineCore`) free to run anywhere; the two take turns and busy-poll while the other works. Moving the
EngineCore onto the worker's cores frees a core for the serving processes while they stream many responses; with a
single stream, or with requests that are not streamed (the serving processes then have little to do), a free
EngineCore leaves the worker its core, so "auto" moves it only while at least two streamed requests are in flight (the
model counts them) and frees it again after half a second with fewer. This is a measured tuning for small CPU
machines (the numbers: bench/README.md, "EngineCore placement and the spare LoRA slot"), so it applies only where its
preconditions hold: vLLM on the CPU platform, a worker and an EngineCore found by vLLM's process titles, and a worker
pinned to some of the cores.
Otherwise `start()` says why it is skipped (logged once by the model) and nothing moves. In "auto" the free
EngineCore also runs at nice 19 (back to 0 whenever it is placed), where this process may set both; its busy-polling
otherwise stalls the serving processes now and then.
"""

from __future__ import annotations

import asyncio
import os

from procs import ENGINE_CORE, WORKER, can_renice, engine_processes, set_affinity, set_nice


class EnginePlacement:
    """Where the EngineCore runs, as the load changes (call `update` on the engine's event loop).

    mode "always": on the worker's cores from the start; "auto": there while at least `busy_requests` requests are
    in flight, back on every core after `free_after` seconds with fewer (needs the `loop` for that timer); "never":
    left as vLLM placed it. `on_cpu`: whether vLLM runs on its CPU platform (nothing is placed otherwise).
    """

    def __init__(
        self,
        mode: str,
        loop: asyncio.AbstractEventLoop | None = None,
        on_cpu: bool = True,
        busy_requests: int = 2,
        free_after: float = 0.5,
        free_nice: int = 19,
    ) -> None:
        if mode == "auto" and loop is None:
            raise ValueError("placement mode 'auto' needs the event loop that calls update()")
        self.mode = mode
        self.loop = loop
        self.on_cpu = on_cpu
        self.busy_requests = busy_requests
        self.free_after = free_after
        # "auto": the free EngineCore runs at this nice value (0: not reniced), back to 0 when placed; without it a
        # free EngineCore's busy-polling stalled whole streams between tritonserver and the frontend (p90 212-242 ms
        # at one stream, bench/README.md "Where a streamed token's time goes").
        self.free_nice = free_nice
        self.renice = False
        self.worker_cores: set[int] = set()
        self.engine_cores: list[int] = []
        self.active = False  # the preconditions hold and the mode moves the EngineCore
        self.colocated = False
        self.switches = 0
        self._in_flight = 0
        self._free_timer: asyncio.TimerHandle | None = None

    def start(self, root: int | None = None) -> str:
        """Find the engine's processes (once the engine is up); returns what was done, or why nothing is."""
        if self.mode == "never":
            return "EngineCore placement off (COLOCATE_ENGINE_CORE never)"
        if not self.on_cpu:
            return "EngineCore placement skipped: vLLM does not run on the CPU platform"
        found = engine_processes(root)
        if not found.workers or not found.engine_cores:
            missing = " and ".join(
                f"'{title}'" for title, pids in ((WORKER, found.workers), (ENGINE_CORE, found.engine_cores)) if not pids
            )
            return (
                f"EngineCore placement skipped: no {missing} process found by its title "
                f"(vLLM's process names may have changed)"
            )
        if not found.worker_pinned:
            return f"EngineCore placement skipped: the CPU worker is not pinned (cores {sorted(found.worker_cores)})"
        self.worker_cores, self.engine_cores, self.active = found.worker_cores, found.engine_cores, True
        if self.mode == "always":
            self._apply(True)
            return f"EngineCore shares the CPU worker's cores {sorted(self.worker_cores)}"
        moves = (
            f"EngineCore moves onto the CPU worker's cores {sorted(self.worker_cores)} while "
            f"{self.busy_requests}+ streamed requests are in flight"
        )
        if not self.free_nice:
            return moves
        self.renice = all(can_renice(pid, 0, self.free_nice) for pid in self.engine_cores)
        if not self.renice:
            return f"{moves}; not reniced when free (this process may not set nice {self.free_nice} and back to 0)"
        set_nice(self.engine_cores, self.free_nice)
        return f"{moves}, and runs at nice {self.free_nice} while free"

    def update(self, in_flight: int) -> None:
        """The number of requests in flight changed."""
        self._in_flight = in_flight
        if self.mode != "auto" or not self.active:
            return
        if in_flight >= self.busy_requests:
            if self._free_timer is not None:
                self._free_timer.cancel()
                self._free_timer = None
            if not self.colocated:
                self._apply(True)
        elif self.colocated and self._free_timer is None:
            self._free_timer = self.loop.call_later(self.free_after, self._free_if_still_quiet)

    def _free_if_still_quiet(self) -> None:
        self._free_timer = None
        if self._in_flight < self.busy_requests and self.colocated:
            self._apply(False)

    def _apply(self, colocate: bool) -> None:
        if self.renice and colocate:
            set_nice(self.engine_cores, 0)  # on the worker's cores it must not starve behind the serving processes
        set_affinity(self.engine_cores, self.worker_cores if colocate else os.sched_getaffinity(0))
        if self.renice and not colocate:
            set_nice(self.engine_cores, self.free_nice)
        self.colocated = colocate
        self.switches += 1
