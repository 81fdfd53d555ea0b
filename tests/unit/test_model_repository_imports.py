"""Every Triton model's own imports resolve inside its own directory (the Python backend puts only that directory on
the stub's sys.path): vllm_embedding shares modules with vllm_model through symlinks, and a module one of them gains
must be linked too ("ModuleNotFoundError: No module named 'tracing'" once took the embedding model down)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
MODEL_DIRS = sorted(path.parent for path in REPOSITORY.glob("*/1/model.py"))
OWN_MODULES = {path.stem for model_dir in MODEL_DIRS for path in model_dir.glob("*.py")}


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_both_models_found():
    assert {path.parent.name for path in MODEL_DIRS} >= {"vllm_model", "vllm_embedding"}


@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda path: path.parent.name)
def test_each_models_own_imports_are_in_its_directory(model_dir):
    present = {path.stem for path in model_dir.glob("*.py") if path.exists()}  # a dangling symlink does not count
    missing = {
        f"{path.name} imports {name}"
        for path in model_dir.glob("*.py")
        for name in imported_names(path)
        if name in OWN_MODULES and name not in present
    }
    assert not missing, f"{model_dir}: link these modules in too: {sorted(missing)}"
