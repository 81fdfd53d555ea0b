"""Parse the `sampling_parameters` JSON of a request into keyword arguments for vLLM's SamplingParams.

Strict on purpose: every key must be known, every value must have (or cleanly coerce to) its real type.
vllm_backend clients often send numbers and booleans as strings ("0.8", "false"); those are coerced by
value, so "false" is False (vllm_backend's bool("false") == True bug is not repeated here).

This module has no vLLM or Triton imports so it can be unit-tested on its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from booleans import SPELLINGS, parse_bool


class ParameterError(ValueError):
    """A sampling parameter is unknown or has a bad value; the message names it."""


# Unknown keys are refused, and logged once per name (as vLLM's server logs the request fields it does not know),
# for the first MAX_LOGGED_UNKNOWN names: what clients send that this model does not take.
MAX_LOGGED_UNKNOWN = 256
_logged_unknown: set[str] = set()


def _log_unknown_once(key: str, log: Callable[[str], None] | None) -> None:
    if log is None or key in _logged_unknown or len(_logged_unknown) >= MAX_LOGGED_UNKNOWN:
        return
    _logged_unknown.add(key)
    log(f"[vllm_model] refused unknown sampling parameter '{key}' (logged once per name)")


def _bool(name: str, value: Any) -> bool:
    parsed = parse_bool(value)
    if parsed is None:
        raise ParameterError(f"sampling parameter '{name}' must be a boolean ({SPELLINGS}), got {value!r}")
    return parsed


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ParameterError(f"sampling parameter '{name}' must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ParameterError(f"sampling parameter '{name}' must be an integer, got {value!r}")


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ParameterError(f"sampling parameter '{name}' must be a number, got {value!r}")
    result: float | None = None
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            result = None
    if result is None or not math.isfinite(result):
        raise ParameterError(f"sampling parameter '{name}' must be a finite number, got {value!r}")
    return result


def _str_list(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ParameterError(f"sampling parameter '{name}' must be a string or a list of strings, got {value!r}")


def _int_list(name: str, value: Any) -> list[int]:
    if isinstance(value, list):
        return [_int(name, v) for v in value]
    raise ParameterError(f"sampling parameter '{name}' must be a list of integers, got {value!r}")


def _logit_bias(name: str, value: Any) -> dict[int, float]:
    if not isinstance(value, dict):
        raise ParameterError(f"sampling parameter '{name}' must be an object of token id -> bias, got {value!r}")
    return {_int(name, k): _float(name, v) for k, v in value.items()}


_STRUCTURED_KEYS = {
    "json",
    "regex",
    "choice",
    "grammar",
    "json_object",
    "structural_tag",
    "disable_any_whitespace",
    "disable_additional_properties",
    "whitespace_pattern",
}


def _structured(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # vllm_backend clients send it JSON-encoded: json.dumps({"choice": [...]})
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ParameterError(f"sampling parameter '{name}' is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not value:
        raise ParameterError(f"sampling parameter '{name}' must be a non-empty object, got {value!r}")
    unknown = sorted(set(value) - _STRUCTURED_KEYS)
    if unknown:
        raise ParameterError(
            f"sampling parameter '{name}' has unknown key '{unknown[0]}' (allowed: {sorted(_STRUCTURED_KEYS)})"
        )
    if isinstance(value.get("json"), str):
        try:
            value = {**value, "json": json.loads(value["json"])}
        except json.JSONDecodeError as exc:
            raise ParameterError(f"sampling parameter '{name}.json' is not valid JSON: {exc}") from None
    return dict(value)


def _optional(convert):
    def parse(name: str, value: Any):
        return None if value is None else convert(name, value)

    return parse


# Sampling parameter name -> converter. Names follow vLLM's SamplingParams.
_CONVERTERS = {
    "n": _int,
    "max_tokens": _optional(_int),
    "min_tokens": _int,
    "seed": _optional(_int),
    "top_k": _int,
    "logprobs": _optional(_int),
    "prompt_logprobs": _optional(_int),
    "temperature": _float,
    "top_p": _float,
    "min_p": _float,
    "presence_penalty": _float,
    "frequency_penalty": _float,
    "repetition_penalty": _float,
    "ignore_eos": _bool,
    "skip_special_tokens": _bool,
    "spaces_between_special_tokens": _bool,
    "include_stop_str_in_output": _bool,
    "stop": _str_list,
    "bad_words": _str_list,
    "stop_token_ids": _int_list,
    "allowed_token_ids": _int_list,
    "logit_bias": _logit_bias,
    "structured_outputs": _structured,
}

# Older vllm_backend spelling, accepted as an alias.
_ALIASES = {"guided_decoding": "structured_outputs"}

# Keys that select what runs, not how tokens are sampled: the adapter, and whether tokenizing a text prompt adds
# the tokenizer's special tokens (chat prompts rendered from a template already hold them).
REQUEST_KEYS = {"lora_name": str, "add_special_tokens": bool}

KNOWN_KEYS = frozenset(_CONVERTERS) | frozenset(_ALIASES) | frozenset(REQUEST_KEYS)


def request_parameters_json(raw: str | None) -> str | None:
    """The sampling parameters a client sent as Triton request parameters (JSON), for a request without the
    `sampling_parameters` tensor: vllm_backend reads them there too. Triton's own `triton_*` keys are dropped."""
    if not raw:
        return None
    data = json.loads(raw)
    if not isinstance(data, dict):
        return None
    data = {key: value for key, value in data.items() if not key.startswith("triton_")}
    return json.dumps(data) if data else None


def parse_sampling_parameters(
    raw: str | bytes | None, log: Callable[[str], None] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (sampling kwargs, request options) from the JSON text of `sampling_parameters`.

    Request options hold the non-sampling keys (`lora_name`, `add_special_tokens`).
    Raises ParameterError naming the bad key; an unknown key is also logged with `log`, once per name.
    """
    if raw is None:
        return {}, {}
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if not raw.strip():
        return {}, {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ParameterError(f"sampling_parameters is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ParameterError("sampling_parameters must be a JSON object")
    sampling: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in data.items():
        name = _ALIASES.get(key, key)
        if name in REQUEST_KEYS:
            if REQUEST_KEYS[name] is bool:
                options[name] = _bool(key, value)
            elif value is not None and not isinstance(value, str):
                raise ParameterError(f"sampling parameter '{key}' must be a string, got {value!r}")
            else:
                options[name] = value
            continue
        converter = _CONVERTERS.get(name)
        if converter is None:
            _log_unknown_once(key, log)
            raise ParameterError(f"unknown sampling parameter '{key}'")
        sampling[name] = converter(key, value)
    return sampling, options


# ---- rules that need the engine's facts (context length, the model's generation config) ----

# Fields a model's generation_config.json may default, as vLLM's server applies them (`--generation-config auto`);
# vLLM's ModelConfig.get_diff_sampling_param() names max_new_tokens max_tokens.
GENERATION_DEFAULT_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "max_tokens",
)
# vLLM's SamplingParams treats a temperature below this as greedy.
GREEDY_EPSILON = 1e-5
# Special tokens a tokenizer may add around a text prompt (bos, eos, ...); generous.
SPECIAL_TOKEN_ROOM = 16


def apply_generation_defaults(sampling: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The request's sampling kwargs with the model's defaults for the fields it left out (or set to null).

    A request that gives a field keeps its value: user -> model's generation config -> vLLM's default.
    """
    merged = dict(sampling)
    for key in GENERATION_DEFAULT_KEYS:
        if merged.get(key) is None and defaults.get(key) is not None:
            merged[key] = defaults[key]
    return merged


def greedy_copies(sampling: dict[str, Any]) -> int:
    """How many identical greedy sequences to hand out: n when n > 1 at temperature 0, else 1.

    vLLM refuses n > 1 with greedy sampling; OpenAI returns n choices (all the same text). One engine sequence
    serves them all.
    """
    n = int(sampling.get("n") or 1)
    temperature = sampling.get("temperature", 1.0)
    if n > 1 and temperature is not None and temperature < GREEDY_EPSILON:
        return n
    return 1


def prompt_tokens_at_most(prompt: str | dict[str, Any]) -> int:
    """An upper bound of the prompt's token count without tokenizing: token ids as given, or a text's UTF-8 bytes
    plus room for special tokens (a byte-level tokenizer never makes more tokens than bytes)."""
    if isinstance(prompt, dict):
        return len(prompt.get("prompt_token_ids") or ())
    return len(prompt.encode("utf-8")) + SPECIAL_TOKEN_ROOM


def check_max_tokens(max_tokens: int | None, prompt_tokens: int, max_model_len: int) -> None:
    """Refuse a completion length that cannot fit after the prompt (OpenAI and vLLM's server answer 400)."""
    if max_tokens is None or prompt_tokens >= max_model_len:
        return  # null = the rest of the context; a prompt that fills the context is the engine's own error
    room = max_model_len - prompt_tokens
    if max_tokens > room:
        raise ParameterError(
            f"sampling parameter 'max_tokens' is too large: this model's maximum context length is {max_model_len} "
            f"tokens and the prompt has {prompt_tokens}, so at most {room} can be generated; {max_tokens} were "
            f"requested ({prompt_tokens + max_tokens} tokens in all)"
        )
