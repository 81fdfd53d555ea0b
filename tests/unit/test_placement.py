"""EnginePlacement's decisions: when the EngineCore joins its worker's cores and when it leaves, and when the whole
tuning is skipped (no /proc needed: the processes found and the affinity calls are stand-ins)."""

from __future__ import annotations

import asyncio

import placement
import pytest
from placement import EnginePlacement
from procs import EngineProcesses

WORKER = {0}
EVERY = {0, 1}


@pytest.fixture
def found(monkeypatch):
    """What engine_processes() finds: by default a worker pinned to core 0 and an EngineCore, on a 2-core box."""
    engine = EngineProcesses(workers=[4241], engine_cores=[4242], worker_cores=set(WORKER))
    monkeypatch.setattr(placement, "engine_processes", lambda root: engine)
    monkeypatch.setattr(placement.os, "sched_getaffinity", lambda pid: set(EVERY))
    return engine


@pytest.fixture
def pinned(found, monkeypatch):
    """Record every affinity change instead of making it."""
    calls: list[set[int]] = []
    monkeypatch.setattr(placement, "set_affinity", lambda pids, cores: calls.append(set(cores)) or len(pids))
    return calls


def test_auto_places_at_two_requests_and_frees_after_a_quiet_grace_period(pinned):
    async def scenario() -> list[bool]:
        place = EnginePlacement("auto", asyncio.get_running_loop(), busy_requests=2, free_after=0.05)
        assert "while 2+ streamed requests" in place.start()
        seen = []
        place.update(1)
        seen.append(place.colocated)  # one request: stays free
        place.update(2)
        seen.append(place.colocated)  # two: placed at once
        place.update(1)
        await asyncio.sleep(0.01)
        seen.append(place.colocated)
        place.update(0)
        await asyncio.sleep(0.08)
        seen.append(place.colocated)  # quiet for longer than the grace period: free again
        return seen

    assert asyncio.run(scenario()) == [False, True, True, False]
    assert pinned == [WORKER, EVERY]


def test_always_places_once_at_start_and_ignores_the_load(pinned):
    async def scenario() -> None:
        place = EnginePlacement("always", asyncio.get_running_loop(), free_after=0.01)
        assert "shares the CPU worker's cores [0]" in place.start()
        place.update(0)
        await asyncio.sleep(0.03)
        assert place.colocated

    asyncio.run(scenario())
    assert pinned == [WORKER]


def _skipped(mode: str, on_cpu: bool = True) -> str:
    async def scenario() -> str:
        place = EnginePlacement(mode, asyncio.get_running_loop(), on_cpu=on_cpu)
        said = place.start()
        place.update(5)
        assert not place.active and not place.colocated
        return said

    return asyncio.run(scenario())


def test_never_does_nothing_and_says_so(pinned):
    assert "off (COLOCATE_ENGINE_CORE never)" in _skipped("never")
    assert pinned == []


@pytest.mark.parametrize("mode", ["auto", "always"])
def test_off_the_cpu_platform_nothing_is_looked_for_or_moved(pinned, monkeypatch, mode):
    monkeypatch.setattr(placement, "engine_processes", lambda root: pytest.fail("looked for processes on a GPU"))
    assert "skipped: vLLM does not run on the CPU platform" in _skipped(mode, on_cpu=False)
    assert pinned == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"workers": []}, "no 'VLLM::Worker' process found by its title"),
        ({"engine_cores": []}, "no 'VLLM::EngineCor' process found by its title"),
        ({"workers": [], "engine_cores": []}, "no 'VLLM::Worker' and 'VLLM::EngineCor' process"),
        ({"worker_cores": set(EVERY)}, "the CPU worker is not pinned (cores [0, 1])"),
        ({"worker_cores": set()}, "the CPU worker is not pinned (cores [])"),
    ],
)
def test_missing_preconditions_skip_the_placement_with_the_reason(pinned, found, change, reason):
    for name, value in change.items():
        setattr(found, name, value)
    assert reason in _skipped("auto")
    assert pinned == []


def test_always_needs_no_event_loop_but_auto_does(pinned):
    assert "shares the CPU worker's cores [0]" in EnginePlacement("always").start()
    assert pinned == [WORKER]
    with pytest.raises(ValueError, match="auto"):
        EnginePlacement("auto")


@pytest.fixture
def niced(pinned, monkeypatch):
    """Allow renicing and record every nice change (in order with the affinity changes, in `pinned`)."""
    monkeypatch.setattr(placement, "can_renice", lambda pid, low, high: True)
    monkeypatch.setattr(placement, "set_nice", lambda pids, nice: pinned.append(("nice", nice)) or len(pids))
    return pinned


def test_auto_runs_the_free_engine_core_at_nice_19_and_places_it_at_nice_0(niced):
    async def scenario() -> None:
        place = EnginePlacement("auto", asyncio.get_running_loop(), busy_requests=2, free_after=0.02)
        assert "nice 19 while free" in place.start()
        place.update(2)
        place.update(0)
        await asyncio.sleep(0.05)

    asyncio.run(scenario())
    # reniced before it joins the worker's cores (never at nice 19 there), reniced after it leaves them
    assert niced == [("nice", 19), ("nice", 0), WORKER, EVERY, ("nice", 19)]


def test_no_renice_where_nice_cannot_be_restored(pinned, monkeypatch):
    monkeypatch.setattr(placement, "can_renice", lambda pid, low, high: False)
    monkeypatch.setattr(placement, "set_nice", lambda pids, nice: pytest.fail("reniced without permission"))

    async def scenario() -> str:
        place = EnginePlacement("auto", asyncio.get_running_loop(), free_after=0.01)
        note = place.start()
        place.update(2)
        place.update(0)
        await asyncio.sleep(0.03)
        return note

    assert "not reniced when free" in asyncio.run(scenario())
    assert pinned == [WORKER, EVERY]


def test_always_and_free_nice_0_never_renice(pinned, monkeypatch):
    monkeypatch.setattr(placement, "can_renice", lambda pid, low, high: pytest.fail("asked"))
    monkeypatch.setattr(placement, "set_nice", lambda pids, nice: pytest.fail("reniced"))
    assert "shares" in EnginePlacement("always").start()

    async def scenario() -> str:
        return EnginePlacement("auto", asyncio.get_running_loop(), free_nice=0).start()

    assert asyncio.run(scenario()).endswith("requests are in flight")
