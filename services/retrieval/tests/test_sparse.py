"""Keyword vectors: words, stop words, stems, and BM25's saturated term frequency."""

from __future__ import annotations

import zlib

import pytest

from parley_retrieval.sparse import AVERAGE_LENGTH, K1, SparseEncoder, dimension

ENCODER = SparseEncoder()


def test_words_are_folded_stemmed_and_stop_words_dropped() -> None:
    assert ENCODER.stems("The Employees' VACATIONS, and café_opening!") == [
        "employe",
        "vacat",
        "cafe",
        "open",
    ]
    assert ENCODER.stems("what is it to them") == []


def test_a_stem_has_the_same_dimension_everywhere() -> None:
    assert dimension("vacat") == zlib.crc32(b"vacat")
    assert ENCODER.query("vacations").indices == (zlib.crc32(b"vacat"),)


def test_a_query_weighs_each_distinct_stem_once() -> None:
    query = ENCODER.query("leave, leaves and leaving")
    assert query.indices == (dimension("leav"),)
    assert query.values == (1.0,)
    assert not ENCODER.query("the of and")


def test_a_chunk_weighs_repeated_words_with_saturation_and_length() -> None:
    short = ENCODER.document("vacation vacation vacation policy")
    weights = dict(zip(short.indices, short.values, strict=True))
    assert list(short.indices) == sorted(short.indices)
    norm = K1 * (1 - 0.75 + 0.75 * 4 / AVERAGE_LENGTH)
    assert weights[dimension("vacat")] == pytest.approx(3 * (K1 + 1) / (3 + norm))
    assert weights[dimension("polici")] == pytest.approx(1 * (K1 + 1) / (1 + norm))
    # Three times the word is worth less than three times once: the frequency saturates.
    assert weights[dimension("vacat")] < 3 * weights[dimension("polici")]
    longer = ENCODER.document("vacation policy " + "filler words here " * 60)
    assert (
        dict(zip(longer.indices, longer.values, strict=True))[dimension("polici")]
        < weights[dimension("polici")]
    )


def test_an_unknown_language_fails_at_once() -> None:
    with pytest.raises(KeyError):
        SparseEncoder("klingon")
