"""launcher.triton's process helpers: free ports, a process group started with its log, waiting for readiness."""

from __future__ import annotations

import socket
import sys

import pytest

from launcher import triton
from launcher.triton import free_port, free_ports, http_answers, start_group, stop_group, wait_until


def test_free_ports_are_distinct():
    ports = free_ports(5)
    assert len(set(ports)) == 5 and all(0 < port < 65536 for port in ports)
    assert isinstance(free_port(), int)


def test_free_ports_stay_out_of_the_kernels_ephemeral_range():
    low = triton._ephemeral_low()
    ports = free_ports(50)
    assert all(port < low for port in ports), (low, ports)
    assert not set(ports) & set(free_ports(50))  # never handed out twice by one process


def test_a_port_in_use_is_not_handed_out(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert not triton._bindable(taken)
        monkeypatch.setattr(triton.random, "sample", lambda pool, k: [taken, *[p for p in pool if p != taken]])
        assert taken not in free_ports(3)


def test_ephemeral_range_read_from_proc(tmp_path):
    (tmp_path / "range").write_text("40000\t60999\n", encoding="ascii")
    assert triton._ephemeral_low(str(tmp_path / "range")) == 40000
    assert triton._ephemeral_low(str(tmp_path / "missing")) == 32768


def test_nothing_listening_does_not_answer():
    assert not http_answers(f"http://127.0.0.1:{free_port()}/health", timeout=1, any_status=True)


def test_start_group_logs_and_wait_until_sees_the_exit(tmp_path):
    log = tmp_path / "child.log"
    process = start_group([sys.executable, "-c", "print('hello from the child'); raise SystemExit(3)"], log)
    try:
        with pytest.raises(RuntimeError, match="child exited with code 3"):
            wait_until(process, lambda: False, 30, "child", "get ready", poll=0.05)
    finally:
        stop_group(process, timeout=5)
    assert "hello from the child" in log.read_text()


def test_wait_until_ready_and_timeout(tmp_path):
    process = start_group([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        calls = []
        wait_until(process, lambda: calls.append(1) or len(calls) == 3, 10, "sleeper", "get ready", poll=0.01)
        assert len(calls) == 3
        with pytest.raises(TimeoutError, match="sleeper did not get ready within 0 s"):
            wait_until(process, lambda: False, 0.1, "sleeper", "get ready", poll=0.01)
    finally:
        stop_group(process, timeout=5)
    assert process.poll() is not None
