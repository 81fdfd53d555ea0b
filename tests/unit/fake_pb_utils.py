"""A stand-in for Triton's `triton_python_backend_utils` (which exists only inside the Python backend's stub), so
the model's modules can be imported and driven in unit tests."""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Iterator

import numpy as np

NAME = "triton_python_backend_utils"


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class InferenceResponse:
    def __init__(self, output_tensors=None, error=None) -> None:
        self.tensors = {t.name: t.array for t in output_tensors or []}
        self.error = error


class TritonError:
    INVALID_ARG, NOT_FOUND, UNAVAILABLE, INTERNAL = "INVALID_ARG", "NOT_FOUND", "UNAVAILABLE", "INTERNAL"

    def __init__(self, message: str, code: str | None = None) -> None:
        self.message, self.code = message, code


def _module() -> types.ModuleType:
    fake = types.ModuleType(NAME)
    fake.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
    fake.Tensor = Tensor
    fake.InferenceResponse = InferenceResponse
    fake.TritonError = TritonError
    fake.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    return fake


@contextlib.contextmanager
def model_module(name: str) -> Iterator[types.ModuleType]:
    """The model's module `name` imported afresh against the stand-in (and the modules it pulls in that use
    pb_utils: model, responder); the previous ones are put back afterwards."""
    names = (NAME, "model", "responder", name)
    saved = {n: sys.modules.pop(n, None) for n in names}
    sys.modules[NAME] = _module()
    try:
        yield importlib.import_module(name)
    finally:
        for n, module in saved.items():
            sys.modules.pop(n, None)
            if module is not None:
                sys.modules[n] = module
