"""Vectors already computed, by the hash of their text: identical chunks are embedded once.

A bounded least-recently-used map in the process (a 384-float vector is 1.5 KiB, so 10,000
entries hold about 17 MiB). ``CachingEmbedder`` puts it in front of any embedder; the local
one has it built in.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from parley_embeddings.base import Embedder

Vector = npt.NDArray[np.float32]


@dataclass(slots=True)
class Lookup:
    """The content keys of some texts (in order), the vectors found, the texts missing."""

    keys: list[bytes]
    found: dict[bytes, Vector]
    missing: dict[bytes, str]


def content_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class EmbeddingCache:
    """At most ``entries`` vectors by content hash, the least recently used dropped first.
    Safe to share between threads; ``entries`` 0 keeps nothing."""

    def __init__(self, entries: int) -> None:
        if entries < 0:
            raise ValueError("entries must be 0 or more")
        self.entries = entries
        self.hits = 0
        self.misses = 0
        self._vectors: OrderedDict[bytes, Vector] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, key: bytes) -> Vector | None:
        with self._lock:
            vector = self._vectors.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._vectors.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, key: bytes, vector: Vector) -> None:
        if not self.entries:
            return
        with self._lock:
            self._vectors[key] = vector
            self._vectors.move_to_end(key)
            while len(self._vectors) > self.entries:
                self._vectors.popitem(last=False)

    def lookup(self, texts: Sequence[str]) -> Lookup:
        """Which of ``texts`` are cached; each distinct missing text is listed once."""
        lookup = Lookup([content_key(text) for text in texts], {}, {})
        for key, text in zip(lookup.keys, texts, strict=True):
            if key in lookup.found or key in lookup.missing:
                continue
            vector = self.get(key)
            if vector is None:
                lookup.missing[key] = text
            else:
                lookup.found[key] = vector
        return lookup

    def complete(self, lookup: Lookup, computed: Sequence[Vector]) -> list[Vector]:
        """Cache the vectors computed for ``lookup.missing`` (in its order) and return every
        text's vector in the order of the texts."""
        for key, vector in zip(lookup.missing, computed, strict=True):
            lookup.found[key] = vector
            self.put(key, vector)
        return [lookup.found[key] for key in lookup.keys]


class CachingEmbedder:
    """Any :class:`~parley_embeddings.base.Embedder` with an :class:`EmbeddingCache` in front."""

    def __init__(self, inner: Embedder, entries: int = 10_000) -> None:
        self.inner = inner
        self.model = inner.model
        self.dimensions = inner.dimensions
        self.cache = EmbeddingCache(entries)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        lookup = self.cache.lookup(texts)
        computed = await self.inner.embed(list(lookup.missing.values())) if lookup.missing else []
        vectors = self.cache.complete(lookup, [np.asarray(v, dtype=np.float32) for v in computed])
        return [vector.tolist() for vector in vectors]
