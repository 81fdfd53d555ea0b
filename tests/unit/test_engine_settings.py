"""load_engine_settings: model.json + multi_lora.json + environment overrides, merged once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from engine_settings import SettingsError, cpu_lora_slot, default_served_name, load_engine_settings


def write_model_dir(path: Path, engine_args: dict | None = None, loras: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if engine_args is not None:
        (path / "model.json").write_text(json.dumps(engine_args), encoding="utf-8")
    if loras is not None:
        (path / "multi_lora.json").write_text(json.dumps(loras), encoding="utf-8")
    return path


def load(model_dir: Path, environ: dict | None = None, model_config: dict | None = None):
    return load_engine_settings(str(model_dir), environ or {}, model_config or {})


def metrics_config(value: str) -> dict:
    """A model_config shaped like Triton's parsed config.pbtxt."""
    return {"name": "vllm_model", "parameters": {"REPORT_CUSTOM_METRICS": {"string_value": value}}}


# ---- model.json ----


def test_model_json_read(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/some-model", "max_model_len": 2048, "dtype": "auto"})
    settings = load(model_dir)
    assert settings.engine_args["model"] == "org/some-model"
    assert settings.engine_args["max_model_len"] == 2048
    assert settings.engine_args["dtype"] == "auto"
    assert settings.loras == {}
    assert "enable_lora" not in settings.engine_args
    assert "max_loras" not in settings.engine_args
    assert settings.report_metrics is True
    assert isinstance(settings.created, int) and settings.created > 0


def test_missing_model_json_is_an_error(tmp_path):
    model_dir = write_model_dir(tmp_path / "1")
    with pytest.raises(SettingsError, match="model.json"):
        load(model_dir)


def test_invalid_model_json_is_an_error(tmp_path):
    model_dir = write_model_dir(tmp_path / "1")
    (model_dir / "model.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SettingsError, match="not valid JSON"):
        load(model_dir)


def test_model_json_must_be_object(tmp_path):
    model_dir = write_model_dir(tmp_path / "1")
    (model_dir / "model.json").write_text('["model"]', encoding="utf-8")
    with pytest.raises(SettingsError, match="JSON object"):
        load(model_dir)


@pytest.mark.parametrize("engine_args", [{}, {"model": ""}, {"model": None}])
def test_no_model_is_an_error(tmp_path, engine_args):
    model_dir = write_model_dir(tmp_path / "1", engine_args)
    with pytest.raises(SettingsError, match="TRITON_VLLM_MODEL"):
        load(model_dir)


# ---- environment overrides ----


def test_env_model_overrides_model_json(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    settings = load(model_dir, {"TRITON_VLLM_MODEL": "org/b"})
    assert settings.engine_args["model"] == "org/b"
    assert settings.served_model_name == "org/b"


def test_env_model_supplies_missing_model(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": None})
    assert load(model_dir, {"TRITON_VLLM_MODEL": "org/b"}).engine_args["model"] == "org/b"


def test_env_engine_args_merge_over_model_json(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a", "max_model_len": 2048, "dtype": "auto"})
    settings = load(model_dir, {"TRITON_VLLM_ENGINE_ARGS": json.dumps({"max_model_len": 512, "enforce_eager": True})})
    assert settings.engine_args["max_model_len"] == 512
    assert settings.engine_args["enforce_eager"] is True
    assert settings.engine_args["dtype"] == "auto"


def test_env_model_beats_model_in_env_engine_args(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    environ = {"TRITON_VLLM_ENGINE_ARGS": json.dumps({"model": "org/b"}), "TRITON_VLLM_MODEL": "org/c"}
    assert load(model_dir, environ).engine_args["model"] == "org/c"


@pytest.mark.parametrize("value", ["{bad", "[1]"])
def test_bad_env_engine_args_named(tmp_path, value):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    with pytest.raises(SettingsError, match="TRITON_VLLM_ENGINE_ARGS"):
        load(model_dir, {"TRITON_VLLM_ENGINE_ARGS": value})


def test_empty_env_values_ignored(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    environ = {
        "TRITON_VLLM_MODEL": "",
        "TRITON_VLLM_ENGINE_ARGS": "",
        "TRITON_VLLM_SERVED_MODEL_NAME": "",
        "TRITON_VLLM_LORAS": "",
    }
    settings = load(model_dir, environ)
    assert settings.engine_args["model"] == "org/a"
    assert settings.served_model_name == "org/a"
    assert settings.loras == {}


def test_os_environ_not_consulted(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_VLLM_MODEL", "org/from-os-environ")
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    assert load(model_dir, {}).engine_args["model"] == "org/a"


# ---- served model name ----


def test_served_name_default_is_hub_id_as_given(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "HuggingFaceTB/SmolLM2-135M-Instruct"})
    settings = load(model_dir)
    assert settings.served_model_name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert settings.engine_args["served_model_name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_served_name_default_is_local_dir_basename(tmp_path):
    weights = tmp_path / "weights" / "tiny-llama"
    weights.mkdir(parents=True)
    model_dir = write_model_dir(tmp_path / "1", {"model": str(weights) + os.sep})
    settings = load(model_dir)
    assert settings.served_model_name == "tiny-llama"
    assert settings.engine_args["served_model_name"] == "tiny-llama"


def test_served_name_from_model_json(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a", "served_model_name": "friendly"})
    assert load(model_dir).served_model_name == "friendly"


def test_served_name_list_takes_first(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a", "served_model_name": ["first", "second"]})
    settings = load(model_dir)
    assert settings.served_model_name == "first"
    assert settings.engine_args["served_model_name"] == "first"


def test_served_name_empty_list_falls_back_to_model(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a", "served_model_name": []})
    assert load(model_dir).served_model_name == "org/a"


def test_served_name_env_override(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a", "served_model_name": "friendly"})
    settings = load(model_dir, {"TRITON_VLLM_SERVED_MODEL_NAME": "from-env"})
    assert settings.served_model_name == "from-env"
    assert settings.engine_args["served_model_name"] == "from-env"


def test_default_served_name_directly(tmp_path):
    local = tmp_path / "my-model"
    local.mkdir()
    assert default_served_name(str(local)) == "my-model"
    assert default_served_name(str(local) + "/") == "my-model"
    assert default_served_name("org/not-a-local-dir") == "org/not-a-local-dir"


# ---- paths ----


def test_relative_dot_path_resolved_against_model_dir(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "./weights"})
    (model_dir / "weights").mkdir()
    settings = load(model_dir)
    assert settings.engine_args["model"] == str(model_dir / "weights")
    assert settings.served_model_name == "weights"


def test_parent_relative_path_resolved_against_model_dir(tmp_path):
    model_dir = write_model_dir(tmp_path / "repo" / "1", {"model": "../../shared/weights"})
    assert load(model_dir).engine_args["model"] == str(tmp_path / "shared" / "weights")


def test_absolute_path_kept(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "/opt/models/abc"})
    assert load(model_dir).engine_args["model"] == "/opt/models/abc"


def test_env_model_relative_path_resolved_too(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    assert load(model_dir, {"TRITON_VLLM_MODEL": "./local"}).engine_args["model"] == str(model_dir / "local")


# ---- LoRA ----


def test_multi_lora_json_read_and_enables_lora(tmp_path):
    model_dir = write_model_dir(
        tmp_path / "1", {"model": "org/a"}, loras={"adapter-a": "/loras/a", "adapter-b": "/loras/b"}
    )
    settings = load(model_dir)
    assert settings.loras == {"adapter-a": "/loras/a", "adapter-b": "/loras/b"}
    assert settings.engine_args["enable_lora"] is True
    # 2 declared + room for 2 loaded at run time = capacity 4 (the CPU platform's spare slot: cpu_lora_slot).
    assert settings.lora_capacity == 4
    assert settings.engine_args["max_loras"] == 4


def test_lora_paths_resolved_against_model_dir(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"}, loras={"a": "./loras/a", "hub": "org/lora"})
    settings = load(model_dir)
    assert settings.loras == {"a": str(model_dir / "loras" / "a"), "hub": "org/lora"}


def test_env_loras_merge_over_multi_lora_json(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"}, loras={"a": "/loras/a", "b": "/loras/b"})
    settings = load(model_dir, {"TRITON_VLLM_LORAS": json.dumps({"b": "/env/b", "c": "/env/c"})})
    assert settings.loras == {"a": "/loras/a", "b": "/env/b", "c": "/env/c"}
    assert settings.engine_args["max_loras"] == 5


def test_env_loras_alone_enable_lora(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    settings = load(model_dir, {"TRITON_VLLM_LORAS": json.dumps({"only": "/l/only"})})
    assert settings.loras == {"only": "/l/only"}
    assert settings.engine_args["enable_lora"] is True
    assert settings.engine_args["max_loras"] == 3


@pytest.mark.parametrize(("max_loras", "adapters", "expected"), [(4, 2, 4), (1, 3, 3), (2, 2, 2)])
def test_max_loras_is_max_of_setting_and_adapters(tmp_path, max_loras, adapters, expected):
    loras = {f"lora-{i}": f"/l/{i}" for i in range(adapters)}
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a", "max_loras": max_loras}, loras=loras)
    settings = load(model_dir)
    assert settings.engine_args["max_loras"] == expected
    assert settings.lora_capacity == expected


def test_enable_lora_without_adapters_has_room_for_runtime_adapters(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a", "enable_lora": True})
    settings = load(model_dir)
    assert settings.engine_args["enable_lora"] is True
    assert settings.lora_capacity == 2
    assert settings.engine_args["max_loras"] == 2


def test_the_spare_lora_slot_only_on_the_cpu_platform(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"}, loras={"a": "/l/a"})
    settings = load(model_dir)  # capacity 1 + 2 at run time
    on_cpu, note = cpu_lora_slot(settings.engine_args, on_cpu=True)
    assert on_cpu["max_loras"] == 4 and "3 -> 4 on the CPU platform" in note
    on_gpu, note = cpu_lora_slot(settings.engine_args, on_cpu=False)
    assert on_gpu["max_loras"] == 3 and "no spare LoRA slot" in note
    assert settings.engine_args["max_loras"] == 3  # not changed in place
    without_lora = load(write_model_dir(tmp_path / "2", {"model": "org/a"})).engine_args
    assert cpu_lora_slot(without_lora, on_cpu=True) == (without_lora, None)


def test_lora_named_like_base_model_is_an_error(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a", "served_model_name": "base"}, loras={"base": "/l"})
    with pytest.raises(SettingsError, match="'base'.*base model"):
        load(model_dir)


def test_lora_named_like_default_served_name_is_an_error(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    with pytest.raises(SettingsError, match="base model"):
        load(model_dir, {"TRITON_VLLM_LORAS": json.dumps({"org/a": "/l/x"})})


@pytest.mark.parametrize("path", ["", None, 3, ["/l"]])
def test_lora_needs_a_path(tmp_path, path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"}, loras={"bad": path})
    with pytest.raises(SettingsError, match="'bad'"):
        load(model_dir)


def test_bad_env_loras_named(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    with pytest.raises(SettingsError, match="TRITON_VLLM_LORAS"):
        load(model_dir, {"TRITON_VLLM_LORAS": "not json"})


def test_bad_multi_lora_json_named(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    (model_dir / "multi_lora.json").write_text("[]", encoding="utf-8")
    with pytest.raises(SettingsError, match="multi_lora.json"):
        load(model_dir)


# ---- REPORT_CUSTOM_METRICS ----


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("false", False),
        ("False", False),
        (" no ", False),
        ("0", False),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("1", True),
        ("", True),
    ],
)
def test_report_custom_metrics_parameter(tmp_path, value, expected):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    assert load(model_dir, model_config=metrics_config(value)).report_metrics is expected


def test_report_custom_metrics_default_true_without_parameter(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    assert load(model_dir, model_config={"parameters": {}}).report_metrics is True
    assert load(model_dir, model_config={}).report_metrics is True


def test_report_custom_metrics_bad_value_is_an_error(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    with pytest.raises(SettingsError, match="REPORT_CUSTOM_METRICS.*'maybe'"):
        load(model_dir, model_config=metrics_config("maybe"))


def test_inter_token_latency_histogram_is_opt_in(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    assert load(model_dir, model_config={}).report_inter_token_latency is False
    config = {"parameters": {"REPORT_INTER_TOKEN_LATENCY": {"string_value": "true"}}}
    assert load(model_dir, model_config=config).report_inter_token_latency is True
    config = {"parameters": {"REPORT_INTER_TOKEN_LATENCY": {"string_value": "often"}}}
    with pytest.raises(SettingsError, match="REPORT_INTER_TOKEN_LATENCY.*'often'"):
        load(model_dir, model_config=config)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "auto"),
        ("", "auto"),
        ("auto", "auto"),
        (" Always ", "always"),
        ("true", "always"),
        ("never", "never"),
        ("false", "never"),
    ],
)
def test_engine_core_placement_mode(tmp_path, value, expected):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    config = {} if value is None else {"parameters": {"COLOCATE_ENGINE_CORE": {"string_value": value}}}
    assert load(model_dir, model_config=config).colocate_engine_core == expected


def test_engine_core_placement_bad_value_is_an_error(tmp_path):
    model_dir = write_model_dir(tmp_path / "1", {"model": "org/a"})
    config = {"parameters": {"COLOCATE_ENGINE_CORE": {"string_value": "sometimes"}}}
    with pytest.raises(SettingsError, match="COLOCATE_ENGINE_CORE.*'sometimes'"):
        load(model_dir, model_config=config)


def test_settings_error_is_value_error():
    assert issubclass(SettingsError, ValueError)
