"""The one boolean parser: config.pbtxt parameters, sampling_parameters values and the frontend's environment.

Accepted (any case, surrounding spaces ignored): true/false, 1/0, yes/no, on/off; also JSON's true/false and the
integers 1/0. Anything else is refused, never guessed: vllm_backend's bool("false") == True is the warning.
Standard library only: the frontend loads it outside Triton through launcher.model_code.
"""

from __future__ import annotations

from typing import Any

TRUE = frozenset({"true", "1", "yes", "on"})
FALSE = frozenset({"false", "0", "no", "off"})
SPELLINGS = "true/false, 1/0, yes/no or on/off"


def parse_bool(value: Any) -> bool | None:
    """The boolean `value` spells, or None when it is none of the accepted spellings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in TRUE:
            return True
        if lowered in FALSE:
            return False
    return None
