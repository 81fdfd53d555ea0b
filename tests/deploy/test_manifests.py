"""Every kustomize overlay renders, every object validates against the Kubernetes schemas, and what the manifests
say about the server (probe paths, ports, environment knobs, drain timing, GPUs) matches what the code serves."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import kubernetes_validate
import pytest

from frontend.routes import health, metrics
from frontend.settings import Settings
from launcher.stack import engine_environment
from launcher.triton import TritonPorts
from tests.deploy.conftest import OVERLAYS, REPO, one, server_container

K8S_VERSION = "1.37.0"
# Custom resources: kubernetes-validate carries only the built-in kinds, and the CRDs' published schemas are not
# vendored into this repository.
CRD_KINDS = {"PodMonitor", "ServiceMonitor", "InferencePool", "ScaledObject"}
# Environment variables of other programs that the manifests may set (the Hugging Face hub library).
FOREIGN_ENV = {"HF_HOME", "HF_HUB_OFFLINE"}


def code_env_knobs() -> set[str]:
    """Every environment variable the launcher and the frontend's settings read."""
    names: set[str] = set()
    for path in [*(REPO / "launcher").glob("*.py"), REPO / "frontend" / "settings.py"]:
        text = path.read_text()
        names |= set(re.findall(r"""environ(?:\.get\(|\[)\s*["']([A-Z0-9_]+)["']""", text))
        names |= set(re.findall(r"""\benv\.get\(\s*["']([A-Z0-9_]+)["']""", text))
        names |= set(re.findall(r"""_env_bool\(\s*env,\s*["']([A-Z0-9_]+)["']""", text))
    # The engine's variables the launcher passes on to tritonserver (with its defaults).
    return names | set(engine_environment(Path("/unused")))


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def named_ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def probes(container: dict) -> dict[str, dict]:
    return {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")}


def route_paths(router) -> set[str]:
    return {route.path for route in router.routes}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_stack(rendered, overlay):
    kinds = sorted(o["kind"] for o in rendered[overlay])
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "PodMonitor"):
        assert kind in kinds, f"{overlay} renders no {kind}: {kinds}"
    assert ("InferencePool" in kinds) == (overlay == "inference-pool")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_objects_validate_against_kubernetes_schemas(rendered, overlay):
    checked = 0
    for obj in rendered[overlay]:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources(rendered, overlay):
    kinds = sorted({o["kind"] for o in rendered[overlay] if o["kind"] in CRD_KINDS})
    assert kinds
    pytest.skip(f"{', '.join(kinds)}: CRD schemas (prometheus-operator, gateway-api-inference-extension) not carried")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_knobs_are_the_ones_the_code_reads(rendered, overlay):
    known = code_env_knobs()
    # The knobs README and the launcher document; if one disappears from the code the manifests must follow.
    assert {"MODEL", "PORT", "API_KEY", "ENGINE_ARGS", "TRITON_GRPC_PORT", "VLLM_CPU_KVCACHE_SPACE"} <= known
    unknown = set(env_of(server_container(rendered[overlay]))) - known - FOREIGN_ENV
    assert not unknown, f"{overlay} sets environment variables no code reads: {sorted(unknown)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_match_the_code(rendered, overlay):
    container = server_container(rendered[overlay])
    env = env_of(container)
    ports = named_ports(container)
    defaults = TritonPorts()
    expected = {
        "http": ("PORT", Settings.port),
        "triton-http": ("TRITON_HTTP_PORT", defaults.http),
        "triton-grpc": ("TRITON_GRPC_PORT", defaults.grpc),
        "triton-metrics": ("TRITON_METRICS_PORT", defaults.metrics),
    }
    for name, (knob, default) in expected.items():
        value = int(env[knob]["value"]) if knob in env else default
        assert ports[name] == value, f"{overlay}: port {name} is {ports[name]}, the server listens on {value}"
    service = one(rendered[overlay], "Service")
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports
    assert service["spec"]["selector"].items() <= container_labels(rendered[overlay]).items()


def container_labels(objects: list[dict]) -> dict[str, str]:
    return one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_routes_the_frontend_serves(rendered, overlay):
    container = server_container(rendered[overlay])
    served = route_paths(health.router)
    found = probes(container)
    assert found["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for kind, probe in found.items():
        assert probe["httpGet"]["path"] in served, f"{overlay} {kind}: {probe['httpGet']['path']} not in {served}"
        assert probe["httpGet"]["port"] == "http"
    # Probes carry no key: the health routes must stay open.
    assert env_of(container).get("OPEN_HEALTH", {}).get("value", "true") == "true"
    assert Settings.open_health


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_scraped_where_they_are_served(rendered, overlay):
    container = server_container(rendered[overlay])
    endpoints = one(rendered[overlay], "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert {e["port"] for e in endpoints} == {"http", "triton-metrics"}
    assert {e["port"] for e in endpoints} <= set(named_ports(container))
    by_port = {e["port"]: e["path"] for e in endpoints}
    assert by_port["http"] in route_paths(metrics.router)
    assert by_port["triton-metrics"] == "/metrics"  # Triton's own metrics endpoint
    assert env_of(container).get("OPEN_METRICS", {}).get("value", "true") == "true"
    pod_labels = container_labels(rendered[overlay])
    assert one(rendered[overlay], "PodMonitor")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaler_follows_the_engine_queue(rendered, overlay):
    hpa = one(rendered[overlay], "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    # prometheus-adapter serves vllm:<name> as vllm_<name>; the model must export the original.
    original = "vllm:" + name.removeprefix("vllm_")
    assert original == "vllm:num_requests_waiting"
    source = (REPO / "model_repository" / "vllm_model" / "1" / "engine_metrics.py").read_text()
    assert f'"{original}"' in source
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(rendered[overlay], "Deployment")["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_drain_fits_the_grace_period(rendered, overlay):
    pod = one(rendered[overlay], "Deployment")["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < pre_stop < grace
    shutdown = {f.name: f.default for f in fields(Settings)}.get("shutdown_timeout")
    if shutdown is not None:  # the frontend's drain on SIGTERM, then tritonserver's own stop
        assert pre_stop + shutdown < grace, f"preStop {pre_stop} s + drain {shutdown} s leave no time in {grace} s"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_shm_secret_and_storage(rendered, overlay):
    objects = rendered[overlay]
    container = server_container(objects)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert env_of(container)["API_KEY"]["valueFrom"]["secretKeyRef"]["key"]
    claim = volumes[mounts["/models"]]["persistentVolumeClaim"]["claimName"]
    assert claim == one(objects, "PersistentVolumeClaim")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 1000
    gpus = {"cpu": 0, "gpu": 1, "gpu-tp2": 2, "inference-pool": 1}[overlay]
    limits = container["resources"]["limits"]
    assert int(limits.get("nvidia.com/gpu", 0)) == gpus
    engine_args = json.loads(env_of(container).get("ENGINE_ARGS", {}).get("value", "{}"))
    assert engine_args.get("tensor_parallel_size", 1) == max(gpus, 1)
    assert (
        one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items()
        <= container_labels(objects).items()
    )


def test_inference_pool_targets_the_serving_port(rendered):
    objects = rendered["inference-pool"]
    pool = one(objects, "InferencePool")
    ports = named_ports(server_container(objects))
    assert [p["number"] for p in pool["spec"]["targetPorts"]] == [ports["http"]]
    assert pool["spec"]["selector"]["matchLabels"].items() <= container_labels(objects).items()


def test_cpu_pods_get_cores_of_their_own(rendered):
    """The CPU overlay is Guaranteed QoS with whole CPUs, so the static CPU manager gives each pod its own cores
    (vLLM's CPU worker then binds inside them instead of on the node's first core, shared with every other pod)."""
    resources = server_container(rendered["cpu"])["resources"]
    assert resources["requests"] == resources["limits"], "requests != limits: the pod is not Guaranteed QoS"
    assert set(resources["limits"]) >= {"cpu", "memory"}
    assert str(resources["limits"]["cpu"]).isdigit(), "the static CPU manager pins only whole CPUs"
