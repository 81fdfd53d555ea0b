"""The Triton model's own modules (model_repository/vllm_model/1/*.py) for code that runs outside Triton.

Inside Triton they import one another by bare name: the Python backend puts the model's directory on the stub's
sys.path. Out here that directory is not put on sys.path (its bare module names would shadow anything of the same
name for the whole process); one file is loaded by its path instead, under a name of its own. Only modules that
need nothing but the standard library can be loaded this way (procs, booleans, tracing).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

MODEL_CODE = Path(__file__).resolve().parent.parent / "model_repository" / "vllm_model" / "1"
PACKAGE = "vllm_model_code"


def model_module(name: str) -> ModuleType:
    """model_repository/vllm_model/1/<name>.py, loaded once, as `vllm_model_code.<name>`."""
    qualified = f"{PACKAGE}.{name}"
    module = sys.modules.get(qualified)
    if module is None:
        spec = importlib.util.spec_from_file_location(qualified, MODEL_CODE / f"{name}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"no model module {name!r} in {MODEL_CODE}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(qualified, None)
            raise
    return module


procs = model_module("procs")
