"""booleans.parse_bool: the one set of boolean spellings, for config.pbtxt, sampling_parameters and the frontend."""

from __future__ import annotations

import booleans
import engine_settings
import pytest
import sampling_parameters

from frontend import settings
from launcher.model_code import model_module

SPELLED_TRUE = ["true", "TRUE", " True ", "1", "yes", "on", "On", True, 1]
SPELLED_FALSE = ["false", "False", "0", "no", "off", " OFF", False, 0]
REFUSED = ["", "t", "f", "y", "n", "enabled", "2", "-1", "none", 2, -1, 0.5, 1.0, None, [], {}]


@pytest.mark.parametrize("value", SPELLED_TRUE)
def test_true(value):
    assert booleans.parse_bool(value) is True


@pytest.mark.parametrize("value", SPELLED_FALSE)
def test_false(value):
    assert booleans.parse_bool(value) is False


@pytest.mark.parametrize("value", REFUSED)
def test_anything_else_is_refused(value):
    assert booleans.parse_bool(value) is None


def test_the_frontend_and_the_model_share_the_module():
    assert settings.booleans.parse_bool is model_module("booleans").parse_bool
    assert settings.booleans.TRUE == booleans.TRUE and settings.booleans.FALSE == booleans.FALSE
    assert sampling_parameters.parse_bool.__code__ is booleans.parse_bool.__code__
    assert engine_settings.parse_bool.__code__ is booleans.parse_bool.__code__


@pytest.mark.parametrize("raw", ["no", "off", "0", "false"])
def test_every_reader_reads_false_the_same(raw):
    assert settings.parse_settings([], {"OPEN_HEALTH": raw}).open_health is False
    config = {"parameters": {"REPORT_CUSTOM_METRICS": {"string_value": raw}}}
    assert engine_settings._config_bool(config, "REPORT_CUSTOM_METRICS", True) is False
    assert sampling_parameters._bool("ignore_eos", raw) is False


@pytest.mark.parametrize("raw", ["maybe", "t"])
def test_every_reader_refuses_the_same(raw):
    with pytest.raises(ValueError, match="OPEN_HEALTH"):
        settings.parse_settings([], {"OPEN_HEALTH": raw})
    with pytest.raises(engine_settings.SettingsError, match="REPORT_CUSTOM_METRICS"):
        engine_settings._config_bool(
            {"parameters": {"REPORT_CUSTOM_METRICS": {"string_value": raw}}}, "REPORT_CUSTOM_METRICS", True
        )
    with pytest.raises(sampling_parameters.ParameterError, match="'ignore_eos'"):
        sampling_parameters._bool("ignore_eos", raw)
