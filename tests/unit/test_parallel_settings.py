"""Scale-up inside one replica: tensor/pipeline parallel and the executor backend reach vLLM, workers can start."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from engine_settings import (
    OMP_BIND_ENV,
    SettingsError,
    cpu_thread_binding,
    load_engine_settings,
    numa_node_count,
    parallel_world_size,
    worker_python_path,
)

PARALLEL = {"tensor_parallel_size": 2, "pipeline_parallel_size": 2, "distributed_executor_backend": "mp"}


def settings_for(tmp_path: Path, engine_args: dict, environ: dict | None = None):
    (tmp_path / "model.json").write_text(json.dumps({"model": "org/a", **engine_args}), encoding="utf-8")
    return load_engine_settings(str(tmp_path), environ or {}, {})


@pytest.mark.parametrize("backend", ["mp", "ray"])
def test_parallel_arguments_reach_vllms_engine_args(tmp_path, backend):
    from vllm.engine.arg_utils import AsyncEngineArgs

    settings = settings_for(tmp_path, {**PARALLEL, "distributed_executor_backend": backend})
    engine_args = AsyncEngineArgs(**settings.engine_args)
    assert engine_args.tensor_parallel_size == 2
    assert engine_args.pipeline_parallel_size == 2
    assert engine_args.distributed_executor_backend == backend


def test_parallel_arguments_from_the_environment_override(tmp_path):
    environ = {"TRITON_VLLM_ENGINE_ARGS": json.dumps({"tensor_parallel_size": 4})}
    settings = settings_for(tmp_path, PARALLEL, environ)
    assert settings.engine_args["tensor_parallel_size"] == 4
    assert parallel_world_size(settings.engine_args) == 8


@pytest.mark.parametrize(
    ("args", "world"),
    [({}, 1), ({"tensor_parallel_size": 2}, 2), ({"pipeline_parallel_size": 3}, 3), (PARALLEL, 4)],
)
def test_world_size(args, world):
    assert parallel_world_size(args) == world


def test_two_cpu_workers_on_one_numa_node_get_a_cpu_each():
    value, note = cpu_thread_binding({"tensor_parallel_size": 2}, True, {}, {0, 1}, numa_nodes=1)
    assert value == "0|1"
    assert OMP_BIND_ENV in note and "NUMA" in note


def test_cpus_split_evenly_in_order():
    value, _ = cpu_thread_binding(PARALLEL, True, {OMP_BIND_ENV: "auto"}, {7, 0, 1, 2, 3, 4, 5, 6, 8}, 1)
    assert value == "0,1|2,3|4,5|6,7"


def test_users_binding_kept():
    value, note = cpu_thread_binding({"tensor_parallel_size": 2}, True, {OMP_BIND_ENV: "0-3|4-7"}, {0, 1}, 1)
    assert value is None and "'0-3|4-7' as set" in note


@pytest.mark.parametrize(
    ("args", "on_cpu", "nodes"),
    [({"tensor_parallel_size": 2}, False, 1), ({}, True, 1), ({"tensor_parallel_size": 2}, True, 2)],
)
def test_no_binding_on_gpus_single_workers_or_enough_numa_nodes(args, on_cpu, nodes):
    assert cpu_thread_binding(args, on_cpu, {}, {0, 1, 2, 3}, nodes)[0] is None


def test_more_workers_than_cpus_is_a_clear_error():
    with pytest.raises(SettingsError, match="4 CPU workers need 4 CPUs"):
        cpu_thread_binding(PARALLEL, True, {}, {0, 1}, 1)


def test_numa_nodes_counted_from_sys(tmp_path):
    for node, cpus in (("node0", "0-1"), ("node1", "2-3,6"), ("node2", "")):
        (tmp_path / node).mkdir()
        (tmp_path / node / "cpulist").write_text(cpus + "\n", encoding="ascii")
    (tmp_path / "possible").write_text("0-2\n", encoding="ascii")
    assert numa_node_count({0, 1, 2, 3}, str(tmp_path)) == 2
    assert numa_node_count({6}, str(tmp_path)) == 1
    assert numa_node_count({0}, str(tmp_path / "missing")) == 1


def test_this_machine_has_a_numa_node():
    assert numa_node_count(os.sched_getaffinity(0)) >= 1


def test_model_dir_first_on_the_workers_python_path():
    assert worker_python_path({}, "/models/vllm_model/1") == "/models/vllm_model/1"
    joined = worker_python_path({"PYTHONPATH": "/a:/b"}, "/m")
    assert joined.split(os.pathsep) == ["/m", "/a", "/b"]
    assert worker_python_path({"PYTHONPATH": joined}, "/m") == joined  # not added twice
