"""/v1/embeddings against the real stack with the openai SDK: the tiny model plus the tiny BERT embedding model
(model_repository/vllm_embedding), in a stack of this module's own (the shared one stays without embeddings)."""

from __future__ import annotations

import base64
import subprocess
import sys
import time

import numpy as np
import openai
import pytest

from tests.conftest import ENGINE_ARGS, REPO, TINY_MODEL, ensure_models, running_stack

EMBED_MODEL = REPO / ".models" / "tiny-embed"
EMBED_NAME = "tiny-embed"
EMBED_ENGINE_ARGS = {"dtype": "float32", "enforce_eager": True, "max_model_len": 512}
TEXTS = ["hello world", "def main():\n    return 0", "The quick brown fox jumps over the lazy dog"]


def ensure_embedding_model() -> None:
    if not (EMBED_MODEL / "modules.json").exists():
        subprocess.run(
            [sys.executable, "-m", "tools.build_tiny_embedding_model", "--out", str(EMBED_MODEL)], cwd=REPO, check=True
        )


@pytest.fixture(scope="module")
def embed_stack(tmp_path_factory):
    ensure_models()
    ensure_embedding_model()
    args = {key: ENGINE_ARGS[key] for key in ("enforce_eager", "dtype", "max_model_len", "max_num_seqs")}
    started = time.monotonic()
    with running_stack(
        tmp_path_factory,
        str(TINY_MODEL),
        args,
        embedding_model=str(EMBED_MODEL),
        embedding_engine_args=EMBED_ENGINE_ARGS,
    ) as running:
        print(f"\nstack with the embedding model ready in {time.monotonic() - started:.1f} s")
        yield running


@pytest.fixture(scope="module")
def client(embed_stack):
    return openai.OpenAI(base_url=f"{embed_stack.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def embed_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(EMBED_MODEL))


def vector(item) -> np.ndarray:
    return np.asarray(item.embedding, dtype=np.float64)


def test_string_input_and_usage(client, embed_tokenizer):
    result = client.embeddings.create(model=EMBED_NAME, input=TEXTS[0])
    assert result.object == "list" and result.model == EMBED_NAME
    assert len(result.data) == 1 and result.data[0].index == 0 and result.data[0].object == "embedding"
    assert len(result.data[0].embedding) == 128
    assert np.linalg.norm(vector(result.data[0])) == pytest.approx(1.0, abs=1e-5)  # the Normalize module
    expected = len(embed_tokenizer(TEXTS[0])["input_ids"])
    assert result.usage.prompt_tokens == expected and result.usage.total_tokens == expected


def test_list_input_in_order(client, embed_tokenizer):
    result = client.embeddings.create(model=EMBED_NAME, input=TEXTS)
    assert [d.index for d in result.data] == [0, 1, 2]
    singles = [client.embeddings.create(model=EMBED_NAME, input=t).data[0] for t in TEXTS]
    for batched, single in zip(result.data, singles, strict=True):
        assert np.abs(vector(batched) - vector(single)).max() < 1e-5
    assert result.usage.prompt_tokens == sum(len(embed_tokenizer(t)["input_ids"]) for t in TEXTS)
    # different texts give clearly different vectors (so the numbers test below means something)
    assert float(vector(result.data[0]) @ vector(result.data[2])) < 0.95


def test_token_id_inputs(client, embed_tokenizer):
    ids = [embed_tokenizer(t)["input_ids"] for t in TEXTS[:2]]
    by_ids = client.embeddings.create(model=EMBED_NAME, input=ids)
    by_text = client.embeddings.create(model=EMBED_NAME, input=TEXTS[:2])
    for a, b in zip(by_ids.data, by_text.data, strict=True):
        assert np.abs(vector(a) - vector(b)).max() < 1e-5
    one = client.embeddings.create(model=EMBED_NAME, input=ids[0])
    assert len(one.data) == 1 and one.usage.prompt_tokens == len(ids[0])


def test_base64_decodes_to_the_float_vector(client, embed_stack):
    import httpx

    as_float = client.embeddings.create(model=EMBED_NAME, input=TEXTS[1], encoding_format="float")
    raw = httpx.post(
        f"{embed_stack.base_url}/v1/embeddings",
        json={"model": EMBED_NAME, "input": TEXTS[1], "encoding_format": "base64"},
        timeout=60,
    ).json()
    assert isinstance(raw["data"][0]["embedding"], str)
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert decoded.tolist() == np.asarray(as_float.data[0].embedding, dtype=np.float32).tolist()
    # the SDK itself asks for base64 by default when encoding_format is not given, and decodes it
    sdk = client.embeddings.create(model=EMBED_NAME, input=TEXTS[1])
    assert np.asarray(sdk.data[0].embedding, dtype=np.float32).tolist() == decoded.tolist()


def test_dimensions(client):
    full = vector(client.embeddings.create(model=EMBED_NAME, input=TEXTS[2]).data[0])
    short = client.embeddings.create(model=EMBED_NAME, input=TEXTS[2], dimensions=32)
    cut = vector(short.data[0])
    assert len(cut) == 32
    assert np.linalg.norm(cut) == pytest.approx(1.0, abs=1e-5)
    # matryoshka: the first 32 components, normalised again
    assert np.abs(cut - full[:32] / np.linalg.norm(full[:32])).max() < 1e-5
    for bad in (50, 256):
        with pytest.raises(openai.BadRequestError) as info:
            client.embeddings.create(model=EMBED_NAME, input=TEXTS[2], dimensions=bad)
        assert info.value.body["param"] == "dimensions"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"input": []}, "input"), ({"input": [""]}, "input"), ({"input": [[1], []]}, "input")],
)
def test_bad_input_is_400_naming_the_field(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=EMBED_NAME, **kwargs)
    assert info.value.body["param"] == param


def test_unknown_model_is_404_and_models_lists_it(client):
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    ids = [m.id for m in client.models.list().data]
    assert EMBED_NAME in ids and "tiny" in ids
    assert client.models.retrieve(EMBED_NAME).id == EMBED_NAME


def test_vectors_equal_transformers_mean_pooling(client, embed_tokenizer):
    """Our vectors vs transformers fp32: BertModel, mean over the attention mask (1_Pooling), L2 (2_Normalize)."""
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(str(EMBED_MODEL), add_pooling_layer=False, dtype=torch.float32).eval()
    ours = client.embeddings.create(model=EMBED_NAME, input=TEXTS, encoding_format="float")
    batch = embed_tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1)
    reference = torch.nn.functional.normalize(mean, dim=-1).numpy().astype(np.float64)
    worst = 0.0
    for item, ref in zip(ours.data, reference, strict=True):
        got = vector(item)
        cosine = float(got @ ref / (np.linalg.norm(got) * np.linalg.norm(ref)))
        assert cosine > 0.99999
        worst = max(worst, float(np.abs(got - ref).max()))
    print(f"\nmax abs difference to transformers fp32: {worst:.2e}")
    assert worst < 1e-5
