"""Build tiny PEFT LoRA adapters for the tiny test model (see ``tools.build_tiny_model``), in seconds.

Usage: ``python -m tools.build_lora_adapters --base .models/tiny --out .models/tiny-lora [--names a b]``

Each adapter (r=8, alpha=16, on q/k/v/o projections) gets its own seed (``--seed`` + its position in
``--names``), and both ``lora_A`` and ``lora_B`` are filled with large random normal values, so greedy output
visibly differs from the base model and between adapters. Writes ``<out>/<name>/adapter_config.json`` and
``adapter_model.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tools.build_tiny_model import umask

DEFAULT_NAMES = ["adapter-a", "adapter-b"]
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
RANK = 8
ALPHA = 16
INIT_STD = 0.5
REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")

_T0 = time.monotonic()


def log(msg: str) -> None:
    """Print a progress line with the time since start."""
    print(f"[build_lora_adapters +{time.monotonic() - _T0:5.1f}s] {msg}", flush=True)


def is_built(path: Path) -> bool:
    """True when ``path`` already holds a saved adapter."""
    return all((path / name).is_file() for name in REQUIRED_FILES)


def build_adapter(base: Path, out: Path, seed: int) -> None:
    """Attach a LoRA to a fresh copy of the base model, randomise it with ``seed`` and save it to ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora_config = LoraConfig(
        r=RANK,
        lora_alpha=ALPHA,
        target_modules=TARGET_MODULES,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora_config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * INIT_STD)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out, safe_serialization=True)
    # PEFT keeps target_modules as a set: sort it so the file does not depend on the hash seed.
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (out / "README.md").unlink(missing_ok=True)  # PEFT's boilerplate model card
    mode = 0o666 & ~umask()
    for fname in REQUIRED_FILES:
        (out / fname).chmod(mode)  # safetensors writes 0600


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, type=Path, help="tiny base model directory")
    parser.add_argument("--out", required=True, type=Path, help="directory to hold one folder per adapter")
    parser.add_argument("--names", nargs="+", default=DEFAULT_NAMES, help="adapter names (folder names)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first adapter; the next get +1, +2…")
    parser.add_argument("--force", action="store_true", help="rebuild adapters that already exist")
    args = parser.parse_args(argv)
    if not (args.base / "config.json").is_file():
        parser.error(f"{args.base} has no config.json; build it with python -m tools.build_tiny_model")
    for i, name in enumerate(args.names):
        dest: Path = args.out / name
        if is_built(dest) and not args.force:
            log(f"{dest} already built (use --force to rebuild)")
            continue
        for fname in REQUIRED_FILES:
            (dest / fname).unlink(missing_ok=True)
        log(f"building {name} (seed {args.seed + i}) from {args.base}")
        build_adapter(args.base, dest, args.seed + i)
        log(f"saved {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
