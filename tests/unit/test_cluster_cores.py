"""launcher.cluster's CPU split: replicas on one machine get disjoint cores for vLLM's CPU workers."""

from __future__ import annotations

import json

from launcher.cluster import OMP_BIND_ENV, Cluster, ClusterConfig, engine_workers, replica_cpu_binds


def test_two_replicas_on_two_cores_get_one_each():
    assert replica_cpu_binds(2, 1, [0, 1], {}) == ["0", "1"]


def test_blocks_are_split_again_between_an_engines_workers():
    assert replica_cpu_binds(2, 2, range(8), {}) == ["0,1|2,3", "4,5|6,7"]


def test_cores_left_over_by_an_uneven_split_stay_free():
    assert replica_cpu_binds(3, 1, [7, 6, 5, 4, 3, 2, 1, 0], {}) == ["0,1", "2,3", "4,5"]


def test_the_users_binding_is_kept():
    assert replica_cpu_binds(2, 1, [0, 1], {OMP_BIND_ENV: "0-1"}) == [None, None]
    assert replica_cpu_binds(2, 1, [0, 1], {OMP_BIND_ENV: "auto"}) == ["0", "1"]


def test_one_replica_or_too_few_cores_leave_vllms_autobind():
    assert replica_cpu_binds(1, 1, range(4), {}) == [None]
    assert replica_cpu_binds(2, 2, [0, 1, 2], {}) == [None, None]
    assert replica_cpu_binds(3, 1, [0, 1], {}) == [None, None, None]


def test_engine_workers_reads_model_json_under_the_engine_args(tmp_path):
    model_json = tmp_path / "model.json"
    model_json.write_text(json.dumps({"model": "m", "tensor_parallel_size": 2}))
    assert engine_workers(None, model_json) == 2
    assert engine_workers({"pipeline_parallel_size": 2}, model_json) == 4
    assert engine_workers({"tensor_parallel_size": 1}, model_json) == 1


def test_each_replica_stack_carries_its_binding(monkeypatch, tmp_path):
    monkeypatch.delenv(OMP_BIND_ENV, raising=False)
    monkeypatch.setattr("launcher.cluster.os.sched_getaffinity", lambda pid: {0, 1})
    cluster = Cluster(ClusterConfig(model="m", replicas=2, engine_args={"tensor_parallel_size": 1}, run_dir=tmp_path))
    assert [replica.config.engine_env for replica in cluster.replicas] == [{OMP_BIND_ENV: "0"}, {OMP_BIND_ENV: "1"}]
    assert [replica.triton.extra_env[OMP_BIND_ENV] for replica in cluster.replicas] == ["0", "1"]
