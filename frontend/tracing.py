"""Per-token timestamps of the response path, for bench/trace_budget.py; off unless TVO_TRACE=1 at start.

The ring and the switch are the model's (model_repository/vllm_model/1/tracing.py, standard library only, loaded by
path as the frontend loads booleans.py): the frontend keeps a ring of its own, written as
$TVO_TRACE_DIR/frontend-<pid>.jsonl when it exits, in the same format as the stub's.
"""

from __future__ import annotations

import atexit

from launcher.model_code import model_module

_shared = model_module("tracing")
ENABLED: bool = _shared.ENABLED
Ring = _shared.Ring

RING = Ring("frontend")
if ENABLED:
    atexit.register(RING.dump)
