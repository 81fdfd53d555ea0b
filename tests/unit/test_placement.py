"""EnginePlacement's decisions: when the EngineCore joins its worker's cores and when it leaves (no /proc needed)."""

from __future__ import annotations

import asyncio

import placement
import pytest
from placement import EnginePlacement

WORKER = {0}
EVERY = {0, 1}


@pytest.fixture
def pinned(monkeypatch):
    """Record every affinity change instead of making it; the engine is 'found' with its worker on core 0."""
    calls: list[set[int]] = []
    monkeypatch.setattr(placement, "_engine_processes", lambda root: (set(WORKER), [4242]))
    monkeypatch.setattr(placement, "_pin", lambda pids, cores: calls.append(set(cores)) or len(pids))
    monkeypatch.setattr(placement.os, "sched_getaffinity", lambda pid: set(EVERY))
    return calls


def test_auto_places_at_two_requests_and_frees_after_a_quiet_grace_period(pinned):
    async def scenario() -> list[bool]:
        place = EnginePlacement("auto", asyncio.get_running_loop(), busy_requests=2, free_after=0.05)
        assert "while 2+ requests" in place.start()
        seen = []
        place.update(1)
        seen.append(place.colocated)  # one request: stays free
        place.update(2)
        seen.append(place.colocated)  # two: placed at once
        place.update(1)
        place.update(2)  # back up within the grace period: no flapping
        await asyncio.sleep(0.08)
        seen.append(place.colocated)
        place.update(1)
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


def test_never_and_no_pinned_worker_do_nothing(pinned, monkeypatch):
    async def scenario(mode: str) -> str | None:
        place = EnginePlacement(mode, asyncio.get_running_loop())
        started = place.start()
        place.update(5)
        return started

    assert asyncio.run(scenario("never")) is None
    monkeypatch.setattr(placement, "_engine_processes", lambda root: (set(), [4242]))  # e.g. vLLM on a GPU
    assert asyncio.run(scenario("auto")) is None
    assert pinned == []


def test_always_needs_no_event_loop_but_auto_does(pinned):
    """The benchmark places its baselines' EngineCore outside any event loop (mode "always")."""
    assert "shares the CPU worker's cores [0]" in EnginePlacement("always").start()
    assert pinned == [WORKER]
    with pytest.raises(ValueError, match="auto"):
        EnginePlacement("auto")
