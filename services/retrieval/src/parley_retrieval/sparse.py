"""Keyword relevance as sparse vectors: BM25's term-frequency half, computed here.

A text becomes words (Unicode letters and digits, lower-cased, accents folded), English stop
words are dropped, the rest are stemmed (Snowball, through PyStemmer) and each stem is hashed
to a 32-bit dimension. A chunk's weight for a stem is BM25's saturated term frequency,

    tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / AVERAGE_LENGTH))

and a query's is 1 for each distinct stem. The other half of BM25, the inverse document
frequency, is the engine's: the sparse vector is declared with Qdrant's IDF modifier, which
scores ``sum(query weight * idf * chunk weight)`` with document frequencies kept by the engine
and counted over the searched knowledge base (see the adapters). Nothing here depends on the
collection, so a chunk's vector never changes once stored.
"""

from __future__ import annotations

import re
import threading
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass

import Stemmer  # type: ignore[import-not-found]  # PyStemmer ships no types

K1 = 1.2
B = 0.75
# Stems per chunk after stop words, about what ingest's ~1,200-character chunks hold.
AVERAGE_LENGTH = 100.0
MAX_WORD_CHARS = 40
_WORD = re.compile(r"[^\W_]+")

# Function words that carry no topic (English; the model is English too).
STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves also may might must shall us let s t d ll m o re ve y
    """.split()
)


@dataclass(frozen=True, slots=True)
class SparseVector:
    """Dimensions (hashed stems, ascending) and their weights."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __bool__(self) -> bool:
        return bool(self.indices)


def _fold(text: str) -> str:
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def dimension(stem: str) -> int:
    """The stem's dimension: a stable 32-bit hash (the same in every process and release)."""
    return zlib.crc32(stem.encode())


class SparseEncoder:
    """Texts to sparse vectors (see the module docstring). Safe to share between threads:
    PyStemmer's stemmers are not, so each thread has its own."""

    def __init__(self, language: str = "english") -> None:
        self.language = language
        self._local = threading.local()
        self._stemmer()  # an unknown language fails now, not at the first chunk

    def _stemmer(self) -> Stemmer.Stemmer:
        stemmer: Stemmer.Stemmer | None = getattr(self._local, "stemmer", None)
        if stemmer is None:
            stemmer = self._local.stemmer = Stemmer.Stemmer(self.language)
        return stemmer

    def stems(self, text: str) -> list[str]:
        """The text's stems in order, stop words dropped."""
        words = [
            w
            for w in _WORD.findall(_fold(text))
            if w not in STOP_WORDS and len(w) <= MAX_WORD_CHARS
        ]
        stems: list[str] = self._stemmer().stemWords(words)
        return stems

    def document(self, text: str) -> SparseVector:
        """A chunk's vector: saturated, length-normalised term frequencies."""
        counts = Counter(dimension(s) for s in self.stems(text))
        length = sum(counts.values())
        norm = K1 * (1 - B + B * length / AVERAGE_LENGTH)
        ordered = sorted(counts.items())
        return SparseVector(
            tuple(i for i, _ in ordered),
            tuple(tf * (K1 + 1) / (tf + norm) for _, tf in ordered),
        )

    def documents(self, texts: list[str]) -> list[SparseVector]:
        return [self.document(t) for t in texts]

    def query(self, text: str) -> SparseVector:
        """A query's vector: 1 for each distinct stem (the engine applies the IDF)."""
        indices = tuple(sorted({dimension(s) for s in self.stems(text)}))
        return SparseVector(indices, (1.0,) * len(indices))
