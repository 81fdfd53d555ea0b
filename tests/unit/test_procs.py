"""procs.py, the one /proc reader, against this machine's real /proc (children of the test process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import procs

from launcher.model_code import MODEL_CODE, model_module


def test_stat_reads_this_process():
    me = procs.stat(os.getpid())
    assert me is not None
    assert (me.pid, me.ppid, me.pgrp, me.state) == (os.getpid(), os.getppid(), os.getpgrp(), "R")
    assert me.cpu_seconds > 0


def test_descendants_alive_and_a_zombie():
    # A child that starts a grandchild, prints its pid and waits.
    code = (
        "import subprocess, sys, time; p = subprocess.Popen(['sleep', '30']); print(p.pid, flush=True); time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    grandchild = int(child.stdout.readline())
    try:
        found = procs.descendants(os.getpid())
        assert found[child.pid].startswith("python") and found[grandchild] == "sleep"
        assert set(procs.descendants([child.pid])) == {grandchild}
        assert procs.alive(child.pid) and os.getpid() not in found
        assert procs.affinity(child.pid) == os.sched_getaffinity(0)
        assert procs.read(grandchild, "cmdline").split("\0")[:2] == ["sleep", "30"]
    finally:
        os.kill(grandchild, signal.SIGKILL)
        child.kill()
    deadline = time.monotonic() + 5
    while procs.stat(child.pid).state != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not procs.alive(child.pid)  # a zombie until reaped
    child.wait()
    assert procs.stat(child.pid) is None and procs.read(child.pid, "stat") == ""


def test_no_engine_below_a_plain_process():
    # A fresh child as the root: pytest itself may have engines below it (the integration tests' session stack).
    child = subprocess.Popen(["sleep", "30"])
    try:
        found = procs.engine_processes(child.pid)
        assert found.workers == [] and found.engine_cores == [] and not found.worker_pinned
    finally:
        child.kill()
        child.wait()


def test_outside_triton_the_model_module_is_loaded_by_path_not_through_sys_path():
    loaded = model_module("procs")
    assert loaded.__name__ == "vllm_model_code.procs" and loaded is model_module("procs")
    assert loaded.__file__ == str(MODEL_CODE / "procs.py")
    assert loaded.read(os.getpid(), "comm") == procs.read(os.getpid(), "comm")


def test_renice_every_thread_of_a_real_process_and_back():
    two_threads = "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start(); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", two_threads])
    try:
        deadline = time.monotonic() + 10
        while len(procs.threads(child.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tids = procs.threads(child.pid)
        assert len(tids) >= 2
        if not procs.can_renice(child.pid):
            assert os.geteuid() != 0  # only an unprivileged process may be refused nice 0 again
            return
        assert procs.set_nice([child.pid], 19) == len(tids)
        assert {os.getpriority(os.PRIO_PROCESS, tid) for tid in tids} == {19}
        assert procs.set_nice([child.pid], 0) == len(tids)
        assert {os.getpriority(os.PRIO_PROCESS, tid) for tid in tids} == {0}
    finally:
        child.kill()
        child.wait()
