"""The local model's vectors, and the OpenAI-compatible client against a real HTTP server."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from parley_embeddings import LocalEmbedder, OpenAICompatibleEmbedder
from parley_embeddings.remote import EmbeddingServerError


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_vectors_are_normalised_384_floats_and_deterministic(
    local_embedder: LocalEmbedder,
) -> None:
    [first] = await local_embedder.embed(["The cat sat on the mat."])
    [second] = await local_embedder.embed(["The cat sat on the mat."])
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


async def test_batches_give_the_same_vectors_as_one_by_one(local_embedder: LocalEmbedder) -> None:
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(40)]
    together = await local_embedder.embed(texts)
    alone = [(await local_embedder.embed([t]))[0] for t in texts[:5]]
    for a, b in zip(together[:5], alone, strict=True):
        assert cosine(a, b) > 0.9999


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
