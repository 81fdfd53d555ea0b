"""Build a tiny, randomly initialised Llama test model with a ChatML tokenizer, offline and in seconds.

Usage: ``python -m tools.build_tiny_model --out .models/tiny [--seed 0] [--force]``

The tokenizer is a byte-level BPE trained with the ``tokenizers`` library on a fixed, sorted slice of the
Python standard library's sources, so no hub access is needed. The same seed (and interpreter) gives
byte-identical ``model.safetensors``. Greedy output is deterministic but meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

VOCAB_SIZE = 4096
MAX_POSITIONS = 2048
INIT_STD = 0.1
CORPUS_BYTES = 3_000_000  # ~3 MB of stdlib sources: enough merges for 4096 tokens, trains in a few seconds
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}

# The standard ChatML template, with add_generation_prompt support.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")

_T0 = time.monotonic()


def log(msg: str) -> None:
    """Print a progress line with the time since start."""
    print(f"[build_tiny_model +{time.monotonic() - _T0:5.1f}s] {msg}", flush=True)


def is_built(out: Path) -> bool:
    """True when ``out`` already holds a built model."""
    return all((out / name).is_file() for name in REQUIRED_FILES)


def stdlib_files(limit_bytes: int = CORPUS_BYTES) -> list[Path]:
    """A fixed, sorted list of standard-library ``.py`` files totalling at most ``limit_bytes``."""
    root = Path(os.path.dirname(os.__file__))
    candidates: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        candidates.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    candidates.sort(key=lambda p: p.relative_to(root).as_posix())
    chosen: list[Path] = []
    total = 0
    for path in candidates:
        size = path.stat().st_size
        if total + size > limit_bytes:
            continue
        chosen.append(path)
        total += size
    return chosen


def iter_texts(files: list[Path]) -> Iterator[str]:
    """Yield each file's text (undecodable bytes replaced)."""
    for path in files:
        yield path.read_text(encoding="utf-8", errors="replace")


def train_tokenizer(files: list[Path]):  # -> tokenizers.Tokenizer
    """Train a byte-level BPE tokenizer with ``VOCAB_SIZE`` entries (specials first: ids 0, 1, 2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(iter_texts(files), trainer=trainer, length=len(files))
    return tok


def build(out: Path, seed: int = 0) -> None:
    """Build tokenizer, config, weights and generation config into ``out``."""
    log("importing torch and transformers")
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    files = stdlib_files()
    log(f"training byte-level BPE (vocab {VOCAB_SIZE}) on {len(files)} stdlib files")
    backend = train_tokenizer(files)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        unk_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        extra_special_tokens=[IM_START, IM_END],
        model_max_length=MAX_POSITIONS,
        chat_template=CHATML_TEMPLATE,
    )
    eot_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
    log(f"tokenizer: {len(tokenizer)} tokens, {ENDOFTEXT}={eot_id}, {IM_END}={im_end_id}")
    if len(tokenizer) > VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, more than the model's {VOCAB_SIZE}")

    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        # Wider than Llama's 0.02: with 0.02 the logits are nearly flat and greedy output repeats one token;
        # 0.1 gives varied, still deterministic text with clear margins between the top logits.
        initializer_range=INIT_STD,
        tie_word_embeddings=False,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
        dtype="float32",
    )
    log(f"initialising LlamaForCausalLM with seed {seed}")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    model.generation_config = GenerationConfig(
        bos_token_id=eot_id, eos_token_id=[eot_id, im_end_id], pad_token_id=eot_id
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        stage = Path(tmp)
        log(f"saving {n_params / 1e6:.2f}M parameters (float32 safetensors) and tokenizer")
        save_float32(model, tokenizer, stage, CHATML_TEMPLATE)
        publish(stage, out, REQUIRED_FILES)


def save_float32(model, tokenizer, stage: Path, chat_template: str | None) -> None:
    """Save weights (float32 safetensors) and a tokenizer that transformers 4.x and 5.x both read."""
    model.save_pretrained(stage, safe_serialization=True)
    tokenizer.save_pretrained(stage)
    # transformers 5 writes "dtype"; older readers (and people) look for "torch_dtype" too.
    cfg_path = stage / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["torch_dtype"] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    portable_tokenizer_config(stage / "tokenizer_config.json", chat_template)


def publish(stage: Path, out: Path, required: tuple[str, ...]) -> None:
    """Move a staged model's files (and sub-directories) into ``out``, the ``required`` ones last, so a
    half-copied directory never looks built."""
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in stage.iterdir())
    names.sort(key=lambda n: n in required)
    mode = 0o666 & ~umask()
    for name in names:
        path = stage / name
        if path.is_dir():
            path.chmod(0o777 & ~umask())
            for child in path.iterdir():
                child.chmod(mode)
            if (out / name).is_dir():
                for child in path.iterdir():
                    os.replace(child, out / name / child.name)
                continue
        else:
            path.chmod(mode)
        os.replace(path, out / name)


def umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def portable_tokenizer_config(path: Path, chat_template: str | None) -> None:
    """Make tokenizer_config.json readable by transformers 4.x as well as 5.x.

    transformers 5 writes ``tokenizer_class: TokenizersBackend`` and a list-valued ``extra_special_tokens``,
    which 4.x does not understand; both versions accept the older spellings below. The chat template is
    also copied inline (4.x before chat_template.jinja support reads it from here).
    """
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = cfg.pop("extra_special_tokens", None)
    if extra:
        cfg["additional_special_tokens"] = extra
    if chat_template:
        cfg["chat_template"] = chat_template
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def builder_main(argv, doc: str, build_fn, is_built_fn, stale: tuple[str, ...], log_fn) -> int:
    """The command line every model builder here shares: --out, --seed, --force (``stale`` files removed first)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for the random weights")
    parser.add_argument("--force", action="store_true", help="rebuild even if the directory is complete")
    args = parser.parse_args(argv)
    out: Path = args.out
    if is_built_fn(out) and not args.force:
        log_fn(f"{out} already built (use --force to rebuild)")
        return 0
    if args.force and out.is_dir():
        for name in stale:
            (out / name).unlink(missing_ok=True)
    build_fn(out, seed=args.seed)
    log_fn(f"done: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    stale = (*REQUIRED_FILES, "generation_config.json", "tokenizer_config.json")
    return builder_main(argv, __doc__, build, is_built, stale, log)


if __name__ == "__main__":
    sys.exit(main())
