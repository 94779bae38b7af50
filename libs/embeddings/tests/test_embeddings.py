"""The local model's vectors, batching and cache, and the OpenAI-compatible client (alone
and behind the cache) against a real HTTP server."""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from parley_embeddings import CachingEmbedder, LocalEmbedder, OpenAICompatibleEmbedder
from parley_embeddings.cache import EmbeddingCache
from parley_embeddings.local import (
    BATCH_TOKENS,
    MAX_BATCH,
    MAX_TOKENS,
    length_batches,
    tokenizer_path,
)
from parley_embeddings.onnx_graph import bert_encoder
from parley_embeddings.remote import EmbeddingServerError

# Lengths from one word to past the model's 256 tokens, as ingest and queries send them.
MIXED = [
    "leave",
    "How much annual vacation do staff receive?",
    "Employees get 25 days of paid leave every year; unused days carry over to March.",
    " ".join(["Expense reports need a receipt for every item above 25 euros."] * 6),
    " ".join(["Book a train for journeys shorter than 500 kilometres; fly beyond that."] * 40),
]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def uncached() -> LocalEmbedder:
    """The local model without its cache: every call runs the model."""
    return LocalEmbedder(threads=2, cache_entries=0)


async def test_vectors_are_normalised_384_floats_and_deterministic(
    uncached: LocalEmbedder,
) -> None:
    [first] = await uncached.embed(["The cat sat on the mat."])
    [second] = await uncached.embed(["The cat sat on the mat."])
    assert len(first) == 384
    assert math.isclose(math.sqrt(sum(x * x for x in first)), 1.0, rel_tol=1e-4)
    assert first == second


async def test_similar_sentences_score_higher_than_unrelated_ones(
    local_embedder: LocalEmbedder,
) -> None:
    leave, holiday, trains, code = await local_embedder.embed(
        [
            "Employees get 25 days of paid leave every year.",
            "How much annual vacation do staff receive?",
            "Book a train for journeys shorter than 500 kilometres.",
            "The function returns a sorted list of integers.",
        ]
    )
    assert cosine(leave, holiday) > 0.4
    assert cosine(leave, holiday) > cosine(leave, trains) + 0.2
    assert cosine(leave, holiday) > cosine(leave, code) + 0.2


async def test_batches_give_the_same_vectors_as_one_by_one(uncached: LocalEmbedder) -> None:
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(40)]
    together = await uncached.embed(texts)
    alone = [(await uncached.embed([t]))[0] for t in texts[:5]]
    for a, b in zip(together[:5], alone, strict=True):
        assert cosine(a, b) > 0.9999


async def test_texts_of_mixed_lengths_come_back_in_order_whatever_the_batches(
    uncached: LocalEmbedder,
) -> None:
    # Shuffled so that sorting by length reorders them; a small token budget splits them
    # into several batches, each padded to its own longest text.
    texts = [MIXED[i] for i in (3, 0, 4, 2, 1)]
    uncached.batch_tokens, uncached.max_batch = 300, 2
    try:
        together = await uncached.embed(texts)
    finally:
        uncached.batch_tokens, uncached.max_batch = BATCH_TOKENS, MAX_BATCH
    alone = [(await uncached.embed([t]))[0] for t in texts]
    for a, b in zip(together, alone, strict=True):
        assert cosine(a, b) > 0.9999
    # Different texts, different vectors: the order was kept, not just the set.
    assert all(cosine(together[i], alone[j]) < 0.99 for i in range(5) for j in range(5) if i != j)


def test_batches_hold_similar_lengths_within_the_token_budget() -> None:
    lengths = [256, 3, 40, 256, 12, 256, 5, 300]
    batches = list(length_batches(lengths, batch_tokens=512, max_batch=3))
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert batches == [[1, 6, 4], [2, 0], [3, 5], [7]]  # the 300-token text alone
    for batch in batches[:-1]:
        assert len(batch) * max(lengths[i] for i in batch) <= 512


async def test_texts_past_the_model_length_are_truncated(uncached: LocalEmbedder) -> None:
    long = " ".join(["Book a train for journeys shorter than 500 kilometres."] * 60)
    tokenizer = Tokenizer.from_file(str(tokenizer_path()))
    tokenizer.no_truncation()  # the shipped tokenizer.json cuts at 128
    assert len(tokenizer.encode(long).ids) > MAX_TOKENS
    [full, cut] = await uncached.embed([long, long + " Zebras and volcanoes."])
    assert cosine(full, cut) > 0.99999


async def test_identical_texts_are_embedded_once(local_embedder: LocalEmbedder) -> None:
    chunk, other = f"A chunk seen twice {uuid.uuid4()}", f"Another chunk {uuid.uuid4()}"
    misses, hits = local_embedder.cache.misses, local_embedder.cache.hits
    first = await local_embedder.embed([chunk, other, chunk])
    assert local_embedder.cache.misses - misses == 2  # the repeat within a call counts once
    assert first[0] == first[2]
    again = await local_embedder.embed([other, chunk])
    assert local_embedder.cache.hits - hits == 2
    assert again == [first[1], first[0]]


def test_the_cache_drops_the_least_recently_used_first() -> None:
    cache = EmbeddingCache(entries=2)
    a, b, c = (np.full(4, n, dtype=np.float32) for n in (1, 2, 3))
    cache.put(b"a", a)
    cache.put(b"b", b)
    assert cache.get(b"a") is a  # now "b" is the least recently used
    cache.put(b"c", c)
    assert len(cache) == 2
    assert cache.get(b"b") is None
    assert cache.get(b"a") is a
    assert cache.get(b"c") is c


def test_a_graph_needs_encoder_layers() -> None:
    embeddings = {
        "embeddings.word_embeddings.weight": np.zeros((10, 4), dtype=np.float32),
        "embeddings.position_embeddings.weight": np.zeros((8, 4), dtype=np.float32),
        "embeddings.token_type_embeddings.weight": np.zeros((2, 4), dtype=np.float32),
        "embeddings.LayerNorm.weight": np.ones(4, dtype=np.float32),
        "embeddings.LayerNorm.bias": np.zeros(4, dtype=np.float32),
    }
    with pytest.raises(ValueError, match="no encoder layers"):
        bert_encoder(embeddings, heads=2, layer_norm_eps=1e-12)


class _Embeddings(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []  # noqa: RUF012
    status = 200

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append({"body": body, "auth": self.headers.get("Authorization")})
        if type(self).status != 200:
            self.send_response(type(self).status)
            self.end_headers()
            return
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text)), 1.0, 0.0]}
            for i, text in reversed(list(enumerate(body["input"])))
        ]
        payload = json.dumps({"object": "list", "data": data, "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Embeddings.received = []
    _Embeddings.status = 200
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Embeddings)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


async def test_remote_embedder_batches_and_keeps_input_order(server: str) -> None:
    embedder = OpenAICompatibleEmbedder(server, "emb-1", 3, api_key="k", batch_size=2)
    vectors = await embedder.embed(["a", "bbb", "cc"])
    await embedder.close()
    assert [v[0] for v in vectors] == [1.0, 3.0, 2.0]
    assert [r["body"]["input"] for r in _Embeddings.received] == [["a", "bbb"], ["cc"]]
    assert _Embeddings.received[0]["auth"] == "Bearer k"


async def test_the_cache_in_front_of_a_server_sends_only_new_texts(server: str) -> None:
    embedder = CachingEmbedder(OpenAICompatibleEmbedder(server, "emb-1", 3), entries=100)
    first = await embedder.embed(["a", "bbb", "a"])
    second = await embedder.embed(["bbb", "cc", "a"])
    await embedder.inner.close()  # type: ignore[attr-defined]
    assert [r["body"]["input"] for r in _Embeddings.received] == [["a", "bbb"], ["cc"]]
    assert [v[0] for v in first] == [1.0, 3.0, 1.0]
    assert [v[0] for v in second] == [3.0, 2.0, 1.0]
    assert (embedder.model, embedder.dimensions) == ("emb-1", 3)


async def test_remote_embedder_reports_a_failing_server(server: str) -> None:
    _Embeddings.status = 503
    embedder = OpenAICompatibleEmbedder(server, "emb-1", 3)
    with pytest.raises(EmbeddingServerError, match="HTTP 503"):
        await embedder.embed(["a"])
    await embedder.close()


async def test_remote_embedder_rejects_wrong_dimensions(server: str) -> None:
    embedder = OpenAICompatibleEmbedder(server, "emb-1", 8)
    with pytest.raises(EmbeddingServerError, match="of 8 dimensions"):
        await embedder.embed(["a"])
    await embedder.close()
