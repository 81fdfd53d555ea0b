"""Build a tiny, randomly initialised BERT embedding model (sentence-transformers layout), offline and in seconds.

Usage: ``python -m tools.build_tiny_embedding_model --out .models/tiny-embed [--seed 0] [--force]``

What vLLM's pooling runner reads from a sentence-transformers checkpoint is all here: ``modules.json`` with a
mean ``Pooling`` module (``1_Pooling/config.json``) and a ``Normalize`` module, ``sentence_bert_config.json``
(max_seq_length), and ``matryoshka_dimensions`` in ``config.json`` so requests may ask for shorter vectors. The
tokenizer is a lower-casing WordPiece (BERT's ``[CLS] ... [SEP]`` template) trained with the ``tokenizers``
library on the same slice of the standard library's sources as ``tools.build_tiny_model``. The vectors mean
nothing. The weights are byte-identical for a seed; the WordPiece trainer orders equally frequent tokens in no
fixed way, so token ids can differ between two builds (tests compare against the tokenizer of the same build).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from tools.build_tiny_model import builder_main, publish, save_float32, stdlib_files

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB_SIZE = 4096
HIDDEN = 128
MAX_POSITIONS = 512
MATRYOSHKA_DIMENSIONS = [32, 64, 128]
# Wider than BERT's 0.02, so that mean-pooled vectors of different texts differ clearly (cosine well below 1).
INIT_STD = 0.2
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "modules.json")

_T0 = time.monotonic()


def log(msg: str) -> None:
    """Print a progress line with the time since start."""
    print(f"[build_tiny_embedding_model +{time.monotonic() - _T0:5.1f}s] {msg}", flush=True)


def is_built(out: Path) -> bool:
    """True when ``out`` already holds a built model."""
    return all((out / name).is_file() for name in REQUIRED_FILES)


def train_tokenizer(files: list[Path]):  # -> tokenizers.Tokenizer
    """A lower-casing WordPiece with ``VOCAB_SIZE`` entries; specials first ([PAD]=0 ... [MASK]=4)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False)
    texts = (path.read_text(encoding="utf-8", errors="replace") for path in files)
    tok.train_from_iterator(texts, trainer=trainer, length=len(files))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def sentence_transformers_files(stage: Path) -> None:
    """modules.json, 1_Pooling/ and 2_Normalize/, sentence_bert_config.json: mean pooling, then L2 normalisation."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {
        "word_embedding_dimension": HIDDEN,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    (stage / "1_Pooling").mkdir()
    (stage / "2_Normalize").mkdir()
    (stage / "2_Normalize" / ".keep").write_text("")
    for path, value in (
        (stage / "modules.json", modules),
        (stage / "1_Pooling" / "config.json", pooling),
        (stage / "sentence_bert_config.json", {"max_seq_length": MAX_POSITIONS, "do_lower_case": False}),
    ):
        path.write_text(json.dumps(value, indent=2) + "\n")


def build(out: Path, seed: int = 0) -> None:
    """Build tokenizer, config, weights and the sentence-transformers files into ``out``."""
    log("importing torch and transformers")
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    files = stdlib_files()
    log(f"training WordPiece (vocab {VOCAB_SIZE}) on {len(files)} stdlib files")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(files),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=MAX_POSITIONS,
    )
    if len(tokenizer) > VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, more than the model's {VOCAB_SIZE}")
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=INIT_STD,
        pad_token_id=tokenizer.pad_token_id,
        matryoshka_dimensions=MATRYOSHKA_DIMENSIONS,
        dtype="float32",
    )
    log(f"initialising BertModel with seed {seed}")
    torch.manual_seed(seed)
    model = BertModel(config, add_pooling_layer=False).to(torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        stage = Path(tmp)
        log(f"saving {n_params / 1e6:.2f}M parameters (float32 safetensors), tokenizer, sentence-transformers files")
        save_float32(model, tokenizer, stage, None)
        sentence_transformers_files(stage)
        publish(stage, out, REQUIRED_FILES)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    return builder_main(argv, __doc__, build, is_built, REQUIRED_FILES, log)


if __name__ == "__main__":
    sys.exit(main())
