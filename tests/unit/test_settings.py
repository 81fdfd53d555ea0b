"""frontend.settings.parse_settings: flags, with environment variables as defaults."""

from __future__ import annotations

import pytest

from frontend.settings import Settings, parse_settings


def test_defaults():
    settings = parse_settings([], {})
    assert settings == Settings()
    assert settings.host == "0.0.0.0"
    assert settings.port == 9000
    assert settings.triton_url == "localhost:8001"
    assert settings.triton_model == "vllm_model"
    assert settings.served_model_name is None
    assert settings.api_key is None
    assert settings.open_health is True
    assert settings.open_metrics is True
    assert settings.max_inflight == 0
    assert settings.cors_origins == ()
    assert settings.log_text is False
    assert settings.chat_template is None


def test_os_environ_not_used_when_env_given(monkeypatch):
    monkeypatch.setenv("PORT", "1234")
    monkeypatch.setenv("API_KEY", "from-os")
    settings = parse_settings([], {})
    assert settings.port == 9000
    assert settings.api_key is None


def test_env_values():
    settings = parse_settings(
        [],
        {
            "HOST": "127.0.0.1",
            "PORT": "8080",
            "TRITON_MODEL": "other",
            "SERVED_MODEL_NAME": "friendly",
            "API_KEY": "sk-env",
            "MAX_BODY_BYTES": "1024",
            "MAX_INFLIGHT": "7",
            "LOG_LEVEL": "debug",
            "LOG_TEXT": "yes",
            "CHAT_TEMPLATE": "/t.jinja",
        },
    )
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.triton_model == "other"
    assert settings.served_model_name == "friendly"
    assert settings.api_key == "sk-env"
    assert settings.max_body_bytes == 1024
    assert settings.max_inflight == 7
    assert settings.log_level == "debug"
    assert settings.log_text is True
    assert settings.chat_template == "/t.jinja"


def test_flags_beat_env():
    settings = parse_settings(["--port", "7000", "--api-key", "sk-flag"], {"PORT": "8080", "API_KEY": "sk-env"})
    assert settings.port == 7000
    assert settings.api_key == "sk-flag"


def test_empty_strings_mean_unset():
    settings = parse_settings([], {"API_KEY": "", "SERVED_MODEL_NAME": "", "API_KEY_FILE": "", "CHAT_TEMPLATE": ""})
    assert settings.api_key is None
    assert settings.served_model_name is None
    assert settings.chat_template is None


def test_api_key_file_read_and_stripped(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("  sk-from-file \n\n", encoding="utf-8")
    assert parse_settings([], {"API_KEY_FILE": str(key_file)}).api_key == "sk-from-file"
    assert parse_settings(["--api-key-file", str(key_file)], {}).api_key == "sk-from-file"


def test_api_key_file_beats_api_key_env(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("sk-file", encoding="utf-8")
    assert parse_settings([], {"API_KEY_FILE": str(key_file), "API_KEY": "sk-env"}).api_key == "sk-file"


def test_api_key_flag_beats_api_key_file_env(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("sk-file", encoding="utf-8")
    assert parse_settings(["--api-key", "sk-flag"], {"API_KEY_FILE": str(key_file)}).api_key == "sk-flag"


@pytest.mark.parametrize("content", ["", "   \n\t\n"])
def test_empty_api_key_file_is_an_error(tmp_path, content):
    key_file = tmp_path / "key"
    key_file.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        parse_settings([], {"API_KEY_FILE": str(key_file)})


def test_missing_api_key_file_is_an_error(tmp_path):
    with pytest.raises(OSError):
        parse_settings([], {"API_KEY_FILE": str(tmp_path / "absent")})


def test_triton_url_env():
    assert parse_settings([], {"TRITON_URL": "triton:9001"}).triton_url == "triton:9001"


def test_triton_grpc_port_fallback():
    assert parse_settings([], {"TRITON_GRPC_PORT": "18001"}).triton_url == "localhost:18001"


def test_triton_url_beats_grpc_port():
    env = {"TRITON_URL": "host:1", "TRITON_GRPC_PORT": "2"}
    assert parse_settings([], env).triton_url == "host:1"


def test_empty_triton_url_falls_back_to_grpc_port():
    assert parse_settings([], {"TRITON_URL": "", "TRITON_GRPC_PORT": "5"}).triton_url == "localhost:5"


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("off", False), ("No", False)])
def test_open_health_false(raw, expected):
    assert parse_settings([], {"OPEN_HEALTH": raw}).open_health is expected


@pytest.mark.parametrize("raw", ["true", "1", "on", "YES", ""])
def test_open_health_true(raw):
    assert parse_settings([], {"OPEN_HEALTH": raw}).open_health is True


def test_open_metrics_false():
    settings = parse_settings([], {"OPEN_METRICS": "false"})
    assert settings.open_metrics is False
    assert settings.open_health is True


def test_closed_flags():
    settings = parse_settings(["--closed-health", "--closed-metrics"], {})
    assert settings.open_health is False
    assert settings.open_metrics is False


@pytest.mark.parametrize("name", ["OPEN_HEALTH", "OPEN_METRICS", "LOG_TEXT"])
def test_bad_boolean_env_is_value_error(name):
    with pytest.raises(ValueError, match=name):
        parse_settings([], {name: "maybe"})


def test_bad_port_env_is_value_error():
    with pytest.raises(ValueError):
        parse_settings([], {"PORT": "eighty"})


def test_cors_origins_split_and_trimmed():
    settings = parse_settings([], {"CORS_ORIGINS": " https://a.example , https://b.example,, "})
    assert settings.cors_origins == ("https://a.example", "https://b.example")


def test_cors_origins_flag():
    assert parse_settings(["--cors-origins", "*"], {}).cors_origins == ("*",)


def test_repr_never_contains_api_key(tmp_path):
    secret = "sk-very-secret-value-123"
    for settings in (
        parse_settings([], {"API_KEY": secret}),
        parse_settings(["--api-key", secret], {}),
    ):
        assert settings.api_key == secret
        assert secret not in repr(settings)
        assert secret not in str(settings)
    key_file = tmp_path / "key"
    key_file.write_text(secret, encoding="utf-8")
    settings = parse_settings([], {"API_KEY_FILE": str(key_file)})
    assert settings.api_key == secret
    assert secret not in repr(settings)


def test_settings_are_frozen():
    settings = parse_settings([], {})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_triton_metrics_url_and_shutdown_timeout():
    assert Settings().triton_metrics_url == "http://localhost:8002/metrics"
    assert parse_settings([], {"TRITON_METRICS_PORT": "18002"}).triton_metrics_url == "http://localhost:18002/metrics"
    env = {"TRITON_METRICS_URL": "http://triton:1/metrics", "TRITON_METRICS_PORT": "2", "SHUTDOWN_TIMEOUT": "12.5"}
    settings = parse_settings([], env)
    assert settings.triton_metrics_url == "http://triton:1/metrics"
    assert settings.shutdown_timeout == 12.5
    assert parse_settings(["--shutdown-timeout", "3"], env).shutdown_timeout == 3
